"""Tests for gateway.certs: the development PKI and SPIFFE helpers."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import queue
import socket
import ssl
import stat
import string
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.certs import (
    Issued,
    create_ca,
    hash_api_key,
    issue_client_cert,
    issue_server_cert,
    parse_spiffe_id,
    spiffe_ids_from_der,
)

SPIFFE_ID = "spiffe://cluster.local/ns/support/sa/support-bot"


def load_cert(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def load_key(path: str):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture()
def pki(tmp_path):
    ca = create_ca(str(tmp_path / "ca"))
    server = issue_server_cert(ca, str(tmp_path / "server"), ["localhost", "127.0.0.1", "::1"])
    client = issue_client_cert(ca, str(tmp_path / "clients"), SPIFFE_ID)
    return ca, server, client


# ---------------------------------------------------------------------------
# CA
# ---------------------------------------------------------------------------


def test_create_ca_files_and_extensions(tmp_path):
    directory = tmp_path / "new" / "ca"
    ca = create_ca(str(directory), name="Test CA", days=10)

    assert ca == Issued(str(directory / "ca.crt"), str(directory / "ca.key"))
    assert mode(str(directory)) == 0o700
    assert mode(ca.key_path) == 0o600
    assert mode(ca.cert_path) == 0o644

    cert = load_cert(ca.cert_path)
    key = load_key(ca.key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == cert.public_key()

    assert cert.subject.rfc4514_string() == "CN=Test CA"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed

    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is True and bc.value.path_length == 0
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())

    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=10) <= lifetime <= datetime.timedelta(days=10, minutes=10)
    assert cert.not_valid_before_utc <= now() <= cert.not_valid_after_utc


def test_create_ca_in_existing_directory_keeps_its_mode(tmp_path):
    os.chmod(tmp_path, 0o755)
    create_ca(str(tmp_path))
    assert mode(str(tmp_path)) == 0o755


def test_create_ca_refuses_to_overwrite(tmp_path):
    ca = create_ca(str(tmp_path))
    before = Path(ca.cert_path).read_bytes()

    with pytest.raises(FileExistsError, match=str(tmp_path / "ca.crt")):
        create_ca(str(tmp_path))
    assert Path(ca.cert_path).read_bytes() == before

    again = create_ca(str(tmp_path), overwrite=True)
    assert again == ca
    assert Path(ca.cert_path).read_bytes() != before
    assert mode(ca.key_path) == 0o600
    assert load_key(ca.key_path).public_key() == load_cert(ca.cert_path).public_key()


def test_refuses_when_only_the_key_exists(tmp_path):
    (tmp_path / "ca.key").write_text("precious")
    with pytest.raises(FileExistsError, match="ca.key"):
        create_ca(str(tmp_path))
    assert (tmp_path / "ca.key").read_text() == "precious"
    assert not (tmp_path / "ca.crt").exists()


def test_overwrite_tightens_key_mode(tmp_path):
    (tmp_path / "ca.key").write_text("old")
    os.chmod(tmp_path / "ca.key", 0o644)
    ca = create_ca(str(tmp_path), overwrite=True)
    assert mode(ca.key_path) == 0o600
    assert mode(ca.cert_path) == 0o644


@pytest.mark.parametrize("days", [0, -1, 1.5, True])
def test_invalid_days(tmp_path, days):
    with pytest.raises(ValueError, match="days"):
        create_ca(str(tmp_path), days=days)


# ---------------------------------------------------------------------------
# Server certificate
# ---------------------------------------------------------------------------


def test_server_cert(pki, tmp_path):
    ca, server, _ = pki
    assert server == Issued(
        str(tmp_path / "server" / "server.crt"), str(tmp_path / "server" / "server.key")
    )
    assert mode(server.key_path) == 0o600
    assert mode(server.cert_path) == 0o644

    ca_cert = load_cert(ca.cert_path)
    cert = load_cert(server.cert_path)
    key = load_key(server.key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == cert.public_key()

    cert.verify_directly_issued_by(ca_cert)
    assert cert.issuer == ca_cert.subject
    assert cert.subject.rfc4514_string() == "CN=localhost"

    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == []
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert ext(cert, x509.KeyUsage).value.digital_signature
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca_cert, x509.SubjectKeyIdentifier).value.digest

    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=90) <= lifetime <= datetime.timedelta(days=90, minutes=10)
    assert spiffe_ids_from_der(cert.public_bytes(serialization.Encoding.DER)) == []


def test_server_cert_chain_verifies(pki):
    ca, server, client = pki
    store = Store([load_cert(ca.cert_path)])
    leaf = load_cert(server.cert_path)
    for name in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        verifier = PolicyBuilder().store(store).time(now()).build_server_verifier(name)
        chain = verifier.verify(leaf, [])
        assert chain[0] == leaf and chain[-1] == load_cert(ca.cert_path)

    wrong_host = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.com"))
    with pytest.raises(VerificationError):
        wrong_host.verify(leaf, [])

    # A client certificate is not valid as a server certificate (no SAN match, no EKU).
    localhost = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("localhost"))
    with pytest.raises(VerificationError):
        localhost.verify(load_cert(client.cert_path), [])


def test_server_cert_custom_basename_and_overwrite(pki, tmp_path):
    ca, _, _ = pki
    directory = str(tmp_path / "server")
    other = issue_server_cert(ca, directory, ["gateway.example.internal"], basename="gw", days=5)
    assert os.path.basename(other.cert_path) == "gw.crt"
    assert os.path.basename(other.key_path) == "gw.key"
    assert load_cert(other.cert_path).subject.rfc4514_string() == "CN=gateway.example.internal"

    with pytest.raises(FileExistsError, match="server.crt"):
        issue_server_cert(ca, directory, ["localhost"])
    replaced = issue_server_cert(ca, directory, ["other.local"], overwrite=True)
    san = ext(load_cert(replaced.cert_path), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["other.local"]
    assert load_key(replaced.key_path).public_key() == load_cert(replaced.cert_path).public_key()


def test_server_cert_long_first_host_truncates_cn_only(pki, tmp_path):
    ca, _, _ = pki
    host = ("a" * 60) + ".example.com"
    issued = issue_server_cert(ca, str(tmp_path / "long"), [host])
    cert = load_cert(issued.cert_path)
    assert len(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value) == 64
    assert ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [host]


@pytest.mark.parametrize("hosts", [[], [""]])
def test_server_cert_needs_hosts(pki, tmp_path, hosts):
    ca, _, _ = pki
    with pytest.raises(ValueError):
        issue_server_cert(ca, str(tmp_path / "x"), hosts)


def test_server_cert_rejects_bare_string_hosts(pki, tmp_path):
    ca, _, _ = pki
    with pytest.raises(TypeError):
        issue_server_cert(ca, str(tmp_path / "x"), "localhost")  # type: ignore[arg-type]


def test_leaf_cannot_outlive_ca(tmp_path):
    ca = create_ca(str(tmp_path), days=3)
    server = issue_server_cert(ca, str(tmp_path), ["localhost"], days=90)
    client = issue_client_cert(ca, str(tmp_path), SPIFFE_ID, days=30)
    ca_end = load_cert(ca.cert_path).not_valid_after_utc
    assert load_cert(server.cert_path).not_valid_after_utc <= ca_end
    assert load_cert(client.cert_path).not_valid_after_utc <= ca_end


def test_issuing_with_a_non_ca_or_mismatched_key_fails(pki, tmp_path):
    ca, server, _ = pki
    with pytest.raises(ValueError, match="not a CA"):
        issue_server_cert(server, str(tmp_path / "x"), ["localhost"])
    mismatched = Issued(cert_path=ca.cert_path, key_path=server.key_path)
    with pytest.raises(ValueError, match="does not belong"):
        issue_server_cert(mismatched, str(tmp_path / "x"), ["localhost"])


# ---------------------------------------------------------------------------
# Client certificate
# ---------------------------------------------------------------------------


def test_client_cert(pki, tmp_path):
    ca, _, client = pki
    assert client == Issued(
        str(tmp_path / "clients" / "client-support-support-bot.crt"),
        str(tmp_path / "clients" / "client-support-support-bot.key"),
    )
    assert mode(client.key_path) == 0o600
    assert mode(client.cert_path) == 0o644

    ca_cert = load_cert(ca.cert_path)
    cert = load_cert(client.cert_path)
    assert load_key(client.key_path).public_key() == cert.public_key()
    cert.verify_directly_issued_by(ca_cert)

    assert cert.subject.rfc4514_string() == "CN=support-bot"
    san = ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(SPIFFE_ID)]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca_cert, x509.SubjectKeyIdentifier).value.digest

    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=30) <= lifetime <= datetime.timedelta(days=30, minutes=10)
    assert spiffe_ids_from_der(cert.public_bytes(serialization.Encoding.DER)) == [SPIFFE_ID]


def test_client_cert_chain_verifies(pki):
    ca, server, client = pki
    store = Store([load_cert(ca.cert_path)])
    verifier = PolicyBuilder().store(store).time(now()).build_client_verifier()
    verified = verifier.verify(load_cert(client.cert_path), [])
    assert verified.subjects == [x509.UniformResourceIdentifier(SPIFFE_ID)]
    assert verified.chain[-1] == load_cert(ca.cert_path)

    # A server certificate is not valid for client auth (EKU serverAuth only).
    with pytest.raises(VerificationError):
        verifier.verify(load_cert(server.cert_path), [])

    # Nor is a client certificate from another CA.
    other_ca = create_ca(os.path.join(os.path.dirname(ca.cert_path), "..", "other-ca"))
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([load_cert(other_ca.cert_path)])).build_client_verifier().verify(
            load_cert(client.cert_path), []
        )


@pytest.mark.parametrize(
    ("spiffe_id", "basename", "cn"),
    [
        ("spiffe://example.org/ns/billing/sa/invoicer", "client-billing-invoicer", "invoicer"),
        ("spiffe://example.org/agents/research/v2", "client-agents-research-v2", "v2"),
        ("spiffe://example.org/Agent_1", "client-Agent_1", "Agent_1"),
        ("spiffe://example.org/ns/a.b/sa/c-d", "client-a.b-c-d", "c-d"),
    ],
)
def test_client_cert_names(pki, tmp_path, spiffe_id, basename, cn):
    ca, _, _ = pki
    issued = issue_client_cert(ca, str(tmp_path / "names"), spiffe_id)
    assert os.path.basename(issued.cert_path) == basename + ".crt"
    assert os.path.basename(issued.key_path) == basename + ".key"
    cert = load_cert(issued.cert_path)
    assert cert.subject.rfc4514_string() == f"CN={cn}"
    assert spiffe_ids_from_der(cert.public_bytes(serialization.Encoding.DER)) == [spiffe_id]


def test_client_cert_explicit_basename_and_overwrite(pki, tmp_path):
    ca, _, client = pki
    directory = os.path.dirname(client.cert_path)
    with pytest.raises(FileExistsError, match="client-support-support-bot"):
        issue_client_cert(ca, directory, SPIFFE_ID)

    first = load_cert(client.cert_path)
    again = issue_client_cert(ca, directory, SPIFFE_ID, overwrite=True)
    assert again == client
    assert load_cert(again.cert_path).serial_number != first.serial_number

    named = issue_client_cert(ca, directory, SPIFFE_ID, basename="bot", days=1)
    assert os.path.basename(named.cert_path) == "bot.crt"


@pytest.mark.parametrize("basename", ["../escape", "a/b", "", ".."])
def test_client_cert_rejects_unsafe_basename(pki, tmp_path, basename):
    ca, _, _ = pki
    with pytest.raises(ValueError, match="basename"):
        issue_client_cert(ca, str(tmp_path / "x"), SPIFFE_ID, basename=basename)


@pytest.mark.parametrize(
    "bad", ["http://cluster.local/ns/a/sa/b", "spiffe://cluster.local", "spiffe://Cluster.local/x"]
)
def test_client_cert_rejects_invalid_spiffe_id(pki, tmp_path, bad):
    ca, _, _ = pki
    with pytest.raises(ValueError):
        issue_client_cert(ca, str(tmp_path / "bad"), bad)
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------
# Real TLS handshakes
# ---------------------------------------------------------------------------


class MTLSServer:
    """A threaded TLS server on 127.0.0.1 that requires CA-signed client certs.

    For every connection it records either the peer's SPIFFE IDs or the
    exception raised during the handshake, and echoes the IDs to the client.
    """

    def __init__(self, ca: Issued, server: Issued, max_version: ssl.TLSVersion):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.maximum_version = max_version
        self.context.load_cert_chain(server.cert_path, server.key_path)
        self.context.load_verify_locations(cafile=ca.cert_path)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.results: queue.Queue = queue.Queue()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    ids = spiffe_ids_from_der(tls.getpeercert(binary_form=True))
                    self.results.put(ids)
                    tls.sendall(("\n".join(ids) + "\n").encode())
            except Exception as exc:  # recorded for the test to inspect
                self.results.put(exc)
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13"])
def mtls_server(request, pki):
    ca, server, _ = pki
    srv = MTLSServer(ca, server, request.param)
    yield srv
    srv.close()


def client_context(ca: Issued, client: Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca.cert_path)
    if client is not None:
        ctx.load_cert_chain(client.cert_path, client.key_path)
    return ctx


def talk(ctx: ssl.SSLContext, port: int, server_hostname: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            data = b""
            while not data.endswith(b"\n"):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_mtls_handshake_identifies_agent(pki, mtls_server, server_hostname):
    ca, _, client = pki
    reply = talk(client_context(ca, client), mtls_server.port, server_hostname)
    assert reply == (SPIFFE_ID + "\n").encode()
    assert mtls_server.results.get(timeout=5) == [SPIFFE_ID]


def test_mtls_rejects_client_without_certificate(pki, mtls_server):
    ca, _, _ = pki
    try:
        reply = talk(client_context(ca, None), mtls_server.port, "localhost")
    except (ssl.SSLError, ConnectionError):
        reply = None  # TLS 1.2 fails in the handshake, TLS 1.3 on the first read
    assert not reply
    assert isinstance(mtls_server.results.get(timeout=5), ssl.SSLError)


def test_mtls_rejects_client_from_another_ca(pki, mtls_server, tmp_path):
    ca, _, _ = pki
    other_ca = create_ca(str(tmp_path / "other-ca"))
    stranger = issue_client_cert(other_ca, str(tmp_path / "other-ca"), SPIFFE_ID)
    ctx = client_context(ca, stranger)
    try:
        reply = talk(ctx, mtls_server.port, "localhost")
    except (ssl.SSLError, ConnectionError):
        reply = None
    assert not reply
    assert isinstance(mtls_server.results.get(timeout=5), ssl.SSLError)


def test_client_rejects_wrong_server_name(pki, mtls_server):
    ca, _, client = pki
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(client_context(ca, client), mtls_server.port, "not-the-gateway.example")
    # The server sees the client abort the handshake.
    assert isinstance(mtls_server.results.get(timeout=5), (ssl.SSLError, ConnectionError))


# ---------------------------------------------------------------------------
# spiffe_ids_from_der
# ---------------------------------------------------------------------------


def _self_signed_der(extensions: list[x509.ExtensionType]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "t")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now())
        .not_valid_after(now() + datetime.timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_spiffe_ids_from_der_without_san():
    assert spiffe_ids_from_der(_self_signed_der([])) == []


def test_spiffe_ids_from_der_filters_non_spiffe_uris():
    der = _self_signed_der(
        [
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("agent.example"),
                    x509.UniformResourceIdentifier("https://example.org/agent"),
                    x509.UniformResourceIdentifier("spiffe://a.example/one"),
                    x509.UniformResourceIdentifier("spiffe://b.example/two"),
                ]
            )
        ]
    )
    assert spiffe_ids_from_der(der) == ["spiffe://a.example/one", "spiffe://b.example/two"]


def test_spiffe_ids_from_der_rejects_garbage():
    with pytest.raises(ValueError):
        spiffe_ids_from_der(b"not a certificate")


# ---------------------------------------------------------------------------
# parse_spiffe_id
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (SPIFFE_ID, ("cluster.local", "/ns/support/sa/support-bot")),
        ("spiffe://example.org/service", ("example.org", "/service")),
        ("spiffe://td/a", ("td", "/a")),
        ("spiffe://my_td-1.example/Path/With.Dots/and_under-scores", ("my_td-1.example", "/Path/With.Dots/and_under-scores")),
        ("spiffe://example.org/.../x", ("example.org", "/.../x")),
        ("spiffe://example.org/.hidden", ("example.org", "/.hidden")),
        ("spiffe://123/456", ("123", "/456")),
    ],
)
def test_parse_spiffe_id_valid(uri, expected):
    assert parse_spiffe_id(uri) == expected


def test_parse_spiffe_id_max_length():
    prefix = "spiffe://example.org/"
    uri = prefix + "a" * (2048 - len(prefix))
    assert len(uri) == 2048
    assert parse_spiffe_id(uri)[0] == "example.org"
    with pytest.raises(ValueError, match="2048"):
        parse_spiffe_id(uri + "a")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("SPIFFE://example.org/a", "lowercase"),
        ("Spiffe://example.org/a", "lowercase"),
        ("http://example.org/a", "scheme"),
        ("https://example.org/a", "scheme"),
        ("spiffe:example.org/a", "not a SPIFFE ID"),
        ("spiffe:/example.org/a", "not a SPIFFE ID"),
        ("example.org/a", "not a SPIFFE ID"),
        ("", "not a SPIFFE ID"),
        ("spiffe://example.org", "path is empty"),
        ("spiffe://example.org/", "path is empty"),
        ("spiffe://example.org/a/", "end with '/'"),
        ("spiffe://example.org/a//b", "empty segment"),
        ("spiffe://example.org/a/../b", r"'\.\.'"),
        ("spiffe://example.org/..", r"'\.\.'"),
        ("spiffe://example.org/./a", r"'\.'"),
        ("spiffe://example.org/a%20b", "percent"),
        ("spiffe://example%2Eorg/a", "percent"),
        ("spiffe://example.org:8443/a", "port"),
        ("spiffe://example.org/a?x=1", "query"),
        ("spiffe://example.org/a#frag", "fragment"),
        ("spiffe://user@example.org/a", "userinfo"),
        ("spiffe://user:pw@example.org/a", "userinfo"),
        ("spiffe:///a", "trust domain is empty"),
        ("spiffe://Example.org/a", "lowercase"),
        ("spiffe://exa mple.org/a", "trust domain"),
        ("spiffe://exämple.org/a", "trust domain"),
        ("spiffe://example.org/a b", "segment"),
        ("spiffe://example.org/a+b", "segment"),
        ("spiffe://example.org/ä", "segment"),
        ("spiffe://example.org/a\\b", "segment"),
        (" spiffe://example.org/a", "scheme"),
        ("spiffe://example.org/a\n", "segment"),
    ],
)
def test_parse_spiffe_id_invalid(uri, message):
    with pytest.raises(ValueError, match=message):
        parse_spiffe_id(uri)


def test_parse_spiffe_id_too_long():
    with pytest.raises(ValueError, match="longer than 2048"):
        parse_spiffe_id("spiffe://example.org/" + "/".join(["segment"] * 400))


def test_parse_spiffe_id_non_string():
    with pytest.raises(ValueError):
        parse_spiffe_id(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse_spiffe_id(b"spiffe://example.org/a")  # type: ignore[arg-type]


TRUST_DOMAIN_ALPHABET = string.ascii_lowercase + string.digits + ".-_"
SEGMENT_ALPHABET = string.ascii_letters + string.digits + ".-_"

trust_domains = st.text(TRUST_DOMAIN_ALPHABET, min_size=1, max_size=40)
segments = st.text(SEGMENT_ALPHABET, min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..")
)
paths = st.lists(segments, min_size=1, max_size=8).map(lambda parts: "/" + "/".join(parts))


@given(trust_domain=trust_domains, path=paths)
def test_parse_spiffe_id_round_trips(trust_domain, path):
    assert parse_spiffe_id(f"spiffe://{trust_domain}{path}") == (trust_domain, path)


@given(
    trust_domain=trust_domains,
    path=paths,
    bad=st.characters(exclude_characters=SEGMENT_ALPHABET + "/"),
    data=st.data(),
)
def test_parse_spiffe_id_rejects_any_other_path_character(trust_domain, path, bad, data):
    position = data.draw(st.integers(min_value=1, max_value=len(path)))
    uri = f"spiffe://{trust_domain}{path[:position]}{bad}{path[position:]}"
    with pytest.raises(ValueError):
        parse_spiffe_id(uri)


@settings(max_examples=25, deadline=None)
@given(trust_domain=trust_domains, path=paths)
def test_issued_client_cert_carries_any_valid_id(tmp_path_factory, trust_domain, path):
    directory = tmp_path_factory.mktemp("hyp")
    ca = create_ca(str(directory))
    spiffe_id = f"spiffe://{trust_domain}{path}"
    issued = issue_client_cert(ca, str(directory), spiffe_id)
    # The derived basename is a plain file name inside the target directory.
    assert os.path.dirname(issued.cert_path) == str(directory)
    der = load_cert(issued.cert_path).public_bytes(serialization.Encoding.DER)
    assert spiffe_ids_from_der(der) == [spiffe_id]


# ---------------------------------------------------------------------------
# hash_api_key
# ---------------------------------------------------------------------------


def test_hash_api_key_known_vector():
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_hash_api_key_utf8():
    assert hash_api_key("") == hashlib.sha256(b"").hexdigest()
    assert hash_api_key("clé") == hashlib.sha256("clé".encode("utf-8")).hexdigest()
    assert hash_api_key("sk-test") == hash_api_key("sk-test").lower()
