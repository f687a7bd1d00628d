"""How a root daemon starts Python children (module processes, remote commands)."""

from __future__ import annotations

import sys


def python_argv(module: str, *args: str) -> list[str]:
    """`python -m module args...`, isolated (-I): neither the current directory, nor the
    user's site-packages, nor PYTHON* variables reach its import path, so that nothing
    planted where the daemon was started is imported as root."""
    return [sys.executable, "-I", "-m", module, *args]
