"""What hakit writes is readable by root alone where it holds secrets or history: module
keys (unpacked, generated, packed into archives and backups), stores, logs, and their
directories (issue 13: local users must not get secrets)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hakit.config.safe_archive import pack
from hakit.paths import Paths
from tests.helpers import hakit, running_daemon
from tests.light_module import LIGHT, SCRIPTS


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_stores_and_logs_are_not_world_readable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = dict(os.environ, HAKIT_ROOT=str(root))
    p = Paths(root / "etc/hakit", root / "var/lib/hakit", root / "var/log/hakit", root / "run/hakit")
    src = tmp_path / "src"
    (src / "conf").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "conf" / "userconfig.xml").write_text(LIGHT)
    (src / "conf" / "key").write_text("ab" * 32 + "\n")
    for name, body in SCRIPTS.items():
        (src / "bin" / name).write_text(body)
        (src / "bin" / name).chmod(0o755)
    archive = tmp_path / "app.safe"
    pack(src, archive)
    assert mode(archive) == 0o600  # it carries the key

    hakit("module", "install", "-m", "app", str(archive), env=env, check=True)
    assert mode(p.module_key("app")) == 0o600
    assert mode(p.module_dir("app") / "bin" / "start_prim") == 0o755
    hakit("module", "genkey", "-m", "app", env=env, check=True)
    assert mode(p.module_key("app")) == 0o600
    assert not list(p.module_key("app").parent.glob(".key.*"))  # no temporary left

    with running_daemon(env, p.run):
        hakit("start", "-m", "app", env=env, check=True)
        hakit("stop", "-m", "app", env=env, check=True, timeout=60)
    assert mode(p.lib) == 0o700 and mode(p.log) == 0o700
    assert mode(p.module_db("app")) == 0o600
    assert mode(p.node_db) == 0o600  # the commands log
    ulogs = list(p.module_log("app").glob("userlog_*.ulog"))
    assert ulogs and all(mode(u) == 0o600 for u in ulogs)

    packaged = tmp_path / "out.safe"
    hakit("module", "package", "-m", "app", str(packaged), env=env, check=True)
    assert mode(packaged) == 0o600
    out = hakit("module", "uninstall", "-m", "app", env=env, check=True).stdout
    backup = Path(out.rsplit("backup in ", 1)[1].strip())
    assert mode(backup) == 0o600 and mode(p.backup) == 0o700
