"""HTTP routes: the application (``roomcast.http.app``), the publish API, health checks,
pages and JSON errors. Nothing is imported here, so that transports can use
``roomcast.http.errors`` without importing the application that imports them."""
