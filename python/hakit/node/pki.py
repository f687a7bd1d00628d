"""Cluster credentials: a CA that hakit makes itself, a key and certificate per node, and
the cluster secret.

Layout of paths.pki (/etc/hakit/pki, mode 0700):
  ca.crt          the cluster CA's certificate (every node); while the CA is being rotated,
                  the new CA's first, then the previous one's (node/trust.py)
  ca.key          the CA's private key, only on the node that created the CA
  issued          on the CA node: every certificate it issued (SHA-256, node, date)
  retired         certificates no node accepts any more, whatever signed them (every node)
  node.crt        this node's certificate: CN = node name, SAN = the name and its cluster.xml addresses
  node.key        its private key (0600)
  cluster.secret  32 random bytes (0600); modules without a key of their own derive theirs from it

`hakit cluster config` creates the CA, the secret and the node's credentials on the first
node.  Another node gets its credentials once by hand, as a bundle (make_bundle on the CA
node, import_bundle on the new node); from then on they travel over TLS (`hakit -H "*" -G`).

Keys are EC P-256: small, fast to make (the simulated cluster makes one per node at each
start) and accepted by every TLS 1.3 stack.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hakit.config.cluster_model import Cluster
from hakit.errors import HakitError
from hakit.files import write_atomic
from hakit.paths import Paths
from hakit.runtime.credentials import (
    PkiError,
    ca_cert_path,
    ca_key_path,
    cert_id,
    credential_files,
    holds_ca,
    issued_path,
    node_cert_path,
    node_key_path,
    retired,
)
from hakit.runtime.identity import local_node

CA_DAYS = 30 * 365
NODE_DAYS = 10 * 365
RENEW_DAYS = 365  # `-G` from the CA node renews a certificate this close to its end
SKEW = dt.timedelta(hours=1)  # certificates are valid a little before they are made: clocks differ
SECRET_BYTES = 32

BUNDLE_HEADER = "# hakit cluster bundle"
SECRET_LABEL = "HAKIT CLUSTER SECRET"
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


@dataclass(frozen=True)
class NodeCredentials:
    key_pem: bytes
    cert_pem: bytes


@dataclass(frozen=True)
class Bundle:
    node: str
    ca_pem: bytes
    creds: NodeCredentials
    secret: bytes


# ---------------------------------------------------------------- files


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic, and never readable by others even for a moment."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, data, mode)


def write_private(path: Path, data: bytes) -> None:
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    _write(path, data, 0o644)


def write_ca_certs(p: Paths, cas: Sequence[x509.Certificate]) -> None:
    write_public(ca_cert_path(p), b"".join(map(_cert_pem, cas)))


def write_node_credentials(p: Paths, creds: NodeCredentials) -> None:
    # Key first: a certificate without its key would make the TLS context fail to load.
    write_private(node_key_path(p), creds.key_pem)
    write_public(node_cert_path(p), creds.cert_pem)


# ---------------------------------------------------------------- certificates


def _load_cert(data: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{what} is not a PEM certificate ({exc})") from None


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return _load_cert(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise PkiError(f"{path} is missing") from None


def load_cas(data: bytes, what: str) -> list[x509.Certificate]:
    """The CA certificates of a ca.crt, the current CA first; PkiError if any is not a CA."""
    try:
        cas = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"{what} holds no PEM certificate ({exc})") from None
    if not all(_is_ca(ca) for ca in cas):
        raise PkiError(f"{what} holds a certificate that is not a CA's")
    return cas


def read_cas(p: Paths) -> list[x509.Certificate]:
    path = ca_cert_path(p)
    try:
        return load_cas(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise PkiError(f"{path} is missing") from None


def _read_ca_key(p: Paths) -> ec.EllipticCurvePrivateKey:
    path = ca_key_path(p)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(
            f"this node does not hold the cluster CA ({path} is missing): do this on the node "
            "where 'hakit cluster config' created it"
        ) from None
    except ValueError as exc:
        raise PkiError(f"{path} is not a private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an EC key")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate, as operators compare it (first 16 bytes, colon separated)."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256())[:16])


def create_ca(p: Paths) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    # A random part in the name tells two clusters' CAs apart in every tool that shows it.
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hakit"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"hakit cluster CA {secrets.token_hex(4)}"),
    ])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(ca_key_path(p), _key_pem(key))
    write_ca_certs(p, [cert])
    return cert


def node_addresses(cluster: Cluster, node: str) -> list[str]:
    """The node's addresses in cluster.xml, in LAN order, each once."""
    found: dict[str, None] = {}
    for lan in cluster.lan_list:
        for n in lan.nodes:
            if n.name == node:
                found.setdefault(n.addr, None)
    return list(found)


def _san(node: str, addrs: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for value in (node, *addrs):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            if value.isascii():
                names.append(x509.DNSName(value))
    return names


def issue(p: Paths, node: str, addrs: Sequence[str]) -> NodeCredentials:
    """A new key and certificate for `node`, signed by this node's CA."""
    ca_key = _read_ca_key(p)
    ca = _read_cert(ca_cert_path(p))
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hakit"),
            x509.NameAttribute(NameOID.COMMON_NAME, node),
        ]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(min(now + dt.timedelta(days=NODE_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_san(node, addrs)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Registered before anyone holds it: `hakit cluster retire NODE` retires what is listed.
    with open(issued_path(p), "a", encoding="ascii") as register:
        register.write(f"{cert_id(der(cert))} {node} {now:%Y-%m-%dT%H:%M:%SZ}\n")
    return NodeCredentials(_key_pem(key), _cert_pem(cert))


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> None:
    """PkiError unless `cert` is signed by one of `cas` and valid now."""
    if not any(signed_by(cert, ca) for ca in cas):
        raise PkiError(f"the certificate of {common_name(cert)!r} is not signed by the cluster CA")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError(
            f"the certificate of {common_name(cert)!r} is valid only from "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}"
        )


def renewal_reason(cert: x509.Certificate, node: str, addrs: Sequence[str],
                   ca: x509.Certificate | None = None) -> str | None:
    """Why a node's certificate should be replaced (None: it is fine); `ca`, when given, is
    the current CA, which a certificate of a previous one should be renewed for."""
    if common_name(cert) != node:
        return f"it names {common_name(cert)!r}, not {node}"
    if ca is not None and not signed_by(cert, ca):
        return "it is signed by a previous cluster CA"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    named = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    named.update(san.get_values_for_type(x509.DNSName))
    missing = [a for a in addrs if str(_normal(a)) not in named]
    if missing:
        return f"it does not name {', '.join(missing)}"
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if left < dt.timedelta(days=RENEW_DAYS):
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def _normal(addr: str) -> object:
    try:
        return ipaddress.ip_address(addr)
    except ValueError:
        return addr


def load_cert_der(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


# ---------------------------------------------------------------- this node


def setup_node(p: Paths, cluster: Cluster, node: str | None) -> list[str]:
    """What `hakit cluster config` adds: the CA and the secret when this node has no
    credentials at all (it is the first node), this node's certificate when the CA is here
    and the certificate is missing or out of date.  Returns what was done, for the user."""
    done: list[str] = []
    fresh = not ca_cert_path(p).exists() and not node_cert_path(p).exists()
    if fresh:
        ca = create_ca(p)
        done.append(f"created the cluster CA (fingerprint {fingerprint(ca)}) in {p.pki}")
    if not p.cluster_secret.exists():
        if not holds_ca(p):
            # Every node must hold the same secret: only the CA node may make it.
            raise PkiError(
                f"{p.cluster_secret} is missing: import a bundle made on the CA node "
                "('hakit cluster bundle NODE -o FILE' there, 'hakit cluster import FILE' here)"
            )
        write_private(p.cluster_secret, secrets.token_bytes(SECRET_BYTES))
        done.append(f"created the cluster secret {p.cluster_secret}")
    if node is None:
        return done
    addrs = node_addresses(cluster, node)
    if node_cert_path(p).exists():
        cert = _read_cert(node_cert_path(p))
        # (While the CA is rotated, the CA node keeps its certificate: see node/trust.py.)
        cas = read_cas(p)
        reason = renewal_reason(cert, node, addrs, cas[0] if holds_ca(p) and len(cas) == 1 else None)
        if cert_id(der(cert)) in retired(p):
            reason = "it is retired"
    else:
        reason = "missing"
    if reason is None:
        return done
    if not holds_ca(p):
        if reason == "missing":
            credential_files(p)  # raises, saying how to get them
        done.append(f"warning: the certificate of {node} should be renewed ({reason}): "
                    "run 'hakit -H \"*\" -G' on the CA node")
        return done
    write_node_credentials(p, issue(p, node, addrs))
    done.append(f"{'created' if reason == 'missing' else 'renewed'} the certificate of {node}"
                + ("" if reason == "missing" else f" ({reason})"))
    return done


def setup_local(p: Paths, cluster: Cluster) -> list[str]:
    """setup_node for this machine, whichever node of `cluster` it is (if any)."""
    try:
        node = local_node(cluster)
    except HakitError as exc:
        return [*setup_node(p, cluster, None), f"no node certificate: {exc}"]
    return setup_node(p, cluster, node)


def describe(p: Paths) -> str:
    """One line on this node's credentials, for confinfo."""
    try:
        ca = _read_cert(ca_cert_path(p))
        cert = _read_cert(node_cert_path(p))
    except PkiError:
        return "no cluster credentials"
    ca_note = ", holds the CA key" if holds_ca(p) else ""
    return (f"CA {fingerprint(ca)}{ca_note}; certificate of {common_name(cert)} "
            f"until {cert.not_valid_after_utc:%Y-%m-%d}")


# ---------------------------------------------------------------- bootstrap bundles


def make_bundle(p: Paths, cluster: Cluster, node: str) -> bytes:
    """Everything `node` needs to join: CA certificate, a new key and certificate, the secret.
    Secret material: the caller writes it 0600 and the operator copies it by hand."""
    if node not in cluster.node_names:
        raise PkiError(f"{node} is not a node of cluster.xml ({', '.join(cluster.node_names)})")
    creds = issue(p, node, node_addresses(cluster, node))
    try:
        secret = p.cluster_secret.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{p.cluster_secret} is missing: run 'hakit cluster config' first") from None
    secret_b64 = base64.encodebytes(secret).decode()
    return b"".join([
        f"{BUNDLE_HEADER} for {node}, made {time.strftime('%Y-%m-%d %H:%M:%S')}.\n".encode(),
        f"# Secret: copy it to {node} only, run 'hakit cluster import FILE' there, delete it.\n".encode(),
        ca_cert_path(p).read_bytes(),
        creds.cert_pem,
        creds.key_pem,
        f"-----BEGIN {SECRET_LABEL}-----\n{secret_b64}-----END {SECRET_LABEL}-----\n".encode(),
    ])


def read_bundle(data: bytes, source: str) -> Bundle:
    """A bundle checked through: CA, node certificate signed by it, key matching, secret."""
    def bad(why: str) -> PkiError:
        return PkiError(f"{source} is not a usable hakit cluster bundle: {why}")

    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise bad("it is not text") from None
    blocks: dict[str, list[re.Match[str]]] = {}
    for m in _PEM.finditer(text):
        blocks.setdefault(m.group(1), []).append(m)
    counts = {label: len(found) for label, found in blocks.items()}
    others = {label: n for label, n in counts.items() if label != "CERTIFICATE"}
    if counts.get("CERTIFICATE", 0) < 2 or others != {"PRIVATE KEY": 1, SECRET_LABEL: 1}:
        raise bad("expected certificates, a private key and the cluster secret "
                  "(as written by 'hakit cluster bundle NODE -o FILE')")
    certs = [_load_cert(m.group(0).encode(), source) for m in blocks["CERTIFICATE"]]
    cas = [c for c in certs if _is_ca(c)]
    nodes = [c for c in certs if not _is_ca(c)]
    if not cas:
        raise bad("it holds no CA certificate")
    if len(nodes) != 1:
        raise bad("it holds no node certificate, or several")
    cert = nodes[0]
    try:
        verify(cert, cas)
    except PkiError as exc:
        raise bad(str(exc)) from None
    key_pem = blocks["PRIVATE KEY"][0].group(0).encode()
    if why := _mismatch(key_pem, cert):
        raise bad(why)
    try:
        secret = base64.b64decode(blocks[SECRET_LABEL][0].group(2))
    except ValueError:
        raise bad("its cluster secret is not base64") from None
    if len(secret) != SECRET_BYTES:
        raise bad(f"its cluster secret has {len(secret)} bytes, not {SECRET_BYTES}")
    return Bundle(common_name(cert), b"".join(map(_cert_pem, cas)), NodeCredentials(key_pem, _cert_pem(cert)),
                  secret)


def _mismatch(key_pem: bytes, cert: x509.Certificate) -> str | None:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return "its private key does not read"
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        return "its private key does not match its certificate"
    return None


def check_credentials(creds: NodeCredentials, node: str, cas: Sequence[x509.Certificate]) -> None:
    """PkiError unless `creds` are a key and a certificate of the cluster CA (`cas`, those
    this node will trust), made for `node` (this node): another node's would let this one
    pose as it."""
    cert = _load_cert(creds.cert_pem, "the shipped certificate")
    verify(cert, cas)
    if (named := common_name(cert)) != node:
        raise PkiError(f"the shipped certificate is {named}'s, not this node's ({node}): nothing installed")
    if why := _mismatch(creds.key_pem, cert):
        raise PkiError(f"the shipped credentials are unusable: {why}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _same_cluster(p: Paths, ca_pem: bytes) -> bool:
    """Whether a CA this node trusts is among those of ca_pem (a CA being rotated is)."""
    try:
        here = {cert_id(der(ca)) for ca in read_cas(p)}
    except PkiError:
        return False
    return bool(here & {cert_id(der(ca)) for ca in load_cas(ca_pem, "the bundle")})


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def install_bundle(p: Paths, bundle: Bundle) -> Path | None:
    """Install a checked bundle.  Credentials of another cluster found here (this node made
    its own CA before joining) are moved aside, never deleted: returns where they went."""
    aside = None
    if ca_cert_path(p).exists() and not _same_cluster(p, bundle.ca_pem):
        aside = p.pki.with_name(f"pki.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
        p.pki.rename(aside)
    write_public(ca_cert_path(p), bundle.ca_pem)
    write_node_credentials(p, bundle.creds)
    write_private(p.cluster_secret, bundle.secret)
    return aside
