"""Which modules hakitd starts when it starts (the node's boot), SafeKit's way.

`<service boot>` decides: on, off, auto (only a module that was running when the node
or hakitd went down: the marker hakitd keeps while it runs, which an operator's stop
removes and hakitd's own stop at shutdown keeps).  With boot="ignore", the default,
the node's own setting decides, made with `hakit boot -m AM on|off` on each node, as
before SafeKit 7.5; without one, the module is not started.  The effective choice is the
module's resource `usersetting.boot`.
"""

from __future__ import annotations

from pathlib import Path

from hakit.errors import HakitError
from hakit.files import write_atomic
from hakit.paths import Paths

SETTINGS = ("on", "off")


def setting_path(p: Paths, module: str) -> Path:
    return p.module_var(module) / "boot"


def setting(p: Paths, module: str) -> str | None:
    """The node's `hakit boot` setting of the module, if it was ever given."""
    try:
        value = setting_path(p, module).read_text().strip()
    except FileNotFoundError:
        return None
    return value if value in SETTINGS else None


def set_setting(p: Paths, module: str, value: str) -> None:
    if value not in SETTINGS:
        raise HakitError(f"boot: 'on' or 'off', not {value!r}")
    write_atomic(setting_path(p, module), f"{value}\n".encode())


def effective(configured: str, node_setting: str | None) -> str:
    """on, off or auto: what the next boot does with the module."""
    if configured != "ignore":
        return configured
    return node_setting or "off"


def starts(configured: str, node_setting: str | None, ran_before: bool) -> bool:
    choice = effective(configured, node_setting)
    return choice == "on" or (choice == "auto" and ran_before)
