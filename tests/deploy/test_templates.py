"""The templates in deploy/: their placeholders, rendered as docs/deploy.md says (with
envsubst), and accepted by nginx -t and haproxy -c with the production values."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from roomcast.testing import free_port
from roomcast.testing_proxy import (
    DEPLOY,
    PLACEHOLDER,
    HaproxyProcess,
    NginxProcess,
    ProxyProcess,
    render,
)

TEMPLATES = [
    DEPLOY / "nginx" / "roomcast.conf",
    DEPLOY / "haproxy" / "roomcast-http.cfg",
    DEPLOY / "haproxy" / "roomcast-tcp.cfg",
]
PRODUCTION = {
    "LISTEN": "127.0.0.1:8080",
    "NODE1": "10.0.0.1:8000",
    "NODE2": "10.0.0.2:8000",
    "IDLE_TIMEOUT": "60s",
}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_each_template_has_the_four_documented_placeholders(template: Path) -> None:
    text = template.read_text()
    assert set(PLACEHOLDER.findall(text)) == set(PRODUCTION)
    rendered = render(text, PRODUCTION)
    assert PLACEHOLDER.search(rendered) is None
    assert "10.0.0.1:8000" in rendered
    assert "10.0.0.2:8000" in rendered


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_envsubst_renders_as_the_tests_do(template: Path) -> None:
    """The command of docs/deploy.md leaves nginx's own variables ($host, ...) alone."""
    envsubst = shutil.which("envsubst")
    if envsubst is None:
        pytest.skip("needs envsubst (Debian package gettext-base)")
    names = " ".join(f"${name}" for name in PRODUCTION)
    done = subprocess.run(
        [envsubst, names],
        input=template.read_text(),
        capture_output=True,
        text=True,
        env={**os.environ, **PRODUCTION},
        check=True,
    )
    assert done.stdout == render(template.read_text(), PRODUCTION)


def test_a_placeholder_without_a_value_is_an_error() -> None:
    with pytest.raises(KeyError, match="NODE2"):
        render("server ${NODE1}; server ${NODE2}; $host", {"NODE1": "a:1"})
    assert render("${NODE1} $host ${http_upgrade}", {"NODE1": "a:1"}) == "a:1 $host ${http_upgrade}"


@pytest.mark.parametrize("kind", ["nginx", "haproxy-http", "haproxy-tcp"])
def test_the_proxies_accept_the_production_rendering(kind: str, tmp_path: Path) -> None:
    nodes = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    proxy: ProxyProcess
    if kind == "nginx":
        proxy = NginxProcess(tmp_path, nodes, idle_timeout="60s")
    else:
        proxy = HaproxyProcess(tmp_path, nodes, mode=kind.removeprefix("haproxy-"))
    if not proxy.available():
        pytest.skip(f"needs {proxy.binary_name}")
    output = proxy.check()  # raises if rejected
    assert "warn" not in output.lower(), output
