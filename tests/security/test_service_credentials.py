"""Between services: the node service refuses a caller without the service token, and with
mutual TLS on, a caller without a certificate from the deployment's CA."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from heddle.v1 import node_pb2, node_pb2_grpc

from libs.common.grpcutil import TlsFiles, create_channel
from services.node.server import NodeService, serve
from services.node.settings import NodeServiceSettings

TOKEN = "service-token-for-tests"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Issued:
    cert: Path
    key: Path


class CertificateAuthority:
    """A throw-away CA that issues server/client certificates into a folder."""

    def __init__(self, folder: Path, name: str = "heddle test CA") -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / f"{name.replace(' ', '-')}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName(common_name)]),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(self.folder / f"{common_name}.crt", self.folder / f"{common_name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


def _tls(ca: CertificateAuthority, issued: Issued) -> TlsFiles:
    return TlsFiles(
        cert=issued.cert.read_bytes(),
        key=issued.key.read_bytes(),
        ca=ca.path.read_bytes(),
        server_name="localhost",
    )


@pytest.fixture
async def node_with_mtls(tmp_path: Path) -> AsyncIterator[tuple[NodeService, CertificateAuthority]]:
    ca = CertificateAuthority(tmp_path)
    server = ca.issue("node")
    settings = NodeServiceSettings(
        grpc_port=0,
        service_token=TOKEN,
        tls_cert=str(server.cert),
        tls_key=str(server.key),
        tls_ca=str(ca.path),
        tls_server_name="localhost",
    )
    service = await serve(settings)
    try:
        yield service, ca
    finally:
        await service.stop()


async def _list_node_types(channel: grpc.aio.Channel) -> node_pb2.ListNodeTypesResponse:
    async with channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        return await stub.ListNodeTypes(node_pb2.ListNodeTypesRequest(), timeout=5)


async def test_node_service_refuses_callers_without_credentials(
    node_with_mtls: tuple[NodeService, CertificateAuthority], tmp_path: Path
) -> None:
    service, ca = node_with_mtls
    address = f"127.0.0.1:{service.port}"
    client = _tls(ca, ca.issue("workflow"))

    # Certificate and token: served.
    reply = await _list_node_types(create_channel(address, service_token=TOKEN, tls=client))
    assert b"template" in reply.node_types_json

    # A plaintext caller never gets past the TLS handshake.
    with pytest.raises(grpc.aio.AioRpcError) as plaintext:
        await _list_node_types(grpc.aio.insecure_channel(address))
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE

    # TLS without a client certificate: refused in the handshake too.
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca.path.read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await _list_node_types(
            grpc.aio.secure_channel(
                address, no_cert, options=[("grpc.ssl_target_name_override", "localhost")]
            )
        )
    assert anonymous.value.code() == grpc.StatusCode.UNAVAILABLE

    # A certificate from another CA: refused.
    stranger_ca = CertificateAuthority(tmp_path / "..", name="someone else")
    stranger = _tls(stranger_ca, stranger_ca.issue("intruder"))
    stranger = TlsFiles(stranger.cert, stranger.key, ca.path.read_bytes(), "localhost")
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await _list_node_types(create_channel(address, service_token=TOKEN, tls=stranger))
    assert foreign.value.code() == grpc.StatusCode.UNAVAILABLE

    # Our certificate but no (or a wrong) service token: UNAUTHENTICATED.
    for token in ("", "wrong"):
        with pytest.raises(grpc.aio.AioRpcError) as tokenless:
            await _list_node_types(create_channel(address, service_token=token, tls=client))
        assert tokenless.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_token_alone_is_enforced_without_tls() -> None:
    service = await serve(NodeServiceSettings(grpc_port=0, service_token=TOKEN))
    try:
        address = f"127.0.0.1:{service.port}"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _list_node_types(create_channel(address))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await _list_node_types(create_channel(address, service_token=TOKEN))
        assert reply.node_types_json
    finally:
        await service.stop()
