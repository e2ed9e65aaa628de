"""The OpenAPI document of the HTTP API, and schemathesis run against a real server with it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from roomcast.config import Settings
from roomcast.http.app import create_app
from roomcast.node import Node
from roomcast.testing import ServerProcess

KEY = "openapi-test-key"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Every operation but the document itself, which schemathesis does not test.
TESTED = {
    "POST /api/publish", "GET /api/rooms/{room}/history", "GET /api/rooms/{room}/presence",
    "GET /health", "GET /ready", "Stateful tests",
}  # fmt: skip


@pytest.fixture(scope="module")
def api_server() -> Iterator[ServerProcess]:
    """One server for the module, on the default SQLite history (so that the bounds of
    the store are reached too)."""
    with ServerProcess(["--api-key", KEY]) as server:
        yield server


def fetch(url: str) -> tuple[int, str, Any]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.status, answer.headers["Content-Type"], json.loads(answer.read())


def refs(value: Any) -> Iterator[str]:
    """Every ``$ref`` in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def resolve(document: dict[str, Any], pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    value: Any = document
    for part in pointer[2:].split("/"):
        value = value[part]
    return value


def api_routes() -> set[str]:
    """``METHOD /path`` of every route of the application under /api."""
    app = create_app(Node(Settings(history="memory")))
    return {
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }


def test_the_document_is_valid_openapi_and_needs_no_key(api_server: ServerProcess) -> None:
    status, content_type, document = fetch(api_server.http_url + "/api/openapi.json")
    assert (status, content_type) == (200, "application/json")
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    for pointer in refs(document):
        assert isinstance(resolve(document, pointer), dict), pointer
    (scheme,) = document["components"]["securitySchemes"].values()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"apiKey": []}]


def test_the_document_lists_exactly_the_api_routes(api_server: ServerProcess) -> None:
    _, _, document = fetch(api_server.http_url + "/api/openapi.json")
    documented = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert {route for route in documented if route.split()[1].startswith("/api/")} == api_routes()
    assert documented == api_routes() | {"GET /health", "GET /ready"}
    public = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == []
    }
    assert public == {"GET /api/openapi.json", "GET /health", "GET /ready"}


def test_every_api_error_is_documented_with_the_error_shape(api_server: ServerProcess) -> None:
    _, _, document = fetch(api_server.http_url + "/api/openapi.json")
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["type", "code", "message"]
    for path in ("/api/publish", "/api/rooms/{room}/history", "/api/rooms/{room}/presence"):
        (operation,) = document["paths"][path].values()
        statuses = set(operation["responses"])
        assert {"200", "400", "401", "403", "503"} <= statuses, path
        for status in statuses - {"200"}:
            response = resolve(document, operation["responses"][status]["$ref"])
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    unauthorized = document["components"]["responses"]["Unauthorized"]
    assert set(unauthorized["headers"]) == {"WWW-Authenticate"}


def test_schemathesis_finds_nothing(api_server: ServerProcess, tmp_path: Path) -> None:
    """Every check schemathesis has, positive and negative data, and the stateful links."""
    junit = tmp_path / "junit.xml"
    command = [
        str(SCHEMATHESIS), "run", api_server.http_url + "/api/openapi.json",
        "--header", f"Authorization: Bearer {KEY}", "--checks", "all",
        "--max-examples", "40", "--workers", "1", "--request-timeout", "5",
        "--generation-database", "none", "--no-color",
        "--report", "junit", "--report-junit-path", str(junit),
    ]  # fmt: skip
    run = subprocess.run(
        command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=100
    )
    assert run.returncode == 0, run.stdout + run.stderr + api_server.log()
    suite = ET.parse(junit).getroot()
    assert {case.attrib["name"] for case in suite.iter("testcase")} == TESTED
    assert suite.attrib["failures"] == suite.attrib["errors"] == "0"
    assert " ERROR roomcast" not in api_server.log()


@pytest.mark.parametrize(
    "raw", [b'{"room":"utf8","data":"\xc3"}', b'{"room":"utf8\xff","data":1}', b"\xfe\xff"]
)
def test_a_body_that_is_not_utf8_is_a_bad_request(api_server: ServerProcess, raw: bytes) -> None:
    """Stored, such data would break every WebSocket member's text frames (close 1007)."""
    request = urllib.request.Request(
        api_server.http_url + "/api/publish", data=raw, method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["code"] == "bad_request"
    history = urllib.request.Request(
        api_server.http_url + "/api/rooms/utf8/history",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(history, timeout=5) as answer:
        assert (json.loads(answer.read())["offset"]) == 0
