"""``roomcast bench``: fan-out and idle-connection benchmarks against roomcast and a
Node.js ``ws`` baseline (benchmarks/node_ws_server.js), or a cluster of roomcast nodes
sharing Redis (:mod:`roomcast.bench.cluster`) against one node, measured in the same run.

The load generator is a set of worker processes (:mod:`roomcast.bench.worker`), each
holding a share of the subscriber connections on a lean asyncio client
(:mod:`roomcast.bench.wsclient`), and a publisher in the parent process
(:mod:`roomcast.bench.publisher`). See docs/performance.md.
"""
