"""Tests of the client library and the connect/publish commands, against real servers."""
