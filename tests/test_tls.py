"""--tls-cert/--tls-key: https:// and wss:// on one port of a real server, with a
certificate made by the test (a CA of its own and a leaf for 127.0.0.1 and localhost)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import websockets
from conftest import ServerFactory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from oneway_client import OneWay

from roomcast.client import Client, ConnectError
from roomcast.config import Settings
from roomcast.server import tls_context
from roomcast.testing import ServerProcess, free_port


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate the clients trust
    cert: Path  # the server's certificate chain
    key: Path  # its private key

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate it signed, valid for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("roomcast test CA"))
        .issuer_name(_name("roomcast test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_server(server_factory: ServerFactory, pki: Pki) -> ServerProcess:
    return server_factory(
        "--history", "memory", "--api-key", "test-key",
        "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
    )  # fmt: skip


async def test_wss_join_publish_receive(tls_server: ServerProcess, pki: Pki) -> None:
    assert tls_server.ws_url == f"wss://127.0.0.1:{tls_server.port}/ws"
    async with websockets.connect(tls_server.ws_url, ssl=pki.client_context()) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
        await ws.send(json.dumps({"type": "join", "room": "r", "id": 1}))
        joined = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (joined["type"], joined["id"], joined["offset"]) == ("ok", 1, 0)
        await ws.send(json.dumps({"type": "publish", "room": "r", "data": {"n": 1}, "id": 2}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        by_type = {frame["type"]: frame for frame in frames}
        assert by_type["ok"]["offset"] == 1
        assert (by_type["message"]["room"], by_type["message"]["data"]) == ("r", {"n": 1})
    served = f"roomcast serving on https://127.0.0.1:{tls_server.port} (/ws over wss,"
    assert served in tls_server.log()


async def test_https_health_and_an_sse_stream(tls_server: ServerProcess, pki: Pki) -> None:
    assert tls_server.http_url == f"https://127.0.0.1:{tls_server.port}"
    connector = aiohttp.TCPConnector(ssl=pki.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(tls_server.http_url + "/health") as reply:
            assert reply.status == 200
        oneway = OneWay(http, tls_server.http_url)
        stream = await oneway.sse(rooms="r")
        assert stream.response.status == 200
        assert (await stream.next()).event == "welcome"
        assert (await stream.next()).event == "ok"
        assert await oneway.publish("r", {"n": 1}) == 1
        message = await stream.next()
        assert (message.event, message.data["data"]) == ("message", {"n": 1})
        oneway.close()


async def test_the_python_client_over_wss(tls_server: ServerProcess, pki: Pki) -> None:
    async with Client(tls_server.ws_url, name="alice", ssl=pki.client_context()) as client:
        await client.join("r")
        assert await client.publish("r", {"text": "hi"}) == 1
        messages = client.messages()
        message = await asyncio.wait_for(anext(messages), 5)
        assert (message["offset"], message["data"]) == (1, {"text": "hi"})


async def test_plain_http_on_the_tls_port_gets_no_http_answer(
    tls_server: ServerProcess, pki: Pki
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)  # up to the server's close
    writer.close()
    assert answer == b""  # the TLS handshake fails: the server closes, says nothing
    connector = aiohttp.TCPConnector(ssl=pki.client_context())
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(tls_server.http_url + "/health") as reply,
    ):
        assert reply.status == 200  # the server keeps serving


async def test_a_tls_handshake_that_never_comes_is_cut_at_the_handshake_timeout(
    server_factory: ServerFactory, pki: Pki
) -> None:
    server = server_factory("--history", "memory", "--handshake-timeout", "1",
                            "--tls-cert", str(pki.cert), "--tls-key", str(pki.key))  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = asyncio.get_running_loop().time()
    answer = await asyncio.wait_for(reader.read(), 10)  # asyncio's own default would be 60 s
    elapsed = asyncio.get_running_loop().time() - started
    writer.close()
    assert answer == b""
    assert 0.9 <= elapsed < 5


async def test_an_untrusted_certificate_is_refused(tls_server: ServerProcess, pki: Pki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(tls_server.ws_url, open_timeout=5)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(tls_server.http_url + "/health")
    with pytest.raises(ConnectError, match="certificate verify failed"):
        await Client(tls_server.ws_url, reconnect=False, timeout=5).connect()
    other = make_pki(tls_server.data_dir)  # a CA that did not sign the server's certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(tls_server.ws_url, ssl=other.client_context(), open_timeout=5)


def encrypted_key(pki: Pki, directory: Path) -> Path:
    key = serialization.load_pem_private_key(pki.key.read_bytes(), None)
    path = directory / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("garbage certificate", "PEM lib"),
        ("key of another certificate", "KEY_VALUES_MISMATCH"),
        ("encrypted key", "the private key is encrypted; give one without a passphrase"),
    ],
)
def test_a_certificate_that_does_not_load_stops_the_server(
    tmp_path: Path, pki: Pki, case: str, reason: str
) -> None:
    cert, key = pki.cert, pki.key
    if case == "garbage certificate":
        cert = tmp_path / "bad.pem"
        cert.write_text("not a certificate\n")
    elif case == "key of another certificate":
        cert = pki.ca
    else:
        key = encrypted_key(pki, tmp_path)
    command = [
        sys.executable, "-m", "roomcast", "serve", "--history", "memory",
        "--port", str(free_port()), "--tls-cert", str(cert), "--tls-key", str(key),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 1
    assert "cannot load --tls-cert/--tls-key: " in done.stderr
    assert reason in done.stderr


def test_tls_context_is_tls12_or_later_and_none_without_a_certificate(pki: Pki) -> None:
    assert tls_context(Settings()) is None
    context = tls_context(Settings(tls_cert=pki.cert, tls_key=pki.key))
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE  # clients are not asked for certificates
    assert all(c["kea"] in {"kx-any", "kx-ecdhe", "kx-dhe"} for c in context.get_ciphers())
