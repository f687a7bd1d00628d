"""Regular expressions matched in time linear in the text (RE2), for text anyone may
write: process names and command lines (any local user's), configuration files (an
operator's, perhaps damaged).  A backtracking engine takes exponential or quadratic
time on some of them, and would stall a module process, heartbeats included."""

from __future__ import annotations

from typing import Any


def compile(raw: str, ignore_case: bool = False) -> Any:
    """raw compiled by RE2 (no back-references or look-arounds, which need
    backtracking); ValueError says why not."""
    import re2  # (google-re2: loaded where such a regex is used)

    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(raw, options)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"invalid regular expression (linear-time syntax, without back-references "
                         f"or look-arounds): {why}") from None
