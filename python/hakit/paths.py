"""Where hakit keeps its files.

The four standard roots can all be moved under one prefix with HAKIT_ROOT (tests,
packaging, a second instance on a workstation).  Inside a simulated cluster node
every node sees the standard paths, bind-mounted from its own directories.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "HAKIT_ROOT"


@dataclass(frozen=True)
class Paths:
    etc: Path  # configuration: cluster.xml, installed modules
    lib: Path  # state: SQLite stores, backups, keys
    log: Path  # logs: per-run script logs
    run: Path  # sockets and pid files

    @classmethod
    def from_env(cls) -> Paths:
        root = Path(os.environ.get(ROOT_ENV, "/"))
        return cls(
            etc=root / "etc/hakit",
            lib=root / "var/lib/hakit",
            log=root / "var/log/hakit",
            run=root / "run/hakit",
        )

    # -- cluster-wide files
    @property
    def cluster_xml(self) -> Path:
        return self.etc / "cluster.xml"

    @property
    def modules(self) -> Path:
        return self.etc / "modules"

    @property
    def backup(self) -> Path:
        return self.lib / "backup"

    @property
    def node_db(self) -> Path:
        return self.lib / "node.db"

    @property
    def pki(self) -> Path:
        """Cluster credentials: CA certificate, this node's key and certificate, cluster secret."""
        return self.etc / "pki"

    @property
    def cluster_secret(self) -> Path:
        return self.pki / "cluster.secret"

    @property
    def web_users(self) -> Path:
        """Console and API users: scrypt hashes of passwords, hashes of tokens (0600)."""
        return self.etc / "web" / "users.json"

    @property
    def daemon_socket(self) -> Path:
        return self.run / "hakitd.sock"

    @property
    def daemon_pidfile(self) -> Path:
        return self.run / "hakitd.pid"

    # -- one module
    def module_dir(self, module: str) -> Path:
        return self.modules / module

    def module_conf(self, module: str) -> Path:
        return self.module_dir(module) / "conf" / "userconfig.xml"

    def module_bin(self, module: str) -> Path:
        return self.module_dir(module) / "bin"

    def module_key(self, module: str) -> Path:
        """Made by 'hakit module genkey'; inside the module directory so it travels with -E."""
        return self.module_dir(module) / "conf" / "key"

    def module_nodes(self, module: str) -> Path:
        """Nodes the module is configured on (written by -E), one name per line."""
        return self.module_dir(module) / "conf" / "nodes"

    def module_var(self, module: str) -> Path:
        return self.lib / "modules" / module

    def module_db(self, module: str) -> Path:
        return self.module_var(module) / "state.db"

    def module_log(self, module: str) -> Path:
        return self.log / "modules" / module

    def module_socket(self, module: str) -> Path:
        return self.run / "modules" / f"{module}.sock"

    def ensure(self) -> None:
        """The directories; those of stores, keys, backups and logs only root enters."""
        for d in (self.etc, self.modules, self.run):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.lib, self.backup, self.log):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            d.chmod(0o700)


def paths() -> Paths:
    return Paths.from_env()
