"""Administrator switches of a module's checkers, kept while it is stopped and across restarts.

`hakit errd suspend|resume|off|on` and `hakit checker off|on` write
/var/lib/hakit/modules/AM/admin.json; a running module re-reads it when told.
errd "suspended" and "off" both stop process monitoring and both persist: SafeKit
8.2 made suspend/resume persistent too and added off/on as the clearer names; the
two words are kept apart only so that `hakit state` says which one was used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hakit.errors import HakitError
from hakit.files import write_atomic
from hakit.paths import Paths

ERRD_STATES = ("on", "off", "suspended")
CHECKER_STATES = ("on", "off")


@dataclass(frozen=True)
class AdminFlags:
    errd: str = "on"
    checker: str = "on"

    def __post_init__(self) -> None:
        if self.errd not in ERRD_STATES or self.checker not in CHECKER_STATES:
            raise ValueError(f"bad admin flags errd={self.errd!r} checker={self.checker!r}")

    @staticmethod
    def path(paths: Paths, module: str) -> Path:
        return paths.module_var(module) / "admin.json"

    @classmethod
    def load(cls, paths: Paths, module: str) -> AdminFlags:
        path = cls.path(paths, module)
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in ("errd", "checker")})
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise HakitError(f"{path} is damaged ({exc}); remove it to turn every checker on") from None

    def save(self, paths: Paths, module: str) -> None:
        path = self.path(paths, module)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(path, (json.dumps(asdict(self)) + "\n").encode(), 0o600)
        except OSError as exc:
            raise HakitError(f"cannot write {path}: {exc.strerror}") from None
