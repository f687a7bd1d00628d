"""A small XML tree that remembers line numbers, for FILE:LINE error messages.

SafeKit configurations are read unchanged, including two liberties its own reader
takes: a DOCTYPE line, and <macro> elements placed before the <safe> root (several
top-level elements).  The document is therefore parsed inside a synthetic wrapper.
"""

from __future__ import annotations

import os
import stat
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakit import linear_re

WRAPPER = "hakit-document"
_TAG_MISMATCH = xml.parsers.expat.errors.codes[xml.parsers.expat.errors.XML_ERROR_TAG_MISMATCH]
# Linear time: a backtracking engine took 73 s on 180 KB of repeated "<!DOCTYPE".
_PROLOG = linear_re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>\[]*(\[[^\]]*\])?\s*>", ignore_case=True)
MAX_BYTES = 4 << 20  # a configuration file is kilobytes: beyond this it is not one


@dataclass
class XNode:
    tag: str
    attrs: dict[str, str]
    line: int
    children: list[XNode] = field(default_factory=list)
    text: str = ""


class XmlSyntaxError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _blank_keep_lines(match: Any) -> str:
    # Keep newlines so expat's line numbers still match the user's file.
    return "\n" * match.group(0).count("\n")


def parse_text(text: str) -> list[XNode]:
    """Parse a document and return its top-level elements."""
    body = _PROLOG.sub(_blank_keep_lines, text)
    parser = xml.parsers.expat.ParserCreate()
    stack: list[XNode] = [XNode("", {}, 1)]

    def start(tag: str, attrs: dict[str, str]) -> None:
        node = XNode(tag, attrs, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        # The wrapper's tags share the first and last lines, so numbering is unchanged.
        parser.Parse(f"<{WRAPPER}>{body}</{WRAPPER}>", True)
    except xml.parsers.expat.ExpatError as exc:
        message = xml.parsers.expat.errors.messages.get(exc.code, str(exc))
        # stack[1] is the wrapper: above it, the user's innermost element still open,
        # which is what a mismatched (or missing) closing tag is really about.
        if exc.code == _TAG_MISMATCH and len(stack) > 2:
            message += f" (<{stack[-1].tag}> of line {stack[-1].line} is not closed)"
        raise XmlSyntaxError(exc.lineno, f"malformed XML: {message}") from None
    return stack[0].children[0].children


def _read_bounded(path: Path) -> bytes:
    """A regular file's bytes; anything else (a FIFO, a device, a directory) or a file
    beyond MAX_BYTES is refused at once, without waiting or reading it through."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
            raise XmlSyntaxError(0, f"not a regular file ({kind})")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise XmlSyntaxError(0, f"larger than {MAX_BYTES >> 20} MiB: not a configuration file")
    return data


def parse_file(path: Path) -> list[XNode]:
    try:
        text = _read_bounded(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XmlSyntaxError(1, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_text(text)
