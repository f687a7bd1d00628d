"""Opens on the secondary's read-only mount served by the kernel from the real file
(FUSE passthrough), and none on the primary: hakit-rfs on this host, the secondary on
127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.rfs_local import free_port

pytestmark = pytest.mark.root


def test_the_secondary_reads_the_real_file_the_primary_its_cache(rfs, base: Path):
    port = free_port()
    secondary = rfs("secondary", "sec", "--listen", f"127.0.0.1:{port}", "--insecure")
    primary = rfs("primary", "pri")
    assert primary.cmd(f"attach 127.0.0.1 {port}") == "ok"
    writer = os.open(base / "pri" / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(writer, b"v1" * 4096)
        os.fsync(writer)
        reader = os.open(base / "sec" / "f", os.O_RDONLY)
        try:
            assert os.pread(reader, 1 << 20, 0) == b"v1" * 4096
            assert secondary.stats()["passthrough_opens"] == 1
            # What the receiver applies underneath is read at once, past the mount's
            # caches (a cached open could serve the old pages until the file is reopened).
            os.pwrite(writer, b"v2" * 8192, 0)
            os.fsync(writer)
            assert os.pread(reader, 1 << 20, 0) == b"v2" * 8192
            with open(base / "sec" / "f", "rb") as again:       # a second open shares the backing file
                assert again.read() == b"v2" * 8192
        finally:
            os.close(reader)
    finally:
        os.close(writer)
    assert (base / "pri" / "f").read_bytes() == b"v2" * 8192
    # The primary's opens never are: a writer of a file open for passthrough would map
    # the real file, and its writes would miss the stream.
    assert primary.stats()["passthrough_opens"] == 0
    assert secondary.stats()["passthrough_opens"] == 2


def test_without_passthrough_every_open_is_cached(rfs, base: Path):
    port = free_port()
    secondary = rfs("secondary", "sec", "--listen", f"127.0.0.1:{port}", "--insecure", "--no-passthrough")
    primary = rfs("primary", "pri")
    assert primary.cmd(f"attach 127.0.0.1 {port}") == "ok"
    with open(base / "pri" / "h", "wb") as f:
        f.write(b"x")
    assert (base / "sec" / "h").read_bytes() == b"x"
    assert secondary.stats()["passthrough_opens"] == 0
