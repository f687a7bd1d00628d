"""Value kinds of configuration attributes: how a string from XML becomes a typed value.

Each kind parses and also describes itself, so the configuration reference in
docs/ is generated from the same objects the reader uses.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from hakit import linear_re


class Kind:
    doc: str = "text"

    def parse(self, raw: str) -> Any:
        return raw

    def show(self, value: Any) -> str:
        return str(value)


@dataclass(frozen=True)
class Text(Kind):
    nonempty: bool = False

    @property
    def doc(self) -> str:  # type: ignore[override]
        return "text"

    def parse(self, raw: str) -> str:
        if self.nonempty and not raw.strip():
            raise ValueError("must not be empty")
        return raw


@dataclass(frozen=True)
class Int(Kind):
    lo: int | None = None
    hi: int | None = None

    @property
    def doc(self) -> str:  # type: ignore[override]
        if self.lo is not None and self.hi is not None:
            return f"integer {self.lo}..{self.hi}"
        if self.lo is not None:
            return f"integer ≥ {self.lo}"
        return "integer"

    def parse(self, raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ValueError(f"{value} is out of range ({self.doc})")
        return value


@dataclass(frozen=True)
class OnOff(Kind):
    doc = "on \\| off"

    def parse(self, raw: str) -> bool:
        v = raw.strip().lower()
        if v in ("on", "yes", "true", "1"):
            return True
        if v in ("off", "no", "false", "0"):
            return False
        raise ValueError(f"{raw!r} is not on or off")

    def show(self, value: Any) -> str:
        return "on" if value else "off"


@dataclass(frozen=True)
class Choice(Kind):
    values: tuple[str, ...]

    @property
    def doc(self) -> str:  # type: ignore[override]
        return " \\| ".join(self.values)

    def parse(self, raw: str) -> str:
        v = raw.strip()
        if v not in self.values:
            raise ValueError(f"{raw!r} is not one of {', '.join(self.values)}")
        return v


_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "mn": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Duration(Kind):
    """A time value in seconds.  A plain number is in `unit` (SafeKit's unit for that
    attribute: milliseconds for heartbeats, hours for loop_interval...); a suffixed
    number (500ms, 30s, 5mn, 2h, 1d) says its own unit."""

    unit: str = "s"

    @property
    def doc(self) -> str:  # type: ignore[override]
        return f"time (plain number in {self.unit}, or with ms/s/mn/h/d)"

    def parse(self, raw: str) -> float:
        m = _DURATION.match(raw)
        if not m:
            raise ValueError(f"{raw!r} is not a time value (e.g. 30, 500ms, 30s, 5mn, 2h)")
        number, suffix = float(m.group(1)), m.group(2).lower() or self.unit
        if suffix not in _UNITS:
            raise ValueError(f"unknown time unit {m.group(2)!r} (use ms, s, mn, h or d)")
        return number * _UNITS[suffix]

    def show(self, value: Any) -> str:
        scaled = float(value) / _UNITS[self.unit]
        return f"{scaled:g}" if self.unit == "s" else f"{scaled:g} ({self.unit})"


MIB = 1024 * 1024
_SIZE_UNITS = {"k": 1024, "m": MIB, "g": 1024 * MIB}
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmg])(?:i?b)?)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Size(Kind):
    """A size in bytes: a plain number is in MiB, a suffixed one (512K, 64M, 1G, 64MiB)
    says its own unit, powers of 1024."""

    least: int = 0

    @property
    def doc(self) -> str:  # type: ignore[override]
        return f"size (plain number in MiB, or with K/M/G), at least {self.show(self.least)}"

    def parse(self, raw: str) -> int:
        m = _SIZE.match(raw)
        if not m:
            raise ValueError(f"{raw!r} is not a size (e.g. 64, 512K, 64M, 1G)")
        value = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "m").lower()]
        if value < self.least:
            raise ValueError(f"{raw!r} is less than {self.show(self.least)}")
        return value

    def show(self, value: Any) -> str:
        for suffix in "GMK":
            if value and value % _SIZE_UNITS[suffix.lower()] == 0:
                return f"{value // _SIZE_UNITS[suffix.lower()]}{suffix}"
        return str(value)


@dataclass(frozen=True)
class Host(Kind):
    """An address or a DNS name, resolved when used (SafeKit accepts both)."""

    doc = "IP address or host name"

    def parse(self, raw: str) -> str:
        v = raw.strip()
        if not v or not re.fullmatch(r"[A-Za-z0-9_.:\-]+", v):
            raise ValueError(f"{raw!r} is not an IP address or host name")
        # All digits and dots: meant as an address, whatever a resolver would make of it.
        if re.fullmatch(r"[0-9.]+", v):
            try:
                ipaddress.IPv4Address(v)
            except ValueError:
                raise ValueError(f"{raw!r} is not a valid IPv4 address (four numbers of 0 to 255)") from None
        return v


@dataclass(frozen=True)
class Netmask(Kind):
    doc = "netmask (255.255.255.0) or prefix length (24)"

    def parse(self, raw: str) -> int:
        v = raw.strip()
        try:
            if v.isdigit():
                prefix = int(v)
                if 0 <= prefix <= 32:
                    return prefix
            else:
                return ipaddress.IPv4Network(f"0.0.0.0/{v}").prefixlen
        except ValueError:
            pass
        raise ValueError(f"{raw!r} is not a netmask")


@dataclass(frozen=True)
class AbsPath(Kind):
    doc = "absolute path"

    def parse(self, raw: str) -> str:
        v = raw.strip()
        if not v.startswith("/"):
            # Not !r: a Windows path would show doubled backslashes the user never wrote.
            raise ValueError(f"'{raw}' is not an absolute Linux path")
        return v.rstrip("/") or "/"


@dataclass(frozen=True)
class Regex(Kind):
    doc = "POSIX extended regular expression (leading ! = replicate only)"

    def parse(self, raw: str) -> str:
        try:
            re.compile(raw[1:] if raw.startswith("!") else raw)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return raw


@dataclass(frozen=True)
class ProcRegex(Kind):
    doc = "regular expression (RE2 syntax: no back-references or look-arounds)"

    def parse(self, raw: str) -> str:
        linear_re.compile(raw)
        return raw


@dataclass(frozen=True)
class PortSpec(Kind):
    """A port, a range a-b, or * for every port (load-balancing rules)."""

    doc = "port, range (a-b) or *"

    def parse(self, raw: str) -> str:
        v = raw.strip()
        if v == "*":
            return v
        parts = v.split("-")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{raw!r} is not a port, a range or *") from None
        if len(nums) > 2 or not all(0 < n < 65536 for n in nums) or nums != sorted(nums):
            raise ValueError(f"{raw!r} is not a port, a range or *")
        return v
