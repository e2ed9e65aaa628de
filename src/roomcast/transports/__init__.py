"""Transports carry frames between a session and its client (WebSocket now)."""
