"""The native pieces: the frame codec and the farm's eBPF object in the real kernel."""

from __future__ import annotations

import os
import subprocess
import uuid
from importlib import resources
from pathlib import Path

import msgpack
import pytest
from hakit._wire import MAX_FRAME, FrameDecoder, FrameError, pack_frame


def test_frames_split_anywhere_decode_in_order():
    objs = [{"op": "ping", "args": {}}, [1, 2, 3], "é" * 1000, b"\x00" * 70000, None]
    stream = b"".join(pack_frame(o) for o in objs)
    for step in (1, 3, 4096):
        dec = FrameDecoder()
        got = []
        for i in range(0, len(stream), step):
            got += dec.feed(stream[i:i + step])
        assert got == objs and dec.pending == 0


def test_garbage_is_refused_with_a_reason():
    with pytest.raises(FrameError, match="limit"):
        FrameDecoder().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError, match="malformed"):
        FrameDecoder().feed(b"\x00\x00\x00\x02" + b"\xc1\xc1")
    with pytest.raises(FrameError):
        pack_frame(b"x" * 100, max_size=10)
    body = msgpack.packb({"a": 1})
    assert FrameDecoder(max_size=100).feed(len(body).to_bytes(4, "big") + body) == [{"a": 1}]


def bpf_object() -> Path:
    return Path(str(resources.files("hakit") / "ebpf" / "farm_lb.bpf.o"))


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF needs root")
def test_farm_filter_passes_the_kernel_verifier():
    ns = f"hktest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def ip(*a: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "-n", ns, *a], check=True, capture_output=True, text=True)

        ip("link", "add", "hkt0", "type", "veth", "peer", "name", "hkt1")
        ip("link", "set", "hkt0", "up")
        tc = ["ip", "netns", "exec", ns, "tc"]
        subprocess.run([*tc, "qdisc", "add", "dev", "hkt0", "clsact"], check=True)
        load = subprocess.run(
            [*tc, "filter", "add", "dev", "hkt0", "ingress", "bpf", "da", "obj", str(bpf_object()),
             "sec", "tc"], capture_output=True, text=True)
        assert load.returncode == 0, load.stderr
        shown = subprocess.run([*tc, "filter", "show", "dev", "hkt0", "ingress"],
                               capture_output=True, text=True, check=True).stdout
        assert "farm_lb_ingress" in shown and "jited" in shown
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
