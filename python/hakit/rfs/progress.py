"""How a synchronisation's progress reads for an operator, from the rfs.sync_* resources
(`hakit state -v`, `hakit rfsprogress`) and from rfsdiff's answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SyncProgress:
    active: bool  # a synchronisation runs
    done: int  # bytes
    total: int  # bytes, never less than done
    files: int
    rate: float  # bytes per second; 0 when unknown or not running


def sync_progress(values: Mapping[str, str]) -> SyncProgress:
    """The numbers of the synchronisation the rfs.sync_* resources among `values` describe."""
    active = values.get("rfs.sync_state") == "running"
    done, total = _int(values, "rfs.sync_bytes_scanned"), _int(values, "rfs.sync_bytes_total")
    elapsed = _int(values, "rfs.sync_elapsed_ms") / 1000
    return SyncProgress(active, done, max(total, done), _int(values, "rfs.sync_files_scanned"),
                        done / elapsed if active and elapsed > 0 else 0.0)


def sync_line(values: Mapping[str, str]) -> str | None:
    """"sync: incremental 1.2 GiB / 2.0 GiB (60 %), 1532 files, 95.0 MiB/s, ETA 8 s" while a
    synchronisation runs, else None.  `values`: resources, rfs.sync_* among them."""
    p = sync_progress(values)
    if not p.active:
        return None
    percent = int(sync_fraction(values) * 100)
    line = (f"sync: {values.get('rfs.sync_mode') or 'full'} {human_bytes(p.done)} / {human_bytes(p.total)} "
            f"({percent} %), {p.files} files")
    if p.rate > 0:
        line += f", {human_bytes(p.rate)}/s, ETA {human_duration((p.total - p.done) / p.rate)}"
    return line
