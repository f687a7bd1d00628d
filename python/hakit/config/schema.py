"""Declaring configuration elements as dataclasses.

An element is a frozen dataclass with a TAG; its fields declare the XML attributes
(attr), child elements (child) and text content (text).  The reader, the checker
and the generated reference in docs/configuration.md all walk these declarations,
so what is accepted, what it defaults to and what is documented cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from hakit.config.kinds import Kind, Text


class Element(Protocol):
    TAG: ClassVar[str]
    DOC: ClassVar[str]


@dataclass(frozen=True)
class AttrSpec:
    xml: str
    kind: Kind
    default: Any
    required: bool
    doc: str
    # Accepted for compatibility with SafeKit configurations but not acted upon.
    ignored: bool = False


@dataclass(frozen=True)
class ChildSpec:
    cls: type[Any]  # a model class: a dataclass with TAG and DOC
    many: bool
    required: bool


@dataclass(frozen=True)
class TextSpec:
    doc: str


def attr(
    doc: str,
    kind: Kind | None = None,
    default: Any = None,
    *,
    required: bool = False,
    xml: str | None = None,
    ignored: bool = False,
) -> Any:
    spec = AttrSpec(xml or "", kind or Text(), default, required, doc, ignored)
    return dataclasses.field(default=default, metadata={"attr": spec})


def child(cls: type, *, many: bool = False, required: bool = False) -> Any:
    spec = ChildSpec(cls, many, required)
    if many:
        return dataclasses.field(default_factory=tuple, metadata={"child": spec})
    return dataclasses.field(default=None, metadata={"child": spec})


def text(doc: str) -> Any:
    return dataclasses.field(default="", metadata={"text": TextSpec(doc)})


def attrs_of(cls: type) -> dict[str, tuple[str, AttrSpec]]:
    """XML attribute name -> (field name, spec)."""
    out: dict[str, tuple[str, AttrSpec]] = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("attr")
        if spec is not None:
            out[spec.xml or f.name] = (f.name, spec)
    return out


def children_of(cls: type) -> dict[str, tuple[str, ChildSpec]]:
    """Child tag -> (field name, spec)."""
    out: dict[str, tuple[str, ChildSpec]] = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("child")
        if spec is not None:
            out[spec.cls.TAG] = (f.name, spec)
    return out


def text_of(cls: type) -> tuple[str, TextSpec] | None:
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("text")
        if spec is not None:
            return f.name, spec
    return None


def later_duplicates(items: Iterable[Any], key: Callable[[Any], str]) -> Iterator[tuple[Any, str]]:
    """(item, its key) for each item whose key an earlier one had: the reader reports a
    duplicate at the line of its second occurrence."""
    seen: set[str] = set()
    for item in items:
        k = key(item)
        if k in seen:
            yield item, k
        seen.add(k)
