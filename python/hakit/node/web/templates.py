"""Module templates for the console's wizard: the macros a template's userconfig.xml declares
(with the comment above each, which says what to put there), and a copy of the template with
the values an operator filled in."""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from hakit.config.safe_archive import pack, unpack
from hakit.errors import HakitError
from hakit.module.catalog import template, template_names

USERCONFIG = "conf/userconfig.xml"
# A macro, with the comment just above it if there is one.
MACRO = re.compile(r'(?:<!--\s*(?P<comment>.*?)\s*-->\s*)?<macro\s+name="(?P<name>[^"]+)"\s+'
                   r'value=(?P<value>"[^"]*"|\'[^\']*\')\s*/>', re.S)


def _archive(name: str) -> Path:
    path = template(f"{name}.safe")
    if path is None:
        raise HakitError(f"no template {name!r} (shipped: "
                         f"{', '.join(t.removesuffix('.safe') for t in template_names())})")
    return path


def listing() -> list[dict[str, Any]]:
    out = []
    for file in template_names():
        name = file.removesuffix(".safe")
        with zipfile.ZipFile(_archive(name)) as zf:
            text = zf.read(USERCONFIG).decode()
        out.append({"name": name, "userconfig": text,
                    "macros": [{"name": m["name"], "value": m["value"][1:-1], "comment": m["comment"] or ""}
                               for m in MACRO.finditer(text)]})
    return out


def filled(name: str, values: dict[str, str], out: Path) -> str:
    """Write to `out` the template with its macros set to `values`; returns its userconfig.xml."""
    with tempfile.TemporaryDirectory(prefix="hakit-template-") as tmp:
        staged = Path(tmp) / name
        unpack(_archive(name), staged)
        conf = staged / USERCONFIG
        text = conf.read_text()
        known = {m["name"] for m in MACRO.finditer(text)}
        if unknown := sorted(set(values) - known):
            raise HakitError(f"template {name} has no macro {', '.join(unknown)} "
                             f"(its macros: {', '.join(sorted(known)) or 'none'})")

        def put(m: re.Match[str]) -> str:
            if m["name"] not in values:
                return m[0]
            start, end = m.span("value")
            return m[0][:start - m.start()] + quoteattr(values[m["name"]]) + m[0][end - m.start():]

        text = MACRO.sub(put, text)
        conf.write_text(text)
        pack(staged, out)
        shutil.rmtree(staged)
    return text
