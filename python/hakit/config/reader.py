"""Reading an XML tree into the declared dataclasses, collecting every problem.

A configuration with problems is reported whole (one FILE:LINE line per problem),
not stopped at the first: an operator fixing a file wants the full list.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hakit.config.schema import attrs_of, children_of, text_of
from hakit.config.xmltree import XNode

_MACRO_REF = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")
MAX_MACRO_DEPTH = 8


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str
    warning: bool = False  # said, but the file is valid

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {'warning: ' if self.warning else ''}{self.message}"


def closest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest valid name, or ''."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not match:
        lowered = {c.lower(): c for c in candidates}
        if name.lower() in lowered:
            match = [lowered[name.lower()]]
    return f" (did you mean '{match[0]}'?)" if match else ""


class Reader:
    """Reads one file; `problems` holds what was wrong, in file order."""

    def __init__(self, file: str, macros: Mapping[str, str] | None = None) -> None:
        self.file = file
        self.macros = dict(macros or {})
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        # Elements' source lines, for semantic checks made after reading.
        self.lines: dict[int, int] = {}

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def expand(self, value: str, line: int) -> str:
        """Replace %NAME% by the value of macro NAME.  Unknown names are left as
        written: '%' is legitimate in regexes and script arguments."""
        for _ in range(MAX_MACRO_DEPTH):
            new = _MACRO_REF.sub(lambda m: self.macros.get(m.group(1), m.group(0)), value)
            if new == value:
                return new
            value = new
        self.problem(line, f"macro expansion does not end (a macro refers to itself): {value!r}")
        return value

    def read(self, node: XNode, cls: type, known_tags: Mapping[str, str] | None = None) -> Any:
        """Build a `cls` from `node`.  `known_tags` maps every tag of the schema to its
        parent, to tell 'misplaced' from 'misspelt'."""
        kwargs: dict[str, Any] = {}
        # An attribute missing or unreadable is reported and the element left out of the
        # model: checks on it, or on a default standing in for what the user wrote, would
        # only add noise (or trip over a None).
        incomplete = False
        attrs = attrs_of(cls)
        for name, raw in node.attrs.items():
            if name not in attrs:
                self.problem(
                    node.line, f"<{node.tag}> has no attribute '{name}'{closest(name, attrs)}"
                )
                continue
            field_name, spec = attrs[name]
            if spec.ignored:
                # SafeKit still accepts it: so does hakit, saying it has no effect.
                self.warnings.append(Problem(self.file, node.line, f"<{node.tag} {name}> is obsolete: "
                                             "accepted and ignored", warning=True))
            try:
                kwargs[field_name] = spec.kind.parse(self.expand(raw, node.line))
            except ValueError as exc:
                self.problem(node.line, f"<{node.tag} {name}>: {exc}")
                incomplete = True
        for name, (_field_name, spec) in attrs.items():
            if spec.required and name not in node.attrs:
                self.problem(node.line, f"<{node.tag}> needs the attribute '{name}'")
                incomplete = True

        children = children_of(cls)
        seen: dict[str, list[Any]] = {}
        present: set[str] = set()  # includes incomplete children, already reported
        partial = False  # a child was left out: this element's checks would misjudge it
        for sub in node.children:
            if sub.tag not in children:
                self.problem(sub.line, self._unknown_child(sub.tag, node.tag, children, known_tags))
                continue
            _field_name, cspec = children[sub.tag]
            if not cspec.many and sub.tag in present:
                self.problem(sub.line, f"<{node.tag}> may contain only one <{sub.tag}>")
                continue
            present.add(sub.tag)
            value = self.read(sub, cspec.cls, known_tags)
            if value is None:
                partial = True
            else:
                seen.setdefault(sub.tag, []).append(value)
        for tag, (field_name, cspec) in children.items():
            values = seen.get(tag, [])
            if cspec.required and tag not in present:
                self.problem(node.line, f"<{node.tag}> needs a <{tag}> element")
            if values:
                kwargs[field_name] = tuple(values) if cspec.many else values[0]

        txt = text_of(cls)
        if txt is not None:
            kwargs[txt[0]] = self.expand(node.text, node.line)
        elif node.text.strip():
            self.problem(node.line, f"<{node.tag}> takes no text: {node.text.strip()[:40]!r}")

        if incomplete:
            return None
        obj = cls(**kwargs)
        self.lines[id(obj)] = node.line
        validate = None if partial else getattr(obj, "validate", None)
        if validate is not None:
            # A check yields a message, or (lines below the element, message) when
            # it knows better, as the failover rule parser does, or (a child, message)
            # for a problem of that child (the later of two duplicates).
            for item in validate():
                where, message = item if isinstance(item, tuple) else (0, item)
                line = node.line + where if isinstance(where, int) else self.lines.get(id(where), node.line)
                self.problem(line, message)
        return obj

    @staticmethod
    def _unknown_child(
        tag: str, parent: str, allowed: Mapping[str, Any], known: Mapping[str, str] | None
    ) -> str:
        if known and tag in known:
            return f"<{tag}> is not allowed inside <{parent}> (it belongs inside <{known[tag]}>)"
        return f"unknown element <{tag}> inside <{parent}>{closest(tag, allowed)}"


def tag_parents(root: type[Any]) -> dict[str, str]:
    """Every tag reachable from `root`, mapped to (one of) its parent tags."""
    out: dict[str, str] = {}
    todo = [root]
    while todo:
        cls = todo.pop()
        for tag, (_f, spec) in children_of(cls).items():
            if tag not in out:
                out[tag] = cls.TAG
                todo.append(spec.cls)
    return out
