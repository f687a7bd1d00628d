"""hakit-rfs's stream security through the real daemons on this host: the options, and a
primary and a secondary (both on 127.0.0.1) with the module key and TLS from hakit's own
PKI (hakit.node.pki), as a module starts them.  The exchange itself, and every kind of
refused peer, are tested in C (native/rfs/tests/test_rfs_chan.c, tests/test_rfs_stream.py).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from hakit.node import pki
from hakit.paths import Paths
from hakit.rfs.daemon import rfs_binary
from hakit.runtime import credentials
from tests.rfs_local import free_port

pytestmark = pytest.mark.root


def cluster_pki(root: Path, nodes: list[str]) -> dict[str, list[str]]:
    """A CA under root and one node certificate per name: node -> its SECURITY options."""
    p = Paths(etc=root / "etc", lib=root / "lib", log=root / "log", run=root / "run")
    pki.create_ca(p)
    options = {}
    for node in nodes:
        creds = pki.issue(p, node, ["127.0.0.1"])
        pki.write_private(root / f"{node}.key", creds.key_pem)
        (root / f"{node}.crt").write_bytes(creds.cert_pem)
        options[node] = ["--tls-cert", str(root / f"{node}.crt"), "--tls-key", str(root / f"{node}.key"),
                         "--tls-ca", str(credentials.ca_cert_path(p))]
    return options


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, list[str]]:
    """node1, node2 of the cluster, and an intruder whose certificate is of another CA
    (it trusts the cluster's), each with the module key."""
    key = tmp_path / "module.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    options = cluster_pki(tmp_path / "cluster", ["node1", "node2"])
    options["intruder"] = [*cluster_pki(tmp_path / "other", ["intruder"])["intruder"][:4],
                           *options["node1"][4:]]
    return {node: [*opts, "--auth-key-file", str(key)] for node, opts in options.items()}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logged(log: Path, *parts: str) -> bool:
    """Whether one line of log holds every part; a daemon logs from its own threads,
    so the line may come a moment after the answer."""
    deadline = time.monotonic() + 5
    while not any(all(p in line for p in parts) for line in log.read_text().splitlines()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_tls_pair_replicates_and_refuses_another_ca(rfs, base: Path, creds):
    port = free_port()
    secondary = rfs("secondary", "sec", "--listen", f"127.0.0.1:{port}", *creds["node2"])
    intruder = rfs("primary", "bad", *creds["intruder"])
    assert intruder.cmd(f"attach 127.0.0.1 {port}") == f"error attach 127.0.0.1 {port}: Permission denied"
    assert logged(secondary.log, "refused the connection from 127.0.0.1:", "its certificate is refused")
    assert logged(intruder.log, f"attach 127.0.0.1:{port}: it refused this node's certificate")
    primary = rfs("primary", "pri", "--nbremconn", "3", *creds["node1"])
    assert primary.cmd(f"attach 127.0.0.1 {port}") == "ok"
    (base / "pri" / "dir").mkdir()
    data = os.urandom(8 << 20)
    with open(base / "pri" / "dir" / "big", "wb") as f:
        for i in range(0, len(data), 1 << 20):
            f.write(data[i:i + (1 << 20)])
        os.fsync(f.fileno())
    for i in range(50):
        (base / "pri" / "dir" / f"small{i}").write_text(f"small file {i}\n")
    assert primary.stop() == 0 and secondary.stop() == 0
    assert digest(base / "sec" / "dir" / "big") == hashlib.sha256(data).hexdigest()
    assert [(base / "sec" / "dir" / f"small{i}").read_text() for i in range(50)] == \
        [f"small file {i}\n" for i in range(50)]


@pytest.mark.parametrize(("extra", "message"), [
    (["--auth-key-file", "{tmp}/missing"], "--auth-key-file {tmp}/missing: No such file or directory"),
    (["--auth-key-file", "{tmp}/short.key"], "not a 32-byte key in hexadecimal"),
    (["--tls-cert", "{tmp}/cluster/node1.crt"], "--tls-cert, --tls-key and --tls-ca go together"),
    (["--tls-cert", "{tmp}/cluster/node1.crt", "--tls-key", "{tmp}/cluster/node2.key",
      "--tls-ca", "{tmp}/cluster/etc/pki/ca.crt"], "is not the key of --tls-cert"),
    (["--tls-cert", "{tmp}/cluster/node1.crt", "--tls-key", "{tmp}/cluster/node1.key",
      "--tls-ca", "{tmp}/short.key"], "--tls-ca {tmp}/short.key:"),
])
@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_unusable_credentials_give_one_clear_line(tmp_path: Path, creds, role: str, extra: list[str],
                                                  message: str):
    (tmp_path / "short.key").write_text("0011aabb\n")
    (tmp_path / "d").mkdir()
    argv = [str(rfs_binary()), role, "--dir", str(tmp_path / "d"), "--ctl", str(tmp_path / "s"),
            *(["--listen", "127.0.0.1:1"] if role == "secondary" else []),
            *(a.format(tmp=tmp_path) for a in extra)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    lines = run.stderr.splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith("hakit-rfs: ") and message.format(tmp=tmp_path) in lines[0], run.stderr


def _status(pid: int, key: str) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(key + ":"))
    return int(line.split()[1])


def test_connections_that_prove_nothing_cannot_exhaust_the_receiver(rfs, base: Path, creds):
    """200 connections that send nothing: the receiver holds a thread for at most 16 of
    them while they have to prove the module key (and allocates frame buffers only for
    those that did), and serves a primary once they are gone."""
    import socket

    port = free_port()
    secondary = rfs("secondary", "sec", "--listen", f"127.0.0.1:{port}", *creds["node2"])
    pid = secondary.proc.pid
    threads = _status(pid, "Threads")
    flood = []
    try:
        for _ in range(200):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        assert _status(pid, "Threads") <= threads + 16 + 2, _status(pid, "Threads")
        assert logged(secondary.log, "refusing the connection from 127.0.0.1:", "proving themselves already")
    finally:
        for s in flood:
            s.close()
    primary = rfs("primary", "pri", *creds["node1"])
    deadline = time.monotonic() + 15
    while (reply := primary.cmd(f"attach 127.0.0.1 {port}")) != "ok":
        assert time.monotonic() < deadline, reply
        time.sleep(0.2)
    (base / "pri" / "dir").mkdir()
    (base / "pri" / "dir" / "after").write_text("served\n")
    assert primary.stop() == 0 and secondary.stop() == 0
    assert (base / "sec" / "dir" / "after").read_text() == "served\n"
