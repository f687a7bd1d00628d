"""The native pieces: the frame codec, and the farm's eBPF program run in the real kernel
through its loader (hakit._farm_lb)."""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import msgpack
import pytest

from hakit import _farm_lb as lb
from hakit._wire import MAX_FRAME, FrameDecoder, FrameError, pack_frame
from hakit.config import module_model

CLONE_NEWNET = 0x40000000


def test_frames_split_anywhere_decode_in_order():
    objs = [{"op": "ping", "args": {}}, [1, 2, 3], "é" * 1000, b"\x00" * 70000, None]
    stream = b"".join(pack_frame(o) for o in objs)
    for step in (1, 3, 4096):
        dec = FrameDecoder()
        got = []
        for i in range(0, len(stream), step):
            got += dec.feed(stream[i:i + step])
        assert got == objs and dec.pending == 0


def test_decoding_a_burst_of_rpc_frames(benchmark):
    """The frame codec's hot path: a read that holds many small requests at once."""
    request = {"op": "module_state", "args": {"module": "farm", "verbose": True}}
    stream = b"".join(pack_frame(request) for _ in range(100))
    assert benchmark(lambda: FrameDecoder().feed(stream)) == [request] * 100


def test_garbage_is_refused_with_a_reason():
    with pytest.raises(FrameError, match="limit"):
        FrameDecoder().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError, match="malformed"):
        FrameDecoder().feed(b"\x00\x00\x00\x02" + b"\xc1\xc1")
    with pytest.raises(FrameError):
        pack_frame(b"x" * 100, max_size=10)
    body = msgpack.packb({"a": 1})
    assert FrameDecoder(max_size=100).feed(len(body).to_bytes(4, "big") + body) == [{"a": 1}]


@pytest.mark.parametrize("body", [b"\x81\x91\x01\x02", b"\x81\x80\x01", b"\x91\x81\x90\x00"])
def test_a_map_keyed_by_a_list_or_a_map_is_malformed(body):
    """{[1]: 2}, {{}: 1}, [{[]: 0}]: msgpack decodes them, Python cannot hash the keys."""
    with pytest.raises(FrameError, match="malformed"):
        FrameDecoder().feed(len(body).to_bytes(4, "big") + body)


def bpf_object() -> str:
    return str(resources.files("hakit") / "ebpf" / "farm_lb.bpf.o")


# ---- the farm filter, run in the kernel through its loader (bpf_prog_test_run)

MY, OTHER, THIRD = 0, 1, 2
MY_MAC, OTHER_MAC, THIRD_MAC = (bytes.fromhex(f"02000000000{i}") for i in (1, 2, 3))
VMAC = bytes.fromhex("02aa000000aa")
CLIENT_MAC = bytes.fromhex("02cc000000cc")
BROADCAST = b"\xff" * 6
VIP, VIP2, NOT_VIP = "10.99.0.1", "10.99.0.2", "10.99.0.9"
CLIENT, THEIRS = "192.0.2.10", "192.0.2.20"
PORT = 80
NO = lb.NO_NODE
# Return codes per hook: TC_ACT_UNSPEC / XDP_PASS, TC_ACT_OK, TC_ACT_SHOT / XDP_DROP,
# TC_ACT_REDIRECT / XDP_TX.
PASS = {"tc": -1, "xdp": 2}
ACCEPT = {"tc": 0, "xdp": 2}
DROP = {"tc": 2, "xdp": 1}
TX = {"tc": 7, "xdp": 3}
SYN, ACK = 0x02, 0x10
MF = 0x2000
PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ipid: int = 1, frag: int = 0) -> bytes:
    # No checksum: the filter does not read it.
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ipid, frag, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + payload


def frame(proto: str = "udp", src: str = CLIENT, dst: str = VIP, sport: int = 40000, dport: int = PORT,
          flags: int = ACK, mac_dst: bytes = MY_MAC, mac_src: bytes = CLIENT_MAC, ipid: int = 1,
          frag: int = 0) -> bytes:
    if proto == "udp":
        l4 = struct.pack("!HHHH", sport, dport, 8 + 16, 0) + b"u" * 16
    else:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    return eth(mac_dst, mac_src, 0x0800, ipv4(src, dst, PROTO[proto], l4, ipid, frag))


def arp(op: int, sha: bytes, spa: str, tha: bytes, tpa: str, dst: bytes = BROADCAST,
        src: bytes | None = None) -> bytes:
    return eth(dst, src or sha, 0x0806, struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha,
                                                    socket.inet_aton(spa), tha, socket.inet_aton(tpa)))


def configure(maps: lb.Maps, flags: int = lb.F_ARP_ANSWER, default_owner: int = MY) -> None:
    maps.set_config(MY, MY_MAC, VMAC, VMAC, default_owner, flags)


def own(maps: lb.Maps, owned: dict[int, tuple[int, int]], group: int = 0) -> None:
    """Buckets of the group: those given as bucket -> (owner, prev), every other one OTHER's."""
    owners, prevs = bytearray([OTHER] * lb.NBUCKETS), bytearray([NO] * lb.NBUCKETS)
    for bucket, (owner, prev) in owned.items():
        owners[bucket], prevs[bucket] = owner, prev
    maps.set_buckets(group, bytes(owners), bytes(prevs))


def own_client(maps: lb.Maps, owner: int, prev: int = NO) -> None:
    """CLIENT's bucket of group 0 (filter on_addr) to owner, THEIRS' (and the rest) to OTHER."""
    mine = lb.bucket_of(lb.FILTER_ON_ADDR, CLIENT, 0, 0)
    assert mine != lb.bucket_of(lb.FILTER_ON_ADDR, THEIRS, 0, 0)
    own(maps, {mine: (owner, prev)})


def run(maps: lb.Maps, hook: str, data: bytes, verdict: dict[str, int]) -> bytes:
    code, out = maps.run(hook, data)
    assert code == verdict[hook]
    return out


@pytest.fixture(scope="module")
def bpffs() -> Iterator[str]:
    """A private bpf filesystem: nothing pinned here outlives the tests."""
    path = tempfile.mkdtemp(prefix="hkbpf-")
    try:
        lb.ensure_bpffs(path)
        yield path
    finally:
        subprocess.run(["umount", path], check=False, capture_output=True)
        os.rmdir(path)


@pytest.fixture
def pin_dir(bpffs: str) -> Iterator[str]:
    path = os.path.join(bpffs, f"hk{uuid.uuid4().hex[:8]}")
    try:
        yield path
    finally:
        lb.unpin(path)


@pytest.fixture
def maps(pin_dir: str) -> Iterator[lb.Maps]:
    """Loaded and configured: this node is MY of MY/OTHER/THIRD, VIP and VIP2 with rules
    tcp+udp/80 in group 0 (on_addr), VIP udp/* in group 1 (on_port), VIP2 udp/* in group 2 (on_ipid)."""
    lb.load(bpf_object(), pin_dir)
    m = lb.Maps(pin_dir)
    try:
        configure(m)
        m.set_vips([VIP, VIP2])
        for index, mac in enumerate((MY_MAC, OTHER_MAC, THIRD_MAC)):
            m.set_node(index, mac, True)
        m.set_rules([(VIP, PORT, "tcp", 0, lb.FILTER_ON_ADDR), (VIP, PORT, "udp", 0, lb.FILTER_ON_ADDR),
                     (VIP, 0, "udp", 1, lb.FILTER_ON_PORT), (VIP2, 0, "udp", 2, lb.FILTER_ON_IPID)])
        yield m
    finally:
        m.close()


@pytest.fixture(params=["tc", "xdp"])
def hook(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.root
def test_loader_pins_once_and_reports_what_is_missing(bpffs: str, pin_dir: str, tmp_path: Path) -> None:
    lb.ensure_bpffs(bpffs)  # already a bpffs: not mounted twice
    with open("/proc/self/mountinfo") as f:
        assert sum(line.split()[4] == bpffs for line in f) == 1
    with pytest.raises(FileNotFoundError):
        lb.Maps(pin_dir)
    os.mkdir(pin_dir)
    with pytest.raises(FileNotFoundError, match="lb_config"):
        lb.Maps(pin_dir)
    lb.load(bpf_object(), pin_dir)
    assert sorted(os.listdir(pin_dir)) == sorted(
        ["lb_config", "lb_vips", "lb_rules", "lb_buckets", "lb_nodes", "lb_node_macs", "lb_frags", "lb_stats",
         "prog_tc", "prog_xdp"])
    with pytest.raises(FileExistsError):
        lb.load(bpf_object(), pin_dir)
    outside = tmp_path / "hkpins"
    with pytest.raises(OSError, match="BPF FS"):
        lb.load(bpf_object(), str(outside))
    assert not outside.exists()
    m = lb.Maps(pin_dir)
    m.close()
    with pytest.raises(OSError, match="closed"):
        m.stats()
    lb.unpin(pin_dir)
    lb.unpin(pin_dir)
    assert not os.path.exists(pin_dir)


REJECTED = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int farm_lb_tc(struct __sk_buff *skb) { return *(int *)(long)skb->data; }
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.mark.root
@pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")
def test_a_verifier_rejection_says_why(bpffs: str, pin_dir: str, tmp_path: Path) -> None:
    (tmp_path / "bad.bpf.c").write_text(REJECTED)
    obj = tmp_path / "bad.bpf.o"
    subprocess.run(["clang", "-target", "bpf", "-O2", "-I", f"/usr/include/{os.uname().machine}-linux-gnu",
                    "-c", str(tmp_path / "bad.bpf.c"), "-o", str(obj)], check=True)
    with pytest.raises(PermissionError) as err:
        lb.load(str(obj), pin_dir)
    # The verifier's own reason, not only EACCES.
    assert str(err.value.strerror).startswith(f"loading {obj}: Permission denied\n")
    assert "outside of the packet" in err.value.strerror
    assert not os.path.exists(pin_dir)


@pytest.mark.root
def test_maps_read_back_and_refuse_bad_values(maps: lb.Maps) -> None:
    configure(maps, flags=lb.F_FLOOD | lb.F_TCPRESET, default_owner=NO)
    assert maps.config() == {"my_node": MY, "my_mac": MY_MAC, "vmac": VMAC, "answer_mac": VMAC,
                             "default_owner": NO, "flags": lb.F_FLOOD | lb.F_TCPRESET}
    owners, prevs = bytes(range(256)) * 16, bytes(reversed(range(256))) * 16
    maps.set_buckets(lb.MAX_GROUPS - 1, owners, prevs)
    assert maps.buckets(lb.MAX_GROUPS - 1) == (owners, prevs)
    with pytest.raises(ValueError):
        maps.set_buckets(0, b"\x00", b"\x00")
    with pytest.raises(ValueError):
        maps.set_rules([(VIP, 80, "sctp", 0, lb.FILTER_ON_ADDR)])
    with pytest.raises(ValueError):
        maps.set_node(0, b"\x00", True)
    with pytest.raises(OverflowError):
        maps.set_config(256, MY_MAC, VMAC, VMAC, 0, 0)
    assert lb.STATS == ("other", "accepted", "dropped", "local_flow", "redirected", "arp")


@pytest.mark.root
def test_arp_requests_for_a_vip_are_answered_with_the_answer_mac(maps: lb.Maps, hook: str) -> None:
    request = arp(1, CLIENT_MAC, CLIENT, bytes(6), VIP)
    # The reply leaves from this node's MAC: a switch must never learn the vmac.
    assert run(maps, hook, request, TX) == arp(2, VMAC, VIP, CLIENT_MAC, CLIENT, dst=CLIENT_MAC, src=MY_MAC)
    assert maps.stats()["arp"] == (1, len(request))
    other = arp(1, CLIENT_MAC, CLIENT, bytes(6), NOT_VIP)
    assert run(maps, hook, other, PASS) == other
    run(maps, hook, arp(1, OTHER_MAC, VIP, bytes(6), VIP), DROP)  # gratuitous: nobody asks
    configure(maps, flags=0)
    # Not answering: the kernel must not either, with its own MAC.
    run(maps, hook, request, DROP)
    maps.set_vips([VIP2])
    assert run(maps, hook, request, PASS) == request


@pytest.mark.root
def test_the_bucket_owner_alone_keeps_a_client(maps: lb.Maps, hook: str) -> None:
    own_client(maps, MY)
    mine, theirs, other = frame(), frame(src=THEIRS), frame(dst=NOT_VIP)
    assert run(maps, hook, mine, ACCEPT) == mine
    assert run(maps, hook, theirs, DROP) == theirs
    assert run(maps, hook, other, PASS) == other
    stats = maps.stats()
    assert (stats["accepted"], stats["dropped"], stats["other"]) == (
        (1, len(mine)), (1, len(theirs)), (1, len(other)))
    # Unruled ports of a VIP: the default owner's.
    unruled = frame("tcp", dport=22, flags=SYN)
    run(maps, hook, unruled, ACCEPT)
    configure(maps, default_owner=OTHER)
    run(maps, hook, unruled, DROP)


@pytest.mark.root
def test_bucket_of_is_the_programs_hash(maps: lb.Maps, hook: str) -> None:
    # (group, filter, vip) of the fixture's port-0 rules, each keyed on something else.
    for group, filt, vip in ((1, lb.FILTER_ON_PORT, VIP), (2, lb.FILTER_ON_IPID, VIP2)):
        clients = [(f"198.51.100.{i}", 1024 + 7 * i, 3 * i) for i in range(1, 40)]
        kept = {lb.bucket_of(filt, *c) for c in clients[::2]}
        own(maps, {b: (MY, NO) for b in kept}, group)
        for addr, sport, ipid in clients:
            data = frame(src=addr, dst=vip, sport=sport, dport=5353, ipid=ipid)
            run(maps, hook, data, ACCEPT if lb.bucket_of(filt, addr, sport, ipid) in kept else DROP)


@pytest.mark.root
def test_directed_mode_forwards_to_the_owner_once(maps: lb.Maps, hook: str) -> None:
    configure(maps, flags=lb.F_DIRECTED)
    own_client(maps, MY)
    assert run(maps, hook, frame(src=THEIRS), TX) == frame(src=THEIRS, mac_dst=OTHER_MAC, mac_src=MY_MAC)
    assert maps.stats()["redirected"][0] == 1
    # Already steered by a farm node: a second hop could loop.
    run(maps, hook, frame(src=THEIRS, mac_src=THIRD_MAC), DROP)
    maps.set_node(THIRD, bytes.fromhex("020000000033"), True)  # THIRD_MAC is no farm node's now
    run(maps, hook, frame(src=THEIRS, mac_src=THIRD_MAC), TX)
    maps.set_node(OTHER, OTHER_MAC, False)
    run(maps, hook, frame(src=THEIRS), DROP)


@pytest.mark.root
def test_flood_mode_gives_vmac_frames_to_the_stack_as_its_own(maps: lb.Maps, hook: str) -> None:
    configure(maps, flags=lb.F_FLOOD)
    own_client(maps, MY)
    assert run(maps, hook, frame(mac_dst=VMAC), ACCEPT) == frame(mac_dst=MY_MAC)
    run(maps, hook, frame(src=THEIRS, mac_dst=VMAC), DROP)
    configure(maps, flags=0)
    assert run(maps, hook, frame(mac_dst=VMAC), ACCEPT) == frame(mac_dst=VMAC)


@pytest.mark.root
def test_later_fragments_follow_the_first(maps: lb.Maps, hook: str) -> None:
    def fragments(src: str, ipid: int) -> tuple[bytes, bytes]:
        # The later one has no UDP header: its first bytes are data, not ports.
        later = eth(MY_MAC, CLIENT_MAC, 0x0800, ipv4(src, VIP, socket.IPPROTO_UDP, b"\xab" * 64, ipid, 185))
        return frame(src=src, ipid=ipid, frag=MF), later

    configure(maps, flags=lb.F_DIRECTED)
    own_client(maps, MY)
    first, later = fragments(CLIENT, 7)
    run(maps, hook, first, ACCEPT)
    run(maps, hook, later, ACCEPT)
    first, later = fragments(THEIRS, 8)
    run(maps, hook, first, TX)
    assert run(maps, hook, later, TX)[:12] == OTHER_MAC + MY_MAC
    configure(maps, flags=0)
    first, later = fragments(THEIRS, 9)
    run(maps, hook, first, DROP)
    run(maps, hook, later, DROP)
    # First fragment never seen: let the stack's reassembly discard it.
    run(maps, hook, fragments(THEIRS, 10)[1], ACCEPT)


@pytest.mark.root
def test_tcp_without_a_local_flow(maps: lb.Maps, hook: str) -> None:
    own_client(maps, MY)
    run(maps, hook, frame("tcp", flags=SYN), ACCEPT)
    run(maps, hook, frame("tcp", src=THEIRS, flags=SYN), DROP)
    run(maps, hook, frame("tcp", flags=ACK), DROP)
    configure(maps, flags=lb.F_TCPRESET)
    run(maps, hook, frame("tcp", flags=ACK), ACCEPT)  # nobody else can hold it: the stack resets it
    own_client(maps, MY, prev=OTHER)
    run(maps, hook, frame("tcp", flags=ACK), DROP)  # the previous owner may hold it
    configure(maps, flags=lb.F_TCPRESET | lb.F_DIRECTED)
    assert run(maps, hook, frame("tcp", flags=ACK), TX)[:12] == OTHER_MAC + MY_MAC
    # Never back where it came from: the previous owner sent it, holding nothing of it,
    # so nobody does and the stack resets it.
    run(maps, hook, frame("tcp", flags=ACK, mac_src=OTHER_MAC), ACCEPT)
    configure(maps, flags=lb.F_DIRECTED)
    run(maps, hook, frame("tcp", flags=ACK, mac_src=OTHER_MAC), DROP)
    configure(maps, flags=lb.F_TCPRESET | lb.F_DIRECTED)
    maps.set_node(OTHER, OTHER_MAC, False)
    run(maps, hook, frame("tcp", flags=ACK), DROP)


@pytest.mark.root
def test_a_local_connection_stays_whatever_its_bucket(maps: lb.Maps, hook: str) -> None:
    vip = "127.66.0.1"  # on lo: bpf_prog_test_run looks sockets up in this netns
    maps.set_vips([vip])
    maps.set_rules([(vip, 0, "tcp", 0, lb.FILTER_ON_ADDR)])
    own(maps, {})
    with socket.create_server((vip, 0)) as server, socket.create_connection(server.getsockname()) as client:
        addr, sport = client.getsockname()
        port = server.getsockname()[1]
        flow = frame("tcp", src=addr, dst=vip, sport=sport, dport=port, flags=ACK)
        run(maps, hook, flow, ACCEPT)
        assert maps.stats()["local_flow"] == (1, len(flow))
        # Only the listener: no flow of this node.
        run(maps, hook, frame("tcp", src=addr, dst=vip, sport=sport ^ 1, dport=port, flags=ACK), DROP)
        # The server closes first: its side waits in time-wait, which is no flow either
        # (the client may reuse the port for a connection that lives on another node).
        accepted, _ = server.accept()
        accepted.close()
        client.close()
        deadline = time.monotonic() + 2  # the FIN exchange on lo takes a moment
        while maps.run(hook, flow)[0] != DROP[hook] and time.monotonic() < deadline:
            time.sleep(0.01)
        run(maps, hook, flow, DROP)
        # But the bucket's owner, when nobody else can hold the flow, gives its own
        # time-wait what comes for it (the client's late FIN, the reset of a client
        # reusing the port)...
        bucket = lb.bucket_of(lb.FILTER_ON_ADDR, addr, 0, 0)
        own(maps, {bucket: (MY, NO)})
        run(maps, hook, flow, ACCEPT)
        # ... the previous owner first, which may hold a flow of the same 4-tuple, and
        # when it sends it back holding nothing of it.
        configure(maps, flags=lb.F_DIRECTED)
        own(maps, {bucket: (MY, OTHER)})
        assert run(maps, hook, flow, TX)[:12] == OTHER_MAC + MY_MAC
        run(maps, hook, frame("tcp", src=addr, dst=vip, sport=sport, dport=port, mac_src=OTHER_MAC), ACCEPT)
        # This node the previous owner: from a client, the owner's; steered here by the
        # owner, which holds nothing of it, this node's time-wait is all that is left.
        own(maps, {bucket: (OTHER, MY)})
        assert run(maps, hook, flow, TX)[:12] == OTHER_MAC + MY_MAC
        run(maps, hook, frame("tcp", src=addr, dst=vip, sport=sport, dport=port, mac_src=OTHER_MAC), ACCEPT)
        assert maps.stats()["local_flow"][0] == 2
        nothing = frame("tcp", src=addr, dst=vip, sport=sport ^ 1, dport=port, mac_src=OTHER_MAC)
        run(maps, hook, nothing, DROP)


def _enter_netns(name: str) -> None:
    # The executor's only thread: netlink sockets it opens are in that namespace.
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


@pytest.fixture
def veth() -> Iterator[Callable[..., Any]]:
    """call(fn, *args) runs fn in a throwaway netns holding the veth hkt0 (up) / hkt1."""
    name = f"hkt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "hkt0", "type", "veth", "peer", "name", "hkt1"],
                       check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "hkt0", "up"], check=True)
        with ThreadPoolExecutor(1, initializer=_enter_netns, initargs=(name,)) as ex:
            yield lambda fn, *args: ex.submit(fn, *args).result()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _shown(call: Callable[..., Any], *argv: str) -> str:
    # A process started by the namespace's thread is born in that namespace.
    return call(lambda: subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


@pytest.mark.root
def test_tc_attach_detach_keeps_other_filters(maps: lb.Maps, veth: Callable[..., Any]) -> None:
    ifindex = veth(socket.if_nametoindex, "hkt0")
    ours, other = (ifindex, "tc", 0x1, 100), (ifindex, "tc", 0x2, 200)
    assert not veth(maps.attached, *ours)
    veth(maps.attach, *ours)
    veth(maps.attach, *ours)  # replaced, not doubled
    veth(maps.attach, *other)  # stands for another module's filter
    assert veth(maps.attached, *ours) and veth(maps.attached, *other)
    assert _shown(veth, "tc", "filter", "show", "dev", "hkt0", "ingress").count(" farm_lb_tc:[") == 2
    veth(maps.detach, *ours)
    assert not veth(maps.attached, *ours) and veth(maps.attached, *other)
    assert "clsact" in _shown(veth, "tc", "qdisc", "show", "dev", "hkt0")
    veth(maps.detach, *other)
    veth(maps.detach, *other)
    assert "clsact" not in _shown(veth, "tc", "qdisc", "show", "dev", "hkt0")
    assert not veth(maps.attached, *other)


@pytest.mark.root
def test_xdp_attach_detach(maps: lb.Maps, veth: Callable[..., Any]) -> None:
    ifindex = veth(socket.if_nametoindex, "hkt0")
    args = (ifindex, "xdp", 0, 0)
    assert not veth(maps.attached, *args)
    veth(maps.attach, *args)
    assert veth(maps.attached, *args)
    assert "prog/xdp" in _shown(veth, "ip", "link", "show", "hkt0")
    veth(maps.detach, *args)
    veth(maps.detach, *args)
    assert not veth(maps.attached, *args)
    assert "prog/xdp" not in _shown(veth, "ip", "link", "show", "hkt0")


def test_the_configuration_knows_the_filters_limits():
    assert (module_model.FARM_MAX_GROUPS, module_model.FARM_MAX_VIPS, module_model.FARM_MAX_RULE_PORTS) == (
        lb.MAX_GROUPS, lb.MAX_VIPS, lb.MAX_RULES)
