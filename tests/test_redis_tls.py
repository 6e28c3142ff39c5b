"""The push pod over TLS (`rediss://`): a real redis-server that listens on a TLS port only.

A CA and a server certificate (for 127.0.0.1) are made with `cryptography` per test; the pod and
the publishing client trust the CA through `?ssl_ca_certs=`.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ordertrack import redis_connect, redis_layout
from ordertrack.devtools.processes import stop_process
from ordertrack.devtools.redis_server import redis_server_argv
from ordertrack.push import pubsub_reader
from ordertrack.push.hub import Watch
from tests.support import free_port, wait_for
from tests.support.pods import connect, publish, recv_event, start_pod_async
from tests.test_pubsub_reader import IMPLS, Calls, until


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_certificates(directory: Path) -> SimpleNamespace:
    """ca.pem, and server.pem + server.key for 127.0.0.1 and localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ordertrack test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName(
                  [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                  critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    out = SimpleNamespace(ca=directory / "ca.pem", cert=directory / "server.pem",
                          key=directory / "server.key")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(out.key, server_key)
    return out


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server with no plain port, TLS on `port`; `url` is the rediss:// URL trusting it."""
    certs = make_certificates(tmp_path / "certs")
    port = free_port()
    argv = redis_server_argv(0, tmp_path) + [
        "--tls-port", str(port), "--tls-cert-file", str(certs.cert),
        "--tls-key-file", str(certs.key), "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs.ca}"

    def ping():
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            return client.ping()
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    try:
        wait_for(ping, 10, what=f"redis-server with TLS on {port}")
        yield SimpleNamespace(port=port, url=url, certs=certs, tmp=tmp_path)
    finally:
        stop_process(proc, timeout=5)


@pytest.mark.parametrize("name", IMPLS)
def test_the_reader_subscribes_over_tls_and_gets_a_large_message_whole(name, tls_redis):
    """uvloop's TLS transport feeds the BufferedProtocol reader: a payload of many TLS records
    arrives whole, after the subscription went live."""
    target = redis_connect.parse_redis_url(tls_redis.url)
    payload = b'{"seq": 1, "pad": "' + b"x" * 100_000 + b'"}'

    async def main():
        calls = Calls()
        address = await redis_connect.subscription_address(target)
        reader = await pubsub_reader.connect(address, {"ord_tls": Watch()}, impl=pubsub_reader.IMPLEMENTATIONS[name],
                                             **calls.kwargs())
        await until(lambda: calls.of("live"))
        client = aioredis.Redis.from_url(tls_redis.url)
        await client.publish(redis_layout.channel("ord_tls"), payload)
        await until(lambda: calls.of("update"))
        await client.aclose()
        assert calls.log == [("live",), ("update", "ord_tls", payload)]
        reader.transport.close()
        assert await asyncio.wait_for(reader.closed, 5) is None

    uvloop.run(main())


@pytest.mark.parametrize("name", IMPLS)
def test_the_reader_refuses_a_server_whose_certificate_it_does_not_trust(name, tls_redis):
    other_ca = make_certificates(tls_redis.tmp / "other").ca
    target = redis_connect.parse_redis_url(
        f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={other_ca}")

    async def main():
        address = await redis_connect.subscription_address(target)
        with pytest.raises(ssl.SSLCertVerificationError):
            await pubsub_reader.connect(address, {}, impl=pubsub_reader.IMPLEMENTATIONS[name],
                                        **Calls().kwargs())

    uvloop.run(main())


async def test_a_pod_on_rediss_is_ready_and_pushes_a_published_update(procs, tmp_path, keys,
                                                                     tls_redis):
    pod = await start_pod_async(procs, tmp_path, tls_redis.url, keys)  # waits for /readyz 200
    async with httpx.AsyncClient() as http:
        assert (await http.get(pod.base + "/readyz", timeout=2)).status_code == 200
    client = aioredis.Redis.from_url(tls_redis.url)
    try:
        async with await connect(pod, keys.token("user_tls", "ord_tls"), "ord_tls") as ws:
            await recv_event(ws, "connection_ack")
            await publish(client, "ord_tls", 1, status="out_for_delivery")
            update = await recv_event(ws, "tracking_update")
    finally:
        await client.aclose()
    assert (update["data"]["seq"], update["data"]["status"]) == (1, "out_for_delivery")
