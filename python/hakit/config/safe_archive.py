"""`.safe` module archives: a zip holding conf/userconfig.xml and bin/ scripts.

Archives are written deterministically (sorted names, fixed timestamps) so the same
module always packs to the same bytes, and read defensively: an archive comes from
elsewhere, so member paths are confined to the module directory and sizes bounded.
"""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from hakit.errors import HakitError

USERCONFIG = "conf/userconfig.xml"
ALLOWED_TOPS = ("conf", "bin")
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024  # unpacked, all members: a zip bomb stops here
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 4096
_EPOCH = (1980, 1, 1, 0, 0, 0)


KEY = "conf/key"


class ArchiveError(HakitError):
    pass


def _member_mode(name: str, executable: bool) -> int:
    """The module's key is for root's eyes only; scripts run; the rest is readable."""
    if name == KEY:
        return 0o600
    return 0o755 if executable else 0o644


def pack(module_dir: Path, out: Path) -> None:
    """Write module_dir's conf/ and bin/ into the archive `out`."""
    if not (module_dir / USERCONFIG).is_file():
        raise ArchiveError(f"{module_dir} has no {USERCONFIG}")
    files = sorted(
        p
        for top in ALLOWED_TOPS
        if (module_dir / top).is_dir()
        for p in (module_dir / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # 0600 from creation, a new file (no symlink followed): the archive may carry the key.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                info = zipfile.ZipInfo(path.relative_to(module_dir).as_posix(), _EPOCH)
                mode = _member_mode(path.relative_to(module_dir).as_posix(),
                                    bool(path.stat().st_mode & stat.S_IXUSR))
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unpack(archive: Path, dest: Path) -> None:
    """Extract a .safe archive into the (new, empty) directory `dest`; anything wrong
    with it is an ArchiveError saying what, and leaves dest incomplete (the caller's
    staging directory)."""
    try:
        st = archive.stat()
    except FileNotFoundError:
        raise ArchiveError(f"{archive}: no such file") from None
    except OSError as exc:
        raise ArchiveError(f"{archive}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArchiveError(f"{archive}: not a regular file")
    if st.st_size > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"{archive}: larger than {MAX_ARCHIVE_BYTES >> 20} MiB: not a module archive")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"{archive}: not a .safe archive ({exc})") from None
    with zf:
        try:
            _extract(zf, archive, dest)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError,
                zlib.error) as exc:
            raise ArchiveError(f"{archive}: damaged or unsupported member ({exc})") from None
        except OSError as exc:
            raise ArchiveError(f"{archive}: cannot unpack {exc.filename or ''}: {exc.strerror} "
                               "(a file where a directory is expected?)") from None


def _extract(zf: zipfile.ZipFile, archive: Path, dest: Path) -> None:
    members = [m for m in zf.infolist() if not m.is_dir()]
    names = {m.filename for m in members}
    if USERCONFIG not in names:
        raise ArchiveError(f"{archive}: no {USERCONFIG} inside")
    for m in members:
        rel = PurePosixPath(m.filename)
        if rel.is_absolute() or ".." in rel.parts or rel.parts[0] not in ALLOWED_TOPS:
            raise ArchiveError(f"{archive}: refusing member {m.filename!r} (only conf/ and bin/)")
        if m.file_size > MAX_MEMBER_BYTES:
            raise ArchiveError(f"{archive}: member {m.filename} is too large")
    if len(members) > MAX_MEMBERS:
        raise ArchiveError(f"{archive}: {len(members)} members, more than {MAX_MEMBERS}")
    if sum(m.file_size for m in members) > MAX_TOTAL_BYTES:
        raise ArchiveError(f"{archive}: more than {MAX_TOTAL_BYTES >> 20} MiB once unpacked")
    dest.mkdir(parents=True)
    for m in members:
        target = dest.joinpath(*PurePosixPath(m.filename).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Scripts must stay executable even from archives made on Windows.
        executable = bool((m.external_attr >> 16) & 0o100) or PurePosixPath(m.filename).parts[0] == "bin"
        mode = _member_mode(m.filename, executable)
        # The final mode from creation (the key is never readable by others), a new file.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as f, zf.open(m) as src:
            # Never more than the member announced: a lying header does not fill the disk.
            data = src.read(m.file_size + 1)
            if len(data) != m.file_size:
                raise ArchiveError(f"{archive}: member {m.filename} is not the size it announces")
            f.write(data)
        os.chmod(target, mode)  # whatever the umask took away
