from roomcast.cli import main

main()
