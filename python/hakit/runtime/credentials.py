"""Where this node's cluster credentials live (the layout: node/pki.py, which makes them),
for every process that presents or checks them: hakitd, the CLI, module processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hakit.errors import HakitError
from hakit.paths import Paths

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"
ISSUED = "issued"
RETIRED = "retired"


class PkiError(HakitError):
    pass


def ca_cert_path(p: Paths) -> Path:
    return p.pki / CA_CERT


def ca_key_path(p: Paths) -> Path:
    return p.pki / CA_KEY


def node_cert_path(p: Paths) -> Path:
    return p.pki / NODE_CERT


def node_key_path(p: Paths) -> Path:
    return p.pki / NODE_KEY


def issued_path(p: Paths) -> Path:
    return p.pki / ISSUED


def retired_path(p: Paths) -> Path:
    return p.pki / RETIRED


def holds_ca(p: Paths) -> bool:
    """Whether this node can sign certificates (it created the cluster CA)."""
    return ca_key_path(p).exists()


def credential_files(p: Paths) -> tuple[Path, Path, Path]:
    """(ca.crt, node.crt, node.key), or PkiError saying how to get them."""
    files = (ca_cert_path(p), node_cert_path(p), node_key_path(p))
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise PkiError(
            f"this node has no cluster credentials ({', '.join(missing)} missing in {p.pki}): run "
            "'hakit cluster config' on the first node; on the others import a bundle made there "
            "('hakit cluster bundle NODE -o FILE', then 'hakit cluster import FILE')"
        )
    return files


def cert_id(der: bytes) -> str:
    """What the issued and retired lists name a certificate by: the SHA-256 of its DER form."""
    return hashlib.sha256(der).hexdigest()


def retired(p: Paths) -> frozenset[str]:
    """The certificates retired (cert_id), which no node accepts whatever signed them."""
    try:
        text = retired_path(p).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return frozenset()
    except OSError as exc:
        raise PkiError(f"cannot read {retired_path(p)}: {exc.strerror}") from None
    return frozenset(line.split()[0] for line in text.splitlines() if line.strip())
