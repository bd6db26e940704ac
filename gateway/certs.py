"""Development PKI for the Mitrity LLM Gateway.

The gateway terminates TLS for agents and identifies each agent by the SPIFFE
ID carried as a URI SAN in its mTLS client certificate, e.g.
``spiffe://cluster.local/ns/support/sa/support-bot``.  This module creates the
three pieces needed to run that setup locally and in tests:

* a small certificate authority (``create_ca``),
* the gateway's TLS server certificate (``issue_server_cert``),
* SPIFFE client certificates for agents (``issue_client_cert``).

It also holds the helpers the gateway uses at request time: strict SPIFFE ID
parsing (``parse_spiffe_id``), extracting SPIFFE IDs from a peer certificate
(``spiffe_ids_from_der``) and hashing API keys for policy matching
(``hash_api_key``).

This is *not* meant for production.  Production deployments bring their own
PKI (e.g. cert-manager or SPIRE) and only point the gateway at the resulting
files.

All keys are ECDSA P-256, everything is written as PEM.  Private keys are
written with mode 0o600 and certificates with 0o644.  Existing files are never
replaced unless ``overwrite=True`` is passed.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "create_ca",
    "issue_server_cert",
    "issue_client_cert",
    "parse_spiffe_id",
    "spiffe_ids_from_der",
    "hash_api_key",
]

_KEY_MODE = 0o600
_CERT_MODE = 0o644
_DIR_MODE = 0o700

# Certificates start being valid slightly in the past to tolerate clock skew
# between the machine that issues them and the machines that check them.
_BACKDATE = datetime.timedelta(minutes=5)

# X.509 limits commonName to 64 characters; the SAN is what is actually
# checked, so a longer name is simply truncated in the CN.
_CN_MAX = 64

_SPIFFE_MAX_LEN = 2048
_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Issued:
    """Paths of a PEM certificate and its PEM private key."""

    cert_path: str
    key_path: str


# ---------------------------------------------------------------------------
# Issuing certificates
# ---------------------------------------------------------------------------


def create_ca(
    directory: str,
    name: str = "Mitrity Development CA",
    days: int = 365,
    overwrite: bool = False,
) -> Issued:
    """Create a self-signed CA as ``ca.crt`` / ``ca.key`` in *directory*.

    The CA may only sign end-entity certificates (path length 0).  The
    directory is created with mode 0o700 if it does not exist yet.
    """
    _check_days(days)
    issued = _paths(directory, "ca", overwrite)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _cn(name))])
    not_before, not_after = _validity(days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    _write_pair(issued, cert, key, overwrite)
    return issued


def issue_server_cert(
    ca: Issued,
    directory: str,
    hosts: list[str],
    days: int = 90,
    overwrite: bool = False,
    basename: str = "server",
) -> Issued:
    """Issue the gateway's TLS server certificate, signed by *ca*.

    Every entry of *hosts* becomes a SAN: an ``IPAddress`` if it parses as an
    IP address, a ``DNSName`` otherwise.  The subject CN is the first host.
    """
    _check_days(days)
    if isinstance(hosts, str):
        raise TypeError("hosts must be a list of host names / IP addresses, not a str")
    hosts = list(hosts)
    if not hosts or any(not isinstance(h, str) or not h for h in hosts):
        raise ValueError("hosts must be a non-empty list of non-empty strings")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))

    issued = _paths(directory, basename, overwrite)
    cert, key = _issue_leaf(
        ca,
        common_name=hosts[0],
        sans=sans,
        eku=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
    )
    _write_pair(issued, cert, key, overwrite)
    return issued


def issue_client_cert(
    ca: Issued,
    directory: str,
    spiffe_id: str,
    days: int = 30,
    overwrite: bool = False,
    basename: str | None = None,
) -> Issued:
    """Issue an agent's mTLS client certificate (an X.509-SVID-like cert).

    The certificate carries exactly one URI SAN, *spiffe_id*, which is
    validated with :func:`parse_spiffe_id` first (``ValueError`` if invalid).
    The subject CN is the service-account name for Kubernetes-style IDs
    (``/ns/<ns>/sa/<sa>``), otherwise the last path segment.  Files default to
    ``client-<ns>-<sa>.crt`` / ``.key`` (or ``client-<segments joined by '-'>``).
    """
    _check_days(days)
    _, path = parse_spiffe_id(spiffe_id)
    segments = path[1:].split("/")
    if len(segments) == 4 and segments[0] == "ns" and segments[2] == "sa":
        common_name = segments[3]
        default_basename = f"client-{segments[1]}-{segments[3]}"
    else:
        common_name = segments[-1]
        default_basename = "client-" + "-".join(segments)
    if basename is None:
        basename = _UNSAFE_FILENAME_CHARS.sub("_", default_basename)

    issued = _paths(directory, basename, overwrite)
    cert, key = _issue_leaf(
        ca,
        common_name=common_name,
        sans=[x509.UniformResourceIdentifier(spiffe_id)],
        eku=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
    )
    _write_pair(issued, cert, key, overwrite)
    return issued


def _issue_leaf(
    ca: Issued,
    *,
    common_name: str,
    sans: list[x509.GeneralName],
    eku: x509.ObjectIdentifier,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = _load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days)
    # Never outlive the issuing CA: the chain would not verify past that point.
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _cn(common_name))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_ca(ca: Issued) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    with open(ca.cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(ca.key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca.key_path}: expected an EC private key")
    if key.public_key() != cert.public_key():
        raise ValueError(f"{ca.key_path} does not belong to {ca.cert_path}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ValueError(f"{ca.cert_path} is not a CA certificate")
    return cert, key


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now - _BACKDATE, now + datetime.timedelta(days=days)


def _cn(name: str) -> str:
    if not name:
        raise ValueError("common name must not be empty")
    return name[:_CN_MAX]


# ---------------------------------------------------------------------------
# Writing files
# ---------------------------------------------------------------------------


def _paths(directory: str, basename: str, overwrite: bool) -> Issued:
    """Return the target paths, refusing early if either already exists."""
    if not basename or _UNSAFE_FILENAME_CHARS.search(basename) or basename in (".", ".."):
        raise ValueError(f"unsafe basename {basename!r}: use letters, digits, '.', '-', '_'")
    issued = Issued(
        cert_path=os.path.join(directory, basename + ".crt"),
        key_path=os.path.join(directory, basename + ".key"),
    )
    if not overwrite:
        for path in (issued.cert_path, issued.key_path):
            if os.path.lexists(path):
                raise FileExistsError(
                    f"{path} already exists (pass overwrite=True to replace it)"
                )
    return issued


def _ensure_dir(directory: str) -> None:
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=_DIR_MODE, exist_ok=True)
        os.chmod(directory, _DIR_MODE)  # makedirs' mode is subject to the umask


def _write_pair(
    issued: Issued,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    overwrite: bool,
) -> None:
    _ensure_dir(os.path.dirname(issued.cert_path) or ".")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(issued.key_path, key_pem, _KEY_MODE, overwrite)
    _write_file(issued.cert_path, cert.public_bytes(serialization.Encoding.PEM), _CERT_MODE, overwrite)


def _write_file(path: str, data: bytes, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_TRUNC if overwrite else os.O_EXCL
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise FileExistsError(
            f"{path} already exists (pass overwrite=True to replace it)"
        ) from None
    try:
        # Enforce the exact mode: os.open's mode is masked by the umask and is
        # ignored entirely when an existing file is overwritten.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# SPIFFE IDs and API keys
# ---------------------------------------------------------------------------


def parse_spiffe_id(uri: str) -> tuple[str, str]:
    """Validate a SPIFFE ID and return ``(trust_domain, path)``.

    Follows the SPIFFE ID specification: the scheme is exactly ``spiffe``;
    the trust domain is non-empty and made of lowercase letters, digits,
    ``.``, ``-`` and ``_`` (so no port and no userinfo); the path is
    non-empty, its segments are non-empty, not ``.`` or ``..``, and made of
    letters, digits, ``.``, ``-`` and ``_``; no query, fragment or
    percent-encoding; at most 2048 bytes.  Raises ``ValueError`` otherwise.
    """
    if not isinstance(uri, str):
        raise ValueError(f"SPIFFE ID must be a string, got {type(uri).__name__}")
    if len(uri.encode("utf-8", "surrogatepass")) > _SPIFFE_MAX_LEN:
        raise ValueError(f"SPIFFE ID is longer than {_SPIFFE_MAX_LEN} bytes")

    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError(f"{uri!r} is not a SPIFFE ID (expected spiffe://<trust-domain>/<path>)")
    if scheme != "spiffe":
        if scheme.lower() == "spiffe":
            raise ValueError(f"{uri!r}: scheme must be lowercase 'spiffe'")
        raise ValueError(f"{uri!r}: scheme must be 'spiffe', got {scheme!r}")
    if "?" in rest:
        raise ValueError(f"{uri!r}: SPIFFE IDs must not contain a query")
    if "#" in rest:
        raise ValueError(f"{uri!r}: SPIFFE IDs must not contain a fragment")
    if "%" in rest:
        raise ValueError(f"{uri!r}: SPIFFE IDs must not contain percent-encoding")

    slash = rest.find("/")
    trust_domain, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])

    if not trust_domain:
        raise ValueError(f"{uri!r}: trust domain is empty")
    if "@" in trust_domain:
        raise ValueError(f"{uri!r}: SPIFFE IDs must not contain userinfo")
    if ":" in trust_domain:
        raise ValueError(f"{uri!r}: trust domain must not contain a port")
    if not _TRUST_DOMAIN_RE.fullmatch(trust_domain):
        if _TRUST_DOMAIN_RE.fullmatch(trust_domain.lower()):
            raise ValueError(f"{uri!r}: trust domain must be lowercase")
        raise ValueError(
            f"{uri!r}: trust domain may only contain lowercase letters, digits, '.', '-', '_'"
        )

    if not path or path == "/":
        raise ValueError(f"{uri!r}: path is empty (expected e.g. /ns/<namespace>/sa/<name>)")
    if path.endswith("/"):
        raise ValueError(f"{uri!r}: path must not end with '/'")
    for segment in path[1:].split("/"):
        if not segment:
            raise ValueError(f"{uri!r}: path contains an empty segment ('//')")
        if segment in (".", ".."):
            raise ValueError(f"{uri!r}: path must not contain '.' or '..' segments")
        if not _PATH_SEGMENT_RE.fullmatch(segment):
            raise ValueError(
                f"{uri!r}: path segment {segment!r} may only contain letters, digits, '.', '-', '_'"
            )
    return trust_domain, path


def spiffe_ids_from_der(der: bytes) -> list[str]:
    """Return the ``spiffe://`` URI SANs of a DER certificate.

    *der* is what ``ssl.SSLSocket.getpeercert(binary_form=True)`` returns.
    The result is empty if the certificate has no SAN extension or no SPIFFE
    URI.  The IDs are returned as found; callers that require a single valid
    ID should check the length and run :func:`parse_spiffe_id` themselves.
    """
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        uri
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith("spiffe://")
    ]


def hash_api_key(key: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 *key* (policy ``api_key_sha256``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
