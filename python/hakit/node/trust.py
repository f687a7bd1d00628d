"""Which node certificates the cluster accepts: retiring one, rotating the CA, and the
trust that `hakit -H "*" -G` ships from the CA node (docs/security.md, "Retiring a node,
rotating the CA").

Retiring: the CA node lists every certificate it issues (credentials.issued_path); `retire NODE`
copies those of NODE to the retired list, which -G ships to every node.  A retired
certificate is refused by servers and clients alike, whatever signed it; the node comes
back only with credentials made for it again (a bundle, imported by hand).

Rotating: `rotate-ca` makes a new CA and trusts both; -G gives every other node the new
trust and a certificate of the new CA; `rotate-ca --finish`, once every other node shows
one, gives this node one too and trusts the new CA only, and -G ships that.  Between the
steps, nodes with either certificate keep talking to each other (this node keeps its
certificate of the previous CA until the others trust the new one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

from hakit.config.cluster_model import Cluster
from hakit.node import pki
from hakit.paths import Paths
from hakit.runtime import credentials

MAX_RETIRED_BYTES = 1 << 20
_RETIRED_LINE = re.compile(r"[0-9a-f]{64} \S+( \S+)?")


@dataclass(frozen=True)
class Shipped:
    """The trust a CA node ships with cluster.xml: its ca.crt and retired list."""

    ca_pem: bytes
    retired: bytes


def _on_ca_node(p: Paths, doing: str) -> None:
    if not credentials.holds_ca(p):
        raise credentials.PkiError(f"only the CA node can {doing}: run this where 'hakit cluster config' "
                           "created the CA")


def retire(p: Paths, node: str) -> list[str]:
    """Retire every certificate issued to `node` by this CA node; returns their ids."""
    _on_ca_node(p, "retire certificates")
    try:
        issued = credentials.issued_path(p).read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        issued = []
    gone = pki.retired(p)
    ids = [line.split()[0] for line in issued if line.split()[1:2] == [node]]
    new = [i for i in dict.fromkeys(ids) if i not in gone]
    if not ids:
        raise credentials.PkiError(
            f"this CA node issued no certificate to {node} ({credentials.issued_path(p)})")
    if new:
        with open(credentials.retired_path(p), "a", encoding="ascii") as out:
            out.writelines(f"{i} {node}\n" for i in new)
        credentials.retired_path(p).chmod(0o644)
    return new


def rotate_ca(p: Paths) -> tuple[x509.Certificate, x509.Certificate]:
    """A new CA (returned with the previous one), trusted beside the previous one.  The
    previous key is kept aside, never deleted."""
    _on_ca_node(p, "rotate the CA")
    old = pki.read_cas(p)
    if len(old) > 1:
        raise credentials.PkiError("a rotation of the CA is under way: finish it first "
                           "(hakit -H \"*\" -G, then hakit cluster rotate-ca --finish)")
    pki.write_private(p.pki / f"{credentials.CA_KEY}.{pki.cert_id(pki.der(old[0]))[:16]}.previous",
                      credentials.ca_key_path(p).read_bytes())
    new = pki.create_ca(p)
    pki.write_ca_certs(p, [new, *old])
    return new, old[0]


def finish_rotation(p: Paths, cluster: Cluster, node: str) -> x509.Certificate:
    """A certificate of the new CA for this node, and trust in the new CA only (the caller
    checked that every other node holds one of its certificates)."""
    cas = pki.read_cas(p)
    if len(cas) == 1:
        raise credentials.PkiError("no rotation of the CA is under way (hakit cluster rotate-ca starts one)")
    pki.write_node_credentials(p, pki.issue(p, node, pki.node_addresses(cluster, node)))
    pki.write_ca_certs(p, cas[:1])
    return cas[0]


def shipped(p: Paths) -> Shipped | None:
    """What -G ships from this node: its trust, when it holds the CA (None elsewhere)."""
    if not credentials.holds_ca(p):
        return None
    path = credentials.retired_path(p)
    return Shipped(credentials.ca_cert_path(p).read_bytes(), path.read_bytes() if path.exists() else b"")


def check_shipped(ship: Shipped, cert_pem: bytes) -> list[x509.Certificate]:
    """The CAs of a shipped trust, or PkiError; `cert_pem` (the certificate this node is
    to use) must be signed by one of them, or the node would cut itself off."""
    cas = pki.load_cas(ship.ca_pem, "the shipped ca.crt")
    if len(ship.retired) > MAX_RETIRED_BYTES:
        raise credentials.PkiError(f"the shipped retired list is over {MAX_RETIRED_BYTES} bytes")
    try:
        lines = ship.retired.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise credentials.PkiError("the shipped retired list is not text") from None
    if bad := [n for n, line in enumerate(lines, 1) if not _RETIRED_LINE.fullmatch(line)]:
        raise credentials.PkiError(f"the shipped retired list is malformed (line {bad[0]})")
    cert = x509.load_pem_x509_certificate(cert_pem)
    pki.verify(cert, cas)
    if pki.cert_id(pki.der(cert)) in {line.split()[0] for line in lines}:
        raise credentials.PkiError("the shipped retired list retires this node's own certificate")
    return cas


def install_shipped(p: Paths, ship: Shipped) -> None:
    pki.write_ca_certs(p, pki.load_cas(ship.ca_pem, "the shipped ca.crt"))
    pki.write_public(credentials.retired_path(p), ship.retired)
