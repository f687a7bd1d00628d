"""How a synchronisation's progress reads for an operator, from the rfs.sync_* resources
(`hakit state -v`, `hakit rfsprogress`) and from rfsdiff's answer."""

from __future__ import annotations

from collections.abc import Mapping

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float) -> str:
    for unit in UNITS:
        if abs(n) < 1024 or unit == UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _int(values: Mapping[str, str], key: str) -> int:
    try:
        return int(values.get(key) or 0)
    except ValueError:
        return 0


def sync_fraction(values: Mapping[str, str]) -> float:
    """How much of the running synchronisation's data is done, 0 to 1."""
    done, total = _int(values, "rfs.sync_bytes_scanned"), _int(values, "rfs.sync_bytes_total")
    return min(1.0, done / total) if total else 1.0


def sync_line(values: Mapping[str, str]) -> str | None:
    """"sync: incremental 1.2 GiB / 2.0 GiB (60 %), 1532 files, 95.0 MiB/s, ETA 8 s" while a
    synchronisation runs, else None.  `values`: resources, rfs.sync_* among them."""
    if values.get("rfs.sync_state") != "running":
        return None
    done, total = _int(values, "rfs.sync_bytes_scanned"), _int(values, "rfs.sync_bytes_total")
    total = max(total, done)
    elapsed = _int(values, "rfs.sync_elapsed_ms") / 1000
    rate = done / elapsed if elapsed > 0 else 0.0
    percent = int(sync_fraction(values) * 100)
    line = (f"sync: {values.get('rfs.sync_mode') or 'full'} {human_bytes(done)} / {human_bytes(total)} "
            f"({percent} %), {_int(values, 'rfs.sync_files_scanned')} files")
    if rate > 0:
        line += f", {human_bytes(rate)}/s, ETA {human_duration((total - done) / rate)}"
    return line
