"""HTTP routes: the WebSocket endpoint, the publish API, health checks and pages."""

from roomcast.http.app import create_app

__all__ = ["create_app"]
