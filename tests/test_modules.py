"""Module packages: install, uninstall with backup, ids, package, shipped templates."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from tests.helpers import hakit, make_module

GOOD = '<safe><service mode="light"><user/></service></safe>\n'


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, HAKIT_ROOT=str(tmp_path / "root"))


def test_install_list_package_uninstall_round_trip(env, tmp_path):
    root = Path(env["HAKIT_ROOT"])
    archive = make_module(tmp_path, GOOD, {"start_prim": "#!/bin/sh\necho hi\n"})
    hakit("module", "install", "-m", "app", "-M", "7", str(archive), env=env, check=True)
    installed = root / "etc/hakit/modules/app"
    assert (installed / "conf/userconfig.xml").read_text() == GOOD
    assert os.access(installed / "bin/start_prim", os.X_OK)

    assert hakit("module", "listid", env=env, check=True).stdout == "app\t7\n"
    assert hakit("module", "list", env=env, check=True).stdout == "app\tlight\n"

    # The id is taken, and so is the name.
    clash = hakit("module", "install", "-m", "other", "-M", "7", str(archive), env=env)
    assert clash.returncode == 1 and "id 7 is already used" in clash.stderr
    again = hakit("module", "install", "-m", "app", str(archive), env=env)
    assert again.returncode == 1 and "already installed" in again.stderr

    out = tmp_path / "out.safe"
    hakit("module", "package", "-m", "app", str(out), env=env, check=True)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["bin/start_prim", "conf/userconfig.xml"]

    done = hakit("module", "uninstall", "-m", "app", env=env, check=True)
    assert not installed.exists()
    backups = list((root / "var/lib/hakit/backup").glob("app_*.safe"))
    assert len(backups) == 1 and str(backups[0]) in done.stdout
    # The backup reinstalls to the same module.
    hakit("module", "install", "-m", "app", str(backups[0]), env=env, check=True)
    assert (installed / "conf/userconfig.xml").read_text() == GOOD
    assert (installed / "bin/start_prim").read_text() == "#!/bin/sh\necho hi\n"


def test_bad_archives_are_refused_and_leave_nothing(env, tmp_path):
    root = Path(env["HAKIT_ROOT"])
    bad_config = make_module(tmp_path / "a", '<safe><service mode="mirorr"/></safe>', {})
    run = hakit("module", "install", "-m", "app", str(bad_config), env=env)
    assert run.returncode == 1
    assert "userconfig.xml:1: <service mode>: 'mirorr' is not one of mirror, farm, light" in run.stderr

    evil = tmp_path / "evil.safe"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("conf/userconfig.xml", GOOD)
        zf.writestr("../../etc/passwd-hakit", "x")
    run = hakit("module", "install", "-m", "app", str(evil), env=env)
    assert run.returncode == 1 and "refusing member" in run.stderr

    garbage = tmp_path / "garbage.safe"
    garbage.write_bytes(os.urandom(512))
    run = hakit("module", "install", "-m", "app", str(garbage), env=env)
    assert run.returncode == 1 and "not a .safe archive" in run.stderr

    for r in (run,):
        assert "Traceback" not in r.stderr
    assert not (root / "etc/hakit/modules/app").exists()
    assert list((root / "etc/hakit/modules").iterdir()) == []
    assert hakit("module", "install", "-m", "bad/name", str(garbage), env=env).returncode == 2
    assert hakit("module", "uninstall", "-m", "ghost", env=env).returncode == 1


@pytest.mark.parametrize("template", ["mirror.safe", "farm.safe", "softerrd.safe", "customchecker.safe"])
def test_shipped_templates_install(env, template):
    name = template.removesuffix(".safe")
    hakit("module", "install", "-m", name, template, env=env, check=True)
    bindir = Path(env["HAKIT_ROOT"]) / "etc/hakit/modules" / name / "bin"
    assert all(os.access(p, os.X_OK) for p in bindir.iterdir())


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _patched(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))
    return path


def test_every_damaged_or_hostile_archive_is_a_clean_error(env, tmp_path):
    """Each gives one line saying what is wrong, no traceback, and installs nothing."""
    root = Path(env["HAKIT_ROOT"])
    fifo = tmp_path / "fifo.safe"
    os.mkfifo(fifo)
    many = _zip(tmp_path / "many.safe", {"conf/userconfig.xml": GOOD.encode(),
                                         **{f"bin/s{i}": b"" for i in range(5000)}})
    bomb = _zip(tmp_path / "bomb.safe", {"conf/userconfig.xml": GOOD.encode(),
                                         **{f"bin/z{i}": b"\0" * (60 << 20) for i in range(5)}},
                zipfile.ZIP_DEFLATED)
    # A member under a compression method zipfile lacks (99: WinZip's AES), as the central
    # directory says (its method field is 10 bytes into the entry).
    unsupported = _zip(tmp_path / "method.safe", {"conf/userconfig.xml": GOOD.encode()})
    data = bytearray(unsupported.read_bytes())
    entry = data.index(b"PK\x01\x02")
    data[entry + 10:entry + 12] = (99).to_bytes(2, "little")
    unsupported.write_bytes(bytes(data))
    crc = _zip(tmp_path / "crc.safe", {"conf/userconfig.xml": GOOD.encode()})
    crc = _patched(crc, b"<service", b"<servicE")
    file_for_dir = _zip(tmp_path / "clash.safe", {"conf/userconfig.xml": GOOD.encode(), "bin/x": b"",
                                                  "bin/x/y": b""})
    cases = {
        fifo: "not a regular file",
        many: "more than 4096",
        bomb: "MiB once unpacked",
        unsupported: "damaged or unsupported member",
        crc: "damaged or unsupported member",
        file_for_dir: "a file where a directory is expected",
    }
    for archive, message in cases.items():
        run = hakit("module", "install", "-m", "app", str(archive), env=env, timeout=30)
        assert run.returncode == 1 and message in run.stderr, (archive.name, run.stderr)
        assert "Traceback" not in run.stderr
    assert list((root / "etc/hakit/modules").iterdir()) == []


def test_a_template_name_is_the_shipped_template_whatever_the_directory_holds(env, tmp_path):
    """A user's own mirror.safe in the directory root works from is not installed in
    place of the template; ./mirror.safe (a path) still names that file."""
    planted = make_module(tmp_path / "planted", GOOD, {"start_prim": "#!/bin/sh\necho planted\n"})
    (tmp_path / "mirror.safe").write_bytes(planted.read_bytes())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        hakit("module", "install", "-m", "tpl", "mirror.safe", env=env, check=True)
        hakit("module", "install", "-m", "mine", "./mirror.safe", env=env, check=True)
    finally:
        os.chdir(cwd)
    listed = hakit("module", "list", env=env, check=True).stdout.split("\n")
    assert "tpl\tmirror" in listed and "mine\tlight" in listed
