"""Installed modules on this node: install from .safe archives, uninstall with a
backup, list, ids, package.

Layout of one installed module AM:
  /etc/hakit/modules/AM/conf/userconfig.xml   its configuration
  /etc/hakit/modules/AM/bin/                  its scripts
  /etc/hakit/modules/AM/id                    its module id (ports derive from it)
  /var/lib/hakit/modules/AM/                  its state (store, runtime files)
  /var/log/hakit/modules/AM/                  its script logs
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hakit.config.loader import ConfigInvalid, load_cluster, load_module
from hakit.config.module_model import ModuleConfig
from hakit.config.safe_archive import pack, unpack
from hakit.errors import HakitError, UsageError
from hakit.files import private_dir, write_atomic
from hakit.paths import Paths

MODULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$")
MAX_ID = 255  # ids map to port offsets; keep them in one byte


class ModuleError(HakitError):
    pass


@dataclass(frozen=True)
class Installed:
    name: str
    id: int
    mode: str | None  # None when its configuration does not read


def check_name(name: str) -> None:
    if not MODULE_NAME.match(name):
        raise UsageError(
            f"invalid module name {name!r}: a letter, then up to 31 letters, digits, '_' or '-'"
        )


def template(name: str) -> Path | None:
    """A template shipped with hakit (mirror.safe, farm.safe, ...), or None."""
    ref = resources.files("hakit") / "templates" / name
    path = Path(str(ref))
    return path if path.is_file() else None


def template_names() -> list[str]:
    ref = Path(str(resources.files("hakit") / "templates"))
    return sorted(p.name for p in ref.glob("*.safe")) if ref.is_dir() else []


def _resolve_archive(source: str) -> Path:
    """A bare name (no '/') is a shipped template when one has it, whatever lies in the
    current directory (a user's own `mirror.safe` must not be installed as root in its
    place); a path, or a bare name no template has, is a file (./name for one here)."""
    if "/" not in source and source not in (".", ".."):
        names = template_names()
        for candidate in (source, source + ".safe"):
            if candidate in names and (shipped := template(candidate)) is not None:
                return shipped
    path = Path(source)
    if path.exists():
        return path
    known = ", ".join(template_names()) or "none"
    raise ModuleError(f"{source}: no such file, nor a shipped template (templates: {known})")


class Catalog:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def names(self) -> list[str]:
        if not self.paths.modules.is_dir():
            return []
        return sorted(p.name for p in self.paths.modules.iterdir() if (p / "conf").is_dir())

    def exists(self, name: str) -> bool:
        return (self.paths.module_dir(name) / "conf").is_dir()

    def require(self, name: str) -> None:
        check_name(name)
        if not self.exists(name):
            known = ", ".join(self.names()) or "none installed"
            raise ModuleError(f"module {name} is not installed on this node ({known})")

    def module_id(self, name: str) -> int:
        try:
            return int((self.paths.module_dir(name) / "id").read_text().strip())
        except (OSError, ValueError):
            raise ModuleError(f"module {name} has no valid id file") from None

    def key(self, name: str) -> bytes:
        """Heartbeat authentication key: the module's own (genkey), else derived from the
        cluster secret, so that a module is authenticated by default."""
        try:
            return bytes.fromhex(self.paths.module_key(name).read_text().strip())
        except FileNotFoundError:
            pass
        except ValueError:
            raise ModuleError(f"{self.paths.module_key(name)} is not a hexadecimal key") from None
        try:
            secret = self.paths.cluster_secret.read_bytes()
        except FileNotFoundError:
            raise ModuleError(
                f"module {name} has no key and this node has no cluster secret: run "
                "'hakit cluster config' (and 'hakit -H \"*\" -G'), or 'hakit module genkey -m "
                f"{name}' then 'hakit -H \"node1,node2\" -E {name}'"
            ) from None
        return hmac.new(secret, f"module:{name}".encode(), hashlib.sha256).digest()

    def genkey(self, name: str) -> None:
        self.require(name)
        path = self.paths.module_key(name)
        write_atomic(path, (secrets.token_hex(32) + "\n").encode(), 0o600)

    def nodes(self, name: str, cluster_nodes: list[str]) -> list[str]:
        """Nodes the module runs on: as configured by -E, else every node of cluster.xml."""
        try:
            listed = [n.strip() for n in self.paths.module_nodes(name).read_text().split()]
        except FileNotFoundError:
            return list(cluster_nodes)
        unknown = [n for n in listed if n not in cluster_nodes]
        if unknown:
            raise ModuleError(
                f"module {name} is configured on {', '.join(unknown)}, not in cluster.xml"
            )
        return listed

    def set_nodes(self, name: str, nodes: list[str]) -> None:
        self.require(name)
        self.paths.module_nodes(name).write_text("".join(f"{n}\n" for n in nodes))

    def listing(self) -> list[Installed]:
        out = []
        for name in self.names():
            try:
                mode: str | None = self.config(name).service.mode
            except HakitError:
                mode = None
            out.append(Installed(name, self.module_id(name), mode))
        return out

    def config(self, name: str) -> ModuleConfig:
        cluster = None
        if self.paths.cluster_xml.exists():
            try:
                cluster = load_cluster(self.paths.cluster_xml)
            except ConfigInvalid:
                cluster = None
        return load_module(self.paths.module_conf(name), cluster)

    def install(self, source: str, name: str, module_id: int | None = None) -> Installed:
        check_name(name)
        if self.exists(name):
            raise ModuleError(f"module {name} is already installed; uninstall it first")
        used = {self.module_id(n) for n in self.names()}
        if module_id is None:
            module_id = next(i for i in range(1, MAX_ID + 1) if i not in used)
        elif not 1 <= module_id <= MAX_ID:
            raise UsageError(f"module id must be between 1 and {MAX_ID}")
        elif module_id in used:
            raise ModuleError(f"module id {module_id} is already used on this node")
        archive = _resolve_archive(source)
        self.paths.modules.mkdir(parents=True, exist_ok=True)
        # Unpack and validate beside the final place, then rename: a bad archive leaves nothing.
        with tempfile.TemporaryDirectory(dir=self.paths.modules, prefix=".install-") as tmp:
            staged = Path(tmp) / name
            unpack(archive, staged)
            try:
                mode = load_module(staged / "conf" / "userconfig.xml").service.mode
            except ConfigInvalid as exc:
                raise ModuleError(f"{archive} is not installable:\n{exc}") from None
            (staged / "id").write_text(f"{module_id}\n")
            staged.rename(self.paths.module_dir(name))
        for d in (self.paths.module_var(name), self.paths.module_log(name)):
            d.mkdir(parents=True, exist_ok=True)
        return Installed(name, module_id, mode)

    def uninstall(self, name: str) -> Path:
        """Remove a module, keeping its configuration as a .safe in the backup directory."""
        self.require(name)
        backup = private_dir(self.paths.backup) / f"{name}_{time.strftime('%Y%m%dT%H%M%S')}.safe"
        pack(self.paths.module_dir(name), backup)
        shutil.rmtree(self.paths.module_dir(name))
        shutil.rmtree(self.paths.module_var(name), ignore_errors=True)
        return backup

    def package(self, name: str, out: Path) -> None:
        self.require(name)
        pack(self.paths.module_dir(name), out)
