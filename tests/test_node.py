"""hakitd, the CLI talking to it, module scripts and their logs (one node, real processes)."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import pytest

from hakit.paths import Paths
from hakit.store.module_store import Level, ModuleStore
from tests.helpers import hakit, make_module, running_daemon
from tests.leaks import run_loop
from tests.light_module import LIGHT, SCRIPTS


@pytest.fixture
def node(tmp_path: Path) -> tuple[dict[str, str], Paths]:
    """A node whose standard paths are relocated under tmp_path with HAKIT_ROOT."""
    root = tmp_path / "root"
    env = dict(os.environ, HAKIT_ROOT=str(root))
    return env, Paths(root / "etc/hakit", root / "var/lib/hakit", root / "var/log/hakit", root / "run/hakit")


def test_commands_needing_the_daemon_say_it_is_not_running(node, tmp_path):
    env, _p = node
    archive = make_module(tmp_path, LIGHT, SCRIPTS)
    hakit("module", "install", "-m", "app", str(archive), env=env, check=True)
    run = hakit("start", "-m", "app", env=env)
    assert run.returncode == 3
    assert "hakitd is not running" in run.stderr
    assert "Traceback" not in run.stderr


def test_light_module_runs_its_scripts_with_logs_and_history(node, tmp_path):
    env, p = node
    archive = make_module(tmp_path, LIGHT, SCRIPTS)
    hakit("module", "install", "-m", "app", str(archive), env=env, check=True)
    with running_daemon(env, p.run):
        started = hakit("start", "-m", "app", env=env, check=True)
        assert "ALONE (Ready)" in started.stdout
        state = hakit("state", "-m", "app", env=env, check=True)
        assert "ALONE (Ready)" in state.stdout

        # Each script run has its own log, named after the script, holding its output.
        ulog = next(p.module_log("app").glob("userlog_*_start_prim.ulog"))
        assert "output of start_prim: hello from start_prim" in ulog.read_text()
        prestart = next(p.module_log("app").glob("userlog_*_prestart.ulog"))
        assert prestart.read_text() == "prestart ran\n"

        # printi reaches logview with -I, not without (I is a support level).
        assert "printi from start_prim in app" in hakit("logview", "-m", "app", "-I", env=env).stdout
        default_view = hakit("logview", "-m", "app", env=env).stdout
        assert "printi from start_prim" not in default_view
        assert "Script start_prim" in default_view

        stopped = hakit("stop", "-m", "app", env=env, check=True, timeout=60)
        assert "STOP (NotReady)" in stopped.stdout

    store = ModuleStore(p.module_db("app"))
    history = [v for _at, v in store.history("module.state")]
    assert history == ["WAIT", "ALONE", "STOP"]
    full_log = [line.message for line in store.logs()]
    assert any("stop_prim killed after 2 s" in m for m in full_log)
    poststop = next(p.module_log("app").glob("userlog_*_poststop.ulog"))
    assert "poststop" in poststop.read_text()

    cmdlog = hakit("cmdlog", env=env, check=True).stdout
    assert "hakit start -m app" in cmdlog and "hakit stop -m app" in cmdlog
    assert "hakit module install -m app" in cmdlog


def test_a_running_module_keeps_its_store_within_its_retention(node, tmp_path):
    """Three days old: kept by default (30 days), deleted once the module with
    <retention age="2d"> runs and writes."""
    env, p = node
    config = LIGHT.replace('<service mode="light">', '<service mode="light">\n    <retention age="2d"/>')
    hakit("module", "install", "-m", "app", str(make_module(tmp_path, config, SCRIPTS)), env=env, check=True)
    store = ModuleStore(p.module_db("app"))
    store.log(Level.EVENT, "test", "three days ago", at=time.time() - 3 * 86400)
    store.log(Level.EVENT, "test", "yesterday", at=time.time() - 86400)
    store.close()
    with running_daemon(env, p.run):
        hakit("start", "-m", "app", env=env, check=True)
        hakit("stop", "-m", "app", env=env, check=True, timeout=60)
    lines = [line.message for line in ModuleStore(p.module_db("app")).logs()]
    assert "yesterday" in lines and "three days ago" not in lines


def test_mirror_start_without_cluster_configuration_is_refused_clearly(node, tmp_path):
    env, p = node
    hakit("module", "install", "-m", "mir", "mirror.safe", env=env, check=True)
    with running_daemon(env, p.run):
        run = hakit("start", "-m", "mir", env=env)
    assert run.returncode == 1
    assert "did not start" in run.stderr and "cluster.xml" in run.stderr
    assert "cluster.xml" in hakit("logview", "-m", "mir", env=env).stdout


def test_daemon_survives_a_peer_speaking_garbage(node):
    env, p = node
    with running_daemon(env, p.run) as proc:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(p.daemon_socket))
            s.sendall(struct.pack(">I", 0xFFFFFF00) + b"junk")
            reply = s.recv(4096)
        assert b"limit" in reply
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(p.daemon_socket))
            s.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
            assert b"malformed" in s.recv(4096)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(p.daemon_socket))
            s.sendall(struct.pack(">I", 4) + b"\x81\x91\x01\x02")  # {[1]: 2}: an unhashable key
            assert b"malformed" in s.recv(4096)
        assert proc.poll() is None
        assert hakit("state", "-m", "nope", env=env).returncode != 0


def test_nothing_planted_where_hakitd_started_is_imported(node, tmp_path):
    """A user's directory hakitd happens to be started from: modules planted there must
    not be imported by it or by the Python children it starts as root."""
    env, p = node
    planted = tmp_path / "planted"
    planted.mkdir()
    root = env["HAKIT_ROOT"]
    env = dict(env, HAKIT_ROOT=os.path.relpath(root, planted))  # a relative root is kept
    marker = tmp_path / "imported"
    for name in ("shlex", "json", "argparse", "fnmatch"):
        (planted / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n")
    archive = make_module(tmp_path, LIGHT, SCRIPTS)
    cli = dict(env, HAKIT_ROOT=root)
    hakit("module", "install", "-m", "app", str(archive), env=cli, check=True)
    with running_daemon(env, p.run, cwd=planted) as proc:
        assert os.readlink(f"/proc/{proc.pid}/cwd") == "/"
        started = hakit("start", "-m", "app", env=cli, check=True)
        assert "ALONE (Ready)" in started.stdout
        hakit("stop", "-m", "app", env=cli, check=True, timeout=60)
    assert not marker.exists(), marker.read_text()


def test_the_remote_command_runner_imports_nothing_from_its_directory(tmp_path, monkeypatch):
    """`hakit -H` runs the command through run_cli, as root: its directory is no import path."""

    from hakit.node.remote_ops import run_cli

    marker = tmp_path / "imported"
    for name in ("shlex", "json", "argparse"):
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n")
    monkeypatch.chdir(tmp_path)
    result = run_loop(run_cli({"argv": ["level"]}, "root@test"))
    assert result["code"] == 0, result
    assert not marker.exists(), marker.read_text()
