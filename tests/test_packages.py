"""The packages `make packages` builds (make test builds them first): what lintian, rpmlint
and systemd-analyze say of them, and what they install, run on their own: the .deb and
the RPM are each unpacked into a scratch root whose files, and only they, run a 2-node
mirror in the simulated cluster (their /usr/lib/hakit in every node, hakitd and hakit
their launchers)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from tests.cluster import state_of
from tests.helpers import make_module, node_pids, wait_for

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "build" / "pkg"
MODULE = "am"
REP = "/srv/rep"
CONF = f"""<!DOCTYPE safe>
<safe>
  <service mode="mirror">
    <heart><heartbeat name="default"/></heart>
    <rfs><replicated dir="{REP}"/></rfs>
    <user/>
  </service>
</safe>
"""


def package(kind: str) -> Path:
    found = sorted(PKG.glob("hakit_*_amd64.deb" if kind == "deb" else "hakit-*.x86_64.rpm"))
    assert found, f"no {kind} package in {PKG}: 'make packages' builds them"
    return found[-1]


def unpack(kind: str, into: Path) -> Path:
    into.mkdir()
    if kind == "deb":
        subprocess.run(["dpkg-deb", "-x", str(package(kind)), str(into)], check=True)
    else:
        rpm = subprocess.run(["rpm2cpio", str(package(kind))], check=True, capture_output=True).stdout
        subprocess.run(["cpio", "-idm", "--quiet"], input=rpm, cwd=into, check=True)
    return into


@pytest.fixture(scope="module", params=["deb", "rpm"])
def installed(request, tmp_path_factory) -> Path:
    return unpack(request.param, tmp_path_factory.mktemp(request.param) / "root")


def test_lintian_finds_no_error():
    run = subprocess.run(["lintian", "--allow-root", str(package("deb"))], capture_output=True, text=True)
    errors = [line for line in run.stdout.splitlines() if line.startswith("E:")]
    assert not errors and run.returncode == 0, run.stdout + run.stderr


def test_rpmlint_finds_no_error():
    run = subprocess.run(["rpmlint", "-c", str(ROOT / "packaging/rpm/rpmlint.toml"), str(package("rpm"))],
                         capture_output=True, text=True)
    assert " 0 errors," in run.stdout, run.stdout + run.stderr


def test_the_unit_passes_systemd_analyze_verify(installed, tmp_path):
    """verify checks that ExecStart exists here: the unpacked launcher stands in for it."""
    unit = (installed / "usr/lib/systemd/system/hakitd.service").read_text()
    assert re.search(r"^Type=notify$", unit, re.M) and "After=network-online.target" in unit
    (tmp_path / "hakitd.service").write_text(
        unit.replace("ExecStart=/usr/sbin/hakitd", f"ExecStart={installed}/usr/sbin/hakitd"))
    run = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "hakitd.service")],
                         capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


def test_the_file_list_is_the_layout_docs_describe(installed):
    site = next((installed / "usr/lib/hakit/lib").glob("python3.*/site-packages"))
    for path in ("usr/bin/hakit", "usr/sbin/hakitd", "usr/lib/hakit/bin/python3", "usr/lib/hakit/pyvenv.cfg",
                 "usr/lib/hakit/bin/safekit", "usr/lib/hakit/bin/exitcode", "usr/lib/hakit/bin/hakit",
                 "usr/lib/systemd/system/hakitd.service", "usr/share/doc/hakit/README.md"):
        assert (installed / path).exists() or (installed / path).is_symlink(), path
    for path in ("hakit/libexec/hakit-rfs", "hakit/ebpf/farm_lb.bpf.o", "hakit/templates/mirror.safe",
                 "msgpack", "uvloop", "pyroute2", "cryptography", "re2", "ldap3"):
        assert (site / path).exists(), path
    assert os.readlink(installed / "usr/lib/hakit/bin/python3") == "/usr/bin/python3"
    for state in ("var/lib/hakit", "var/log/hakit"):
        assert stat.S_IMODE((installed / state).stat().st_mode) == 0o700
    # Nothing names the directory the packages were built in.
    built = str(PKG)
    for f in (installed / "usr").rglob("*"):
        if f.is_file() and not f.is_symlink() and f.stat().st_size < (1 << 20):
            assert built.encode() not in f.read_bytes(), f


NODE_DATA = {  # what a node holds besides the program: it must outlive upgrades and removal
    "etc/hakit/cluster.xml": "<cluster/>\n",
    "etc/hakit/pki/node.key": "a key\n",
    "etc/hakit/modules/am/conf/userconfig.xml": "<safe/>\n",
    "var/lib/hakit/node.db": "commands\n",
    "var/lib/hakit/modules/am/state.db": "resources\n",
    "var/log/hakit/hakitd.out": "log\n",
}


def newer(kind: str, into: Path) -> Path:
    """The staged tree packaged again as version 0.1.1: an upgrade of what make built."""
    into.mkdir()
    if kind == "deb":
        out = into / "hakit_0.1.1-1_amd64.deb"
        subprocess.run([str(ROOT / "packaging/debian/build.sh"), str(PKG / "root"), "0.1.1", str(out)],
                       check=True)
        return out
    subprocess.run([str(ROOT / "packaging/rpm/build.sh"), str(PKG / "root"), "0.1.1", str(into)], check=True)
    return next(into.glob("*.rpm"))


@pytest.mark.root
@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_an_upgrade_keeps_the_nodes_data_and_only_a_purge_removes_it(kind, tmp_path):
    root = tmp_path / "root"
    if kind == "deb":
        # Into a root of its own, with its own database; the maintainer scripts run here
        # with DPKG_ROOT set, as dpkg does for such an installation.
        (root / "var/lib/dpkg/info").mkdir(parents=True)
        (root / "var/lib/dpkg/updates").mkdir()
        (root / "var/lib/dpkg/status").touch()
        tool = ["dpkg", f"--root={root}", "--force-depends", "--force-script-chrootless", "--log=/dev/null"]
        install, upgrade, remove = [*tool, "-i"], [*tool, "-i"], [*tool, "--remove", "hakit"]
        version = ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Version}", "hakit"]
    else:
        # rpm would run its scriptlets chrooted into the root, which has no shell: without them.
        tool = ["rpm", f"--root={root}", "--nodeps", "--noscripts"]
        subprocess.run(["rpm", f"--root={root}", "--initdb"], check=True)
        install, upgrade, remove = [*tool, "-i"], [*tool, "-U"], [*tool, "-e", "hakit"]
        version = ["rpm", f"--root={root}", "-q", "--qf", "%{VERSION}-%{RELEASE}", "hakit"]
    subprocess.run([*install, str(package(kind))], check=True, capture_output=True)
    assert (root / "usr/bin/hakit").exists()
    for path, text in NODE_DATA.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    subprocess.run([*upgrade, str(newer(kind, tmp_path / "newer"))], check=True, capture_output=True)
    assert subprocess.run(version, check=True, capture_output=True, text=True).stdout == "0.1.1-1"
    assert all((root / path).read_text() == text for path, text in NODE_DATA.items())
    subprocess.run(remove, check=True, capture_output=True)
    assert not (root / "usr/bin/hakit").exists() and not (root / "usr/lib/hakit/bin/python3").exists()
    assert all((root / path).read_text() == text for path, text in NODE_DATA.items())
    if kind == "deb":
        subprocess.run([*tool, "--purge", "hakit"], check=True, capture_output=True)
        assert not any((root / top).exists() for top in ("etc/hakit", "var/lib/hakit", "var/log/hakit"))


@pytest.mark.root
def test_the_firewall_rules_load(installed, tmp_path):
    ruleset = tmp_path / "node.nft"
    ruleset.write_text("table inet hakit_pkg_test {\n chain input {\n  type filter hook input priority 0;\n"
                       f'  include "{installed}/usr/share/hakit/firewall/hakit.nft"\n }}\n}}\n')
    run = subprocess.run(["nft", "-c", "-f", str(ruleset)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    service = ET.parse(installed / "usr/lib/firewalld/services/hakit.xml").getroot()
    assert {(p.get("protocol"), p.get("port")) for p in service.iter("port")} == {
        ("tcp", "9010"), ("udp", "9301-9555"), ("tcp", "10016-14095")}


@pytest.mark.root
def test_a_mirror_of_the_packaged_files_replicates_and_fails_over(make_sim, installed, tmp_path):
    sim = make_sim(nodes=2, daemon=True, paths=(REP,), daemon_argv=[str(installed / "usr/sbin/hakitd")],
                   shared={"/usr/lib/hakit": str(installed / "usr/lib/hakit")})
    status = {n.name: n for n in sim.status().nodes}
    daemon = Path(f"/proc/{status['node1'].daemon_pid}/cmdline").read_bytes().split(b"\0")
    assert daemon[:4] == [b"/usr/lib/hakit/bin/python3", b"-I", b"-m", b"hakit.node.daemon"], daemon

    def hakit(node: str, *args: str) -> str:
        run = sim.exec(node, [str(installed / "usr/bin/hakit"), *args], check=False)
        assert run.returncode == 0, f"{node}: hakit {' '.join(args)}: {run.stderr}"
        return run.stdout

    def state(node: str) -> str:
        return state_of(hakit(node, "state", "-m", MODULE))

    # A script written for SafeKit: $SAFE is the package's, and its safekit does the work.
    start = '#!/bin/sh\n$SAFE/safekit printi "started from $SAFE"\n$SAFEBIN/exitcode 0\n'
    archive = make_module(tmp_path / MODULE, CONF, {"start_prim": start})
    for node in ("node1", "node2"):
        hakit(node, "module", "install", "-m", MODULE, "-M", "7", str(archive))
    hakit("node1", "prim", "-m", MODULE)
    hakit("node2", "start", "-m", MODULE)
    wait_for("node2 SECOND (Ready)", lambda: state("node2") == "SECOND (Ready)", timeout=30)
    rfs = node_pids(sim, "node1", "hakit-rfs")
    assert rfs and all(os.readlink(f"/proc/{p}/exe").startswith("/usr/lib/hakit/") for p in rfs)
    assert "started from /usr/lib/hakit/bin" in hakit("node1", "logview", "-m", MODULE, "-A")
    sim.exec("node1", ["sh", "-c", f"echo replicated > {REP}/file && sync {REP}/file"])
    copy = sim.host_path("node2", REP) / "file"
    wait_for("the file on node2", lambda: copy.exists() and copy.read_text() == "replicated\n", timeout=30)
    sim.kill("node1")
    wait_for("node2 ALONE (Ready)", lambda: state("node2") == "ALONE (Ready)", timeout=30)
    assert (sim.host_path("node2", REP) / "file").read_text() == "replicated\n"
