"""Inter-node operations: the cluster PKI, RPC over mutual TLS, and `hakit -H` / `-G` / `-E`.

The PKI tests are pure; the rest run in one simulated cluster of 3 nodes (real namespaces,
real hakitd on each node) whose credentials the harness bootstraps as an operator would.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hakit.config.loader import cluster_signature, load_cluster
from hakit.config.safe_archive import pack
from hakit.errors import HakitError
from hakit.ipc import RemoteError
from hakit.node import pki, rpc
from hakit.paths import Paths
from hakit.runtime import credentials, rpc_client
from hakit.testing.sim import Sim
from tests.helpers import hakit
from tests.leaks import run_loop
from tests.sim_support import IS_ROOT, unique_sim_name

CLUSTER = """<cluster><lans>
  <lan name="default"><node name="node1" addr="10.9.0.1"/><node name="node2" addr="10.9.0.2"/></lan>
  <lan name="private"><node name="node1" addr="10.9.1.1"/><node name="node2" addr="10.9.1.2"/></lan>
</lans></cluster>
"""
AM_SAFE = "/var/lib/hakit/am.safe"
LIGHT = '<safe><service mode="light"><user/></service></safe>\n'


def node_paths(root: Path) -> Paths:
    return Paths(root / "etc/hakit", root / "var/lib/hakit", root / "var/log/hakit", root / "run/hakit")


@pytest.fixture
def two(tmp_path: Path):
    """A CA node (node1, credentials made) and a bare node2, sharing cluster.xml."""
    a, b = node_paths(tmp_path / "a"), node_paths(tmp_path / "b")
    for p in (a, b):
        p.etc.mkdir(parents=True)
        p.cluster_xml.write_text(CLUSTER)
    cluster = load_cluster(a.cluster_xml)
    pki.setup_node(a, cluster, "node1")
    return a, b, cluster


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """A TLS handshake in memory; returns the certificate CN the client saw."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_side=False)
    done = {"s": False, "c": False}
    for _ in range(10):
        for key, obj in (("c", cli), ("s", srv)):
            if not done[key]:
                try:
                    obj.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return rpc_client.peer_name(cli)
    raise AssertionError("handshake did not finish")


def test_pki_credentials_chain_and_bundle_round_trip(two):
    a, b, cluster = two
    assert sorted(f.name for f in a.pki.iterdir()) == [
        "ca.crt", "ca.key", "cluster.secret", "issued", "node.crt", "node.key"
    ]
    assert mode(a.pki) == 0o700
    for private in ("ca.key", "node.key", "cluster.secret"):
        assert mode(a.pki / private) == 0o600
    assert len(a.cluster_secret.read_bytes()) == 32
    ca = x509.load_pem_x509_certificate((a.pki / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((a.pki / "node.crt").read_bytes())
    pki.verify(cert, [ca])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node1"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.9.0.1", "10.9.1.1"]
    assert pki.setup_node(a, cluster, "node1") == []  # nothing missing, nothing redone

    data = pki.make_bundle(a, cluster, "node2")
    bundle = pki.read_bundle(data, "bundle")
    assert bundle.node == "node2"
    assert pki.install_bundle(b, bundle) is None
    assert sorted(f.name for f in b.pki.iterdir()) == ["ca.crt", "cluster.secret", "node.crt", "node.key"]
    assert b.cluster_secret.read_bytes() == a.cluster_secret.read_bytes()
    assert mode(b.pki / "node.key") == 0o600 and mode(b.cluster_secret) == 0o600
    assert pki.setup_node(b, cluster, "node2") == []
    # The TLS stack accepts them both ways, TLS 1.3 with ALPN.
    assert handshake(rpc_client.tls_context(a, server=True), rpc_client.client_context(b)) == "node1"
    assert handshake(rpc_client.tls_context(b, server=True), rpc_client.client_context(a)) == "node2"


def test_pki_refuses_foreign_certificates(two, tmp_path):
    a, _b, cluster = two
    other = node_paths(tmp_path / "other")
    pki.setup_node(other, cluster, "node2")  # another cluster's CA
    with pytest.raises(ssl.SSLError, match=r"certificate verify failed|unknown ca"):
        handshake(rpc_client.tls_context(a, server=True), rpc_client.client_context(other))
    foreign = x509.load_pem_x509_certificate((other.pki / "node.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((a.pki / "ca.crt").read_bytes())
    with pytest.raises(credentials.PkiError, match="not signed by the cluster CA"):
        pki.verify(foreign, [ca])


def test_bad_bundles_are_refused_clearly_and_install_nothing(two, tmp_path):
    a, b, cluster = two
    good = pki.make_bundle(a, cluster, "node2")
    other = node_paths(tmp_path / "other")
    pki.setup_node(other, cluster, "node1")
    foreign = pki.make_bundle(other, cluster, "node2")
    pem = re.compile(rb"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----\n", re.S)
    parts, foreign_parts = pem.findall(good), pem.findall(foreign)  # CA, node cert, key, secret
    assert len(parts) == 4
    short_secret = (b"-----BEGIN HAKIT CLUSTER SECRET-----\n" + base64.encodebytes(b"x" * 31)
                    + b"-----END HAKIT CLUSTER SECRET-----\n")
    cases = {
        b"\x00\xff garbage": "it is not text",
        good[: len(good) // 2]: "expected certificates, a private key and the cluster secret",
        # node certificate of another CA beside our CA certificate
        good.replace(parts[1], foreign_parts[1]): "is not signed by the cluster CA",
        # a key that is not the certificate's
        good.replace(parts[2], foreign_parts[2]): "its private key does not match its certificate",
        good.replace(parts[3], short_secret): "its cluster secret has 31 bytes, not 32",
    }
    for data, why in cases.items():
        with pytest.raises(credentials.PkiError, match=re.escape(why)) as err:
            pki.read_bundle(data, "FILE")
        assert str(err.value).startswith("FILE is not a usable hakit cluster bundle: ")
    assert not b.pki.exists()


def test_certificates_are_renewed_when_addresses_change(two):
    a, _b, _cluster = two
    cert = x509.load_pem_x509_certificate((a.pki / "node.crt").read_bytes())
    assert pki.renewal_reason(cert, "node1", ["10.9.0.1", "10.9.1.1"]) is None
    assert pki.renewal_reason(cert, "node1", ["10.9.0.7"]) == "it does not name 10.9.0.7"
    assert pki.renewal_reason(cert, "node2", []) == "it names 'node1', not node2"
    a.cluster_xml.write_text(CLUSTER.replace("10.9.0.1", "10.9.0.7"))
    assert pki.setup_node(a, load_cluster(a.cluster_xml), "node1") == [
        "renewed the certificate of node1 (it does not name 10.9.0.7)"
    ]


def test_cluster_bundle_and_import_commands(tmp_path):
    env_a = dict(os.environ, HAKIT_ROOT=str(tmp_path / "a"), HAKIT_NODE="node1")
    env_b = dict(os.environ, HAKIT_ROOT=str(tmp_path / "b"), HAKIT_NODE="node2")
    source = tmp_path / "cluster.xml"
    source.write_text(CLUSTER)
    run = hakit("cluster", "config", str(source), env=env_a, check=True)
    assert "credentials  created the certificate of node1" in run.stdout
    out = tmp_path / "node2.bundle"
    run = hakit("cluster", "bundle", "node2", "-o", str(out), env=env_a, check=True)
    assert mode(out) == 0o600 and "copy it to node2 only" in run.stdout

    # On the wrong machine (it is node1 in its cluster.xml) the bundle is refused.
    hakit("cluster", "config", str(source), env=dict(env_b, HAKIT_NODE="node1"), check=True)
    wrong = hakit("cluster", "import", str(out), env=dict(env_b, HAKIT_NODE="node1"))
    assert wrong.returncode == 1
    assert "this bundle is for node2, and this machine is node1 in cluster.xml" in wrong.stderr

    run = hakit("cluster", "import", str(out), env=env_b, check=True)
    b = node_paths(tmp_path / "b")
    # node2 had made a CA of its own (cluster config above): kept aside, not lost.
    aside = next((tmp_path / "b/etc/hakit").glob("pki.replaced-*"))
    assert (aside / "ca.key").exists() and f"moved to {aside}" in run.stdout
    assert "credentials of node2 installed" in run.stdout
    assert (b.pki / "ca.crt").read_bytes() == (tmp_path / "a/etc/hakit/pki/ca.crt").read_bytes()
    assert not (b.pki / "ca.key").exists()

    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(100))
    bad = hakit("cluster", "import", str(garbage), env=env_b)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr == f"hakit: {garbage} is not a usable hakit cluster bundle: it is not text\n"
    no_ca = hakit("cluster", "bundle", "node1", "-o", str(tmp_path / "x"), env=env_b)
    assert no_ca.returncode == 1 and "does not hold the cluster CA" in no_ca.stderr


# ---------------------------------------------------------------- in a simulated cluster


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    """Three nodes, each running hakitd, shared by the tests below (the last one kills node3);
    in this file it replaces conftest's per-test `sim`."""
    if not IS_ROOT:
        pytest.skip("needs root (namespaces, bridges, mounts)")
    cluster = Sim(unique_sim_name())
    try:
        cluster.up(3, daemon=True, owner_pid=os.getpid())
        yield cluster
    finally:
        cluster.down()


def on(sim: Sim, node: str, *argv: str):
    return sim.exec(node, ["hakit", *argv], check=False)


def headers(out: str) -> list[str]:
    return re.findall(r"^=== (.*) ===$", out, re.M)


def daemon_log(sim: Sim, node: str) -> str:
    return (sim.node_dir(node) / "log" / "hakitd.out").read_text()


@pytest.mark.root
def test_commands_run_on_the_nodes_named(sim):
    run = on(sim, "node1", "-H", "*", "level")
    assert run.returncode == 0, run.stderr
    assert headers(run.stdout) == [f"{n} ({sim.addr(n)})" for n in ("node1", "node2", "node3")]
    assert run.stdout.count("hakit 0.1.0\n") == 3

    archive = sim.host_path("node2", "/var/lib/hakit/app.safe")
    make_archive(archive.parent, archive)
    assert on(sim, "node2", "module", "install", "-m", "app", "/var/lib/hakit/app.safe").returncode == 0
    run = on(sim, "node1", "-H", "node3,node2", "module", "list")
    assert run.returncode == 0, run.stderr
    assert run.stdout == (f"=== node2 ({sim.addr('node2')}) ===\napp\tlight\n"
                          f"=== node3 ({sim.addr('node3')}) ===\n")

    # A node's failure: its own message, a non-zero exit, the others unaffected.
    run = on(sim, "node1", "-H", "node2,node3", "module", "uninstall", "-m", "ghost")
    assert run.returncode == 1
    assert "module ghost is not installed" in run.stderr
    assert run.stderr.endswith("hakit: failed on 2 of the nodes: node2 (exit 1), node3 (exit 1)\n")
    run = on(sim, "node1", "-H", "node9", "level")
    assert run.returncode == 2 and "node9 is not in cluster.xml" in run.stderr


def make_archive(where: Path, out: Path) -> None:
    src = where / "src"
    (src / "conf").mkdir(parents=True, exist_ok=True)
    (src / "conf" / "userconfig.xml").write_text(LIGHT)
    pack(src, out)


@pytest.mark.root
def test_G_applies_the_cluster_configuration_everywhere(sim):
    installed = sim.host_path("node1", "/etc/hakit/cluster.xml")
    new = installed.read_text().replace('name="default"', 'name="public"')
    sim.host_path("node1", "/etc/hakit/new.xml").write_text(new)
    assert on(sim, "node1", "cluster", "config", "/etc/hakit/new.xml").returncode == 0
    signature = cluster_signature(load_cluster(installed))
    old = cluster_signature(load_cluster(sim.host_path("node2", "/etc/hakit/cluster.xml")))

    run = on(sim, "node1", "-H", "*", "cluster", "confinfo")
    assert run.returncode == 1
    assert "NODES DISAGREE on the cluster configuration:\n" in run.stdout
    assert f"  signature {signature[:16]}: node1\n  signature {old[:16]}: node2, node3\n" in run.stdout

    # A cluster.xml with problems replaces nothing, and says why.
    with pytest.raises(RemoteError, match="has problems: nothing installed"):
        rpc_client.call_node(sim.paths("node1"), sim.addr("node2"), "apply_cluster",
                      {"files": {"cluster.xml": b"<cluster><lans>"}})

    run = on(sim, "node1", "-H", "*", "-G")
    assert run.returncode == 0, run.stderr
    assert f"node2 ({sim.addr('node2')}): applied, signature {signature[:16]} (was {old[:16]})" in run.stdout
    assert run.stdout.endswith(f"all 3 nodes have cluster signature {signature[:16]}\n")
    for node in ("node2", "node3"):
        assert sim.host_path(node, "/etc/hakit/cluster.xml").read_text() == new
    run = on(sim, "node1", "-H", "*", "cluster", "confinfo")
    assert run.returncode == 0 and f"all 3 nodes have cluster signature {signature[:16]}" in run.stdout

    # node2's certificate no longer names its address: its own `cluster config` can only say
    # so (it does not hold the CA); -G from the CA node renews it and ships it.
    node2 = sim.paths("node2")
    pki.write_node_credentials(node2, pki.issue(sim.paths("node1"), "node2", []))
    run = on(sim, "node2", "cluster", "config")
    assert run.returncode == 0
    assert (f"credentials  warning: the certificate of node2 should be renewed (it does not name "
            f"{sim.addr('node2')}): run 'hakit -H \"*\" -G' on the CA node") in run.stdout
    run = on(sim, "node1", "-H", "*", "-G")
    assert run.returncode == 0, run.stderr
    assert f"  certificate renewed: it does not name {sim.addr('node2')}\n" in run.stdout
    renewed = x509.load_pem_x509_certificate((node2.pki / "node.crt").read_bytes())
    assert pki.renewal_reason(renewed, "node2", [sim.addr("node2")]) is None
    assert on(sim, "node1", "-H", "node2", "level").returncode == 0

    # Credentials made for another node are refused: node2 would pose as node3.
    node3 = pki.issue(sim.paths("node1"), "node3", [sim.addr("node3")])
    before = (node2.pki / "node.crt").read_bytes()
    with pytest.raises(RemoteError, match="the shipped certificate is node3's, not this node's"):
        rpc_client.call_node(sim.paths("node1"), sim.addr("node2"), "apply_cluster",
                      {"files": {"cluster.xml": new.encode(), credentials.NODE_CERT: node3.cert_pem,
                                 credentials.NODE_KEY: node3.key_pem}})
    assert (node2.pki / "node.crt").read_bytes() == before


@pytest.mark.root
def test_E_applies_a_module_with_its_id_and_key(sim):
    archive = sim.host_path("node1", AM_SAFE)
    make_archive(archive.parent / "am", archive)
    assert on(sim, "node1", "module", "install", "-m", "AM", "-M", "7", AM_SAFE).returncode == 0
    assert on(sim, "node1", "module", "genkey", "-m", "AM").returncode == 0
    key = sim.host_path("node1", "/etc/hakit/modules/AM/conf/key")
    assert mode(key) == 0o600

    run = on(sim, "node1", "-H", "node1,node2", "-E", "AM")
    assert run.returncode == 0, run.stderr
    assert f"node2 ({sim.addr('node2')}): module AM installed, id 7" in run.stdout
    for node in ("node1", "node2"):
        conf = sim.host_path(node, "/etc/hakit/modules/AM")
        assert (conf / "conf/nodes").read_text() == "node1\nnode2\n"
        assert (conf / "id").read_text() == "7\n"
    copied = sim.host_path("node2", "/etc/hakit/modules/AM/conf/key")
    assert copied.read_bytes() == key.read_bytes() and mode(copied) == 0o600
    assert not sim.host_path("node3", "/etc/hakit/modules/AM").exists()
    state = rpc_client.call_node(sim.paths("node1"), sim.addr("node2"), "module_state", {"module": "AM"})
    assert state == {"state": "STOP", "status": "NotReady"}

    # node3 already has AM under another id: it keeps its id, and the difference is pointed out.
    sim.host_path("node3", AM_SAFE).write_bytes(archive.read_bytes())
    assert on(sim, "node3", "module", "install", "-m", "AM", "-M", "9", AM_SAFE).returncode == 0
    run = on(sim, "node1", "-H", "*", "-E", "AM")
    assert run.returncode == 0, run.stderr
    assert f"node2 ({sim.addr('node2')}): module AM replaced (previous one saved in " in run.stdout
    assert f"node3 ({sim.addr('node3')}): module AM replaced" in run.stdout and ", id 9\n" in run.stdout
    assert "module AM has different ids: node1 7, node2 7, node3 9" in run.stderr
    assert sim.host_path("node3", "/etc/hakit/modules/AM/conf/key").read_bytes() == key.read_bytes()

    # A running module is not replaced under its feet.
    assert on(sim, "node1", "-H", "node2", "start", "-m", "AM").returncode == 0
    run = on(sim, "node1", "-H", "node2", "-E", "AM")
    assert run.returncode == 1 and "module AM is running on node2; stop it there first" in run.stderr
    assert on(sim, "node1", "-H", "node2", "stop", "-m", "AM").returncode == 0


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_file, cert_file = tmp_path / "self.key", tmp_path / "self.crt"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


@pytest.mark.root
def test_untrusted_peers_and_garbage_are_dropped(sim, tmp_path):
    node1, addr = sim.paths("node1"), sim.addr("node2")
    # A client with a certificate of its own making (the cluster CA trusted, for the server's side).
    ctx = rpc_client.client_context(node1)
    ctx.load_cert_chain(*self_signed(tmp_path))
    # TLS 1.3: the server's refusal comes after the client's handshake, on the first read.
    with pytest.raises(rpc_client.RpcError, match=r"dropped the connection|closed the connection at once"):
        run_loop(call_with(node1, addr, ctx))
    # A node of another cluster: each side refuses the other.
    other = node_paths(tmp_path / "other")
    pki.setup_node(other, load_cluster(sim.host_path("node1", "/etc/hakit/cluster.xml")), "node1")
    with pytest.raises(rpc_client.RpcError, match="TLS handshake failed: certificate refused"):
        rpc_client.call_node(other, addr, "ping", {})
    # Bytes that are not TLS, then a TLS client that does not speak hakit/1.
    with socket.create_connection((addr, rpc_client.RPC_PORT), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(4096))
        assert s.recv(100) == b""
    http = rpc_client.client_context(node1)
    http.set_alpn_protocols(["http/1.1"])
    with pytest.raises(HakitError):
        run_loop(call_with(node1, addr, http))

    assert rpc_client.call_node(node1, addr, "ping", {})["node"] == "node2"  # still serving
    with pytest.raises(RemoteError, match="'start' is not served to other nodes"):
        rpc_client.call_node(node1, addr, "start", {"module": "AM"})
    dropped = re.findall(r"^hakitd: rpc: dropped [0-9.]+:\d+: (.*)$", daemon_log(sim, "node2"), re.M)
    assert len(dropped) == 4, dropped  # one line for each, and only for them
    assert dropped[0] == "TLS handshake failed: certificate refused: self-signed certificate"
    # The other cluster's node refused node2 first: an alert, or it just hangs up.
    assert re.fullmatch(r"TLS handshake failed: .*unknown ca|the peer left during the TLS handshake",
                        dropped[1])
    assert dropped[2:] == ["TLS handshake failed: http request", "it does not speak hakit/1"]
    assert "Traceback" not in daemon_log(sim, "node2") + daemon_log(sim, "node1")
    # A flood of bad handshakes is a few lines, not one each (the sources are any).
    for _ in range(40):
        with socket.create_connection((addr, rpc_client.RPC_PORT), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(100) == b""
    assert rpc_client.call_node(node1, addr, "ping", {})["node"] == "node2"
    flood = re.findall(r"^hakitd: rpc: dropped .*$", daemon_log(sim, "node2"), re.M)[4:]
    assert len(flood) <= 2 * rpc.DROP_LOG_BURST, flood  # (the flood may straddle two intervals)


async def call_with(p: Paths, addr: str, ctx: ssl.SSLContext) -> object:
    conn = await rpc_client.connect(p, [addr], context=ctx)
    try:
        return await conn.call("ping", {})
    finally:
        conn.close()


@pytest.mark.root
def test_only_nodes_of_cluster_xml_are_served_and_each_server_is_the_node_meant(sim):
    installed = sim.host_path("node1", "/etc/hakit/cluster.xml")
    full = installed.read_text()
    without3 = re.sub(r'\s*<node name="node3"[^>]*/>', "", full)
    sim.host_path("node1", "/etc/hakit/without3.xml").write_text(without3)
    assert on(sim, "node1", "cluster", "config", "/etc/hakit/without3.xml").returncode == 0
    run = on(sim, "node1", "-H", "node1,node2", "-G")
    assert run.returncode == 0, run.stderr
    # node3 still holds a certificate of the cluster CA: removed from cluster.xml, it is refused.
    node3, addr2 = sim.paths("node3"), sim.addr("node2")
    with pytest.raises(RemoteError, match=r"node2 refuses node3: its certificate names no node of cluster"):
        rpc_client.call_node(node3, addr2, "ping", {})
    run = on(sim, "node3", "-H", "node1", "level")
    assert run.returncode == 1 and "node1 refuses node3" in run.stderr, run.stderr

    sim.host_path("node1", "/etc/hakit/full.xml").write_text(full)
    assert on(sim, "node1", "cluster", "config", "/etc/hakit/full.xml").returncode == 0
    assert on(sim, "node1", "-H", "*", "-G").returncode == 0
    assert rpc_client.call_node(node3, addr2, "ping", {})["node"] == "node2"
    # A client whose idea of node2's address leads to node3 is told, not served by node3.
    with pytest.raises(rpc_client.RpcError, match=r"refused: it is node3, not node2"):
        run_loop(rpc_client.connect(sim.paths("node1"), [sim.addr("node3")], node="node2"))


@pytest.mark.root
def test_a_retired_certificate_is_refused_everywhere_until_the_node_gets_new_credentials(sim):
    run = on(sim, "node1", "cluster", "retire", "node3")
    assert run.returncode == 0 and "retired certificate " in run.stdout, run.stderr
    run = on(sim, "node1", "-H", "*", "-G")
    assert run.returncode == 1
    assert f"node2 ({sim.addr('node2')}): applied" in run.stdout
    assert "node3: " in run.stderr and "refused: its certificate (node3) is retired" in run.stderr
    node3 = sim.paths("node3")
    with pytest.raises(RemoteError, match="node2 refuses node3: its certificate is retired"):
        rpc_client.call_node(node3, sim.addr("node2"), "ping", {})
    run = on(sim, "node2", "-H", "node3", "level")
    assert run.returncode == 1 and "is retired" in run.stderr
    run = on(sim, "node1", "cluster", "retire", "node3")
    assert run.returncode == 0 and "already retired" in run.stdout

    # Back with credentials made for it again, by hand as for a new node.
    assert on(sim, "node1", "cluster", "bundle", "node3", "-o", "/var/lib/hakit/node3.bundle").returncode == 0
    sim.host_path("node3", "/var/lib/hakit/node3.bundle").write_bytes(
        sim.host_path("node1", "/var/lib/hakit/node3.bundle").read_bytes())
    run = on(sim, "node3", "cluster", "import", "/var/lib/hakit/node3.bundle")
    assert run.returncode == 0, run.stderr
    assert rpc_client.call_node(node3, sim.addr("node2"), "ping", {})["node"] == "node2"
    run = on(sim, "node1", "-H", "*", "level")
    assert run.returncode == 0, run.stderr


@pytest.mark.root
def test_the_cluster_ca_is_rotated_without_cutting_any_node_off(sim, tmp_path):
    before = node_paths(tmp_path / "before")
    before.pki.mkdir(parents=True)
    for name in (credentials.CA_CERT, credentials.NODE_CERT, credentials.NODE_KEY):
        (before.pki / name).write_bytes((sim.paths("node3").pki / name).read_bytes())
    old_ca = pki.read_cas(sim.paths("node1"))[0]

    run = on(sim, "node1", "cluster", "rotate-ca")
    assert run.returncode == 0 and "new cluster CA " in run.stdout, run.stderr
    assert on(sim, "node1", "-H", "*", "level").returncode == 0  # (both CAs trusted here)
    run = on(sim, "node1", "cluster", "rotate-ca", "--finish")
    assert run.returncode == 1
    assert "node2: its certificate is of the previous CA" in run.stderr, run.stderr
    run = on(sim, "node1", "-H", "*", "-G")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("certificate renewed: it is signed by a previous cluster CA") == 2
    assert on(sim, "node2", "-H", "*", "level").returncode == 0  # new and old certificates mixed
    run = on(sim, "node1", "cluster", "rotate-ca", "--finish")
    assert run.returncode == 0, run.stderr
    run = on(sim, "node1", "-H", "*", "-G")
    assert run.returncode == 0, run.stderr
    new_ca = pki.read_cas(sim.paths("node1"))[0]
    assert new_ca != old_ca
    for node in ("node1", "node2", "node3"):
        assert pki.read_cas(sim.paths(node)) == [new_ca]
        cert = x509.load_pem_x509_certificate((sim.paths(node).pki / credentials.NODE_CERT).read_bytes())
        assert pki.signed_by(cert, new_ca)
    assert on(sim, "node3", "-H", "*", "level").returncode == 0
    # Credentials of the previous CA are no good any more.
    with pytest.raises(rpc_client.RpcError, match="certificate refused"):
        rpc_client.call_node(before, sim.addr("node2"), "ping", {})


@pytest.mark.root
def test_an_unreachable_node_is_reported(sim):
    sim.kill("node3")
    run = on(sim, "node1", "-H", "*", "level")
    assert run.returncode == 1
    assert headers(run.stdout) == [f"node1 ({sim.addr('node1')})", f"node2 ({sim.addr('node2')})", "node3"]
    assert run.stdout.count("hakit 0.1.0\n") == 2
    assert (f"hakit: node3: unreachable ({sim.addr('node3')}:9010: no answer within 3 s)\n"
            "hakit: failed on 1 of the nodes: node3\n") == run.stderr
