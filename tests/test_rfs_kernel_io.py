"""What hakit-rfs asks of the kernel's FUSE: opens on the secondary's read-only mount
served from the real file (passthrough), none on the primary; the primary's page cache
kept across attribute refreshes.  hakit-rfs on this host, the secondary on 127.0.0.1."""

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


def served(rfs_process) -> dict[str, int]:
    """Requests per opcode since the mount."""
    reply = rfs_process.cmd("served")
    assert reply.startswith("ok"), reply
    return {k: int(v.split(":")[0]) for k, v in (w.split("=") for w in reply.split()[1:])}


def test_the_primary_reads_back_what_it_wrote_from_its_cache(rfs, base: Path):
    """Each write moves the file's mtime; the next GETATTR (a database's lseek to the
    end, a stat) must not drop the pages the kernel holds, or every read becomes a
    request."""
    primary = rfs("primary", "pri")
    path = base / "pri" / "db"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        for block in range(64):
            os.pwrite(fd, bytes([block]) * 8192, block * 8192)
            os.fsync(fd)
            os.fstat(fd)
            os.lseek(fd, 0, os.SEEK_END)
        reads = served(primary).get("read", 0)
        for block in range(64):
            assert os.pread(fd, 8192, block * 8192) == bytes([block]) * 8192
        assert served(primary).get("read", 0) == reads
    finally:
        os.close(fd)


def bdi_readahead_kb(dev: str) -> int:
    return int(Path(f"/sys/class/bdi/{dev}/read_ahead_kb").read_text())


def test_the_mount_reads_ahead_as_far_as_the_disk(rfs, base: Path):
    """FUSE gives a mount 128 KiB of readahead: a cold sequential read through it would
    run at a fraction of the disk's speed."""
    st = os.stat(base)
    disk = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not disk.exists():
        pytest.skip("the test directory is not on a block device")
    bdi = disk / "bdi" if (disk / "bdi").exists() else disk / ".." / "bdi"   # a partition's is its disk's
    disk_kb = int((bdi / "read_ahead_kb").read_text())
    rfs("primary", "pri")
    mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    dev = next(f[2] for f in reversed(mounts) if f[4] == str(base / "pri"))
    assert bdi_readahead_kb(dev) == disk_kb
