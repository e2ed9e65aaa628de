"""roomcast: a real-time messaging server with rooms, history, recovery and presence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]

if TYPE_CHECKING:
    from roomcast.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from roomcast.client import Client

        return Client
    raise AttributeError(name)
