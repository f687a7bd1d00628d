"""The configuration reference, generated from the element declarations.

docs/configuration.md holds a hand-written introduction and, between two markers,
the output of generate(): every element with its attributes, values and defaults,
taken from the same dataclasses the reader uses, so the reference cannot describe
a syntax the reader does not accept.

    python -m hakit.config.docgen                 print the generated reference
    python -m hakit.config.docgen --write FILE    regenerate the marked part of FILE
    python -m hakit.config.docgen --check FILE    exit 1 when FILE is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakit.config import kinds
from hakit.config.cluster_model import Cluster
from hakit.config.kinds import Duration
from hakit.config.module_model import CHECKERS, Interface, Proc, Safe, VirtualAddr
from hakit.config.reader import MAX_MACRO_DEPTH
from hakit.config.rules import ACTIONS
from hakit.config.schema import AttrSpec, ChildSpec, attrs_of, children_of, text_of

BEGIN = "<!-- BEGIN GENERATED -->"
END = "<!-- END GENERATED -->"
REGENERATE = "PYTHONPATH=python .venv/bin/python -m hakit.config.docgen --write docs/configuration.md"

# Resource and generated-rule prefixes of each checker.  The checkers name their
# resources this way; a test holds every checker's DOC to the same names.
# Parsed by the tests, so the reference never shows a rule the parser refuses.
RULE_EXAMPLE = """
# the VIP is gone while the application still answers locally
vip_lost: if (ip.10.0.0.10 == down && tcp.web == up) then stopstart();
"""

# Runs of XML in prose (<heartbeat name>, tcp.<ident>, <farm><lan/></farm>) become code
# spans: left as they are, Markdown renderers would swallow them as HTML tags.
_XML_RUN = re.compile(r"[\w.]*(?:<[!/A-Za-z_][^<>]*>\w*)+")


def _prose(text: str, *, cell: bool = False) -> str:
    out: list[str] = []
    pos = 0
    for m in _XML_RUN.finditer(text):
        out.append(_escape(text[pos : m.start()], cell))
        code = m.group(0).replace("|", "\\|") if cell else m.group(0)
        out.append(f"`{code}`")
        pos = m.end()
    out.append(_escape(text[pos:], cell))
    return "".join(out)


def _escape(text: str, cell: bool) -> str:
    text = text.replace("*", "\\*")
    # Kind docs arrive with their pipes already escaped for tables.
    return re.sub(r"(?<!\\)\|", r"\\|", text) if cell else text


@dataclass
class _Section:
    cls: type[Any]
    paths: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "-".join(self.paths[0]).replace("_", "-")


def _sections(root: type[Any]) -> list[_Section]:
    """Every element class under `root`, in document order, with all the paths it
    can be reached by (<to> serves several checkers)."""
    found: dict[type, _Section] = {}

    def walk(cls: type[Any], path: tuple[str, ...]) -> None:
        section = found.setdefault(cls, _Section(cls))
        first = not section.paths
        section.paths.append(path)
        if first:
            for tag, (_name, spec) in children_of(cls).items():
                walk(spec.cls, (*path, tag))

    walk(root, (root.TAG,))
    return list(found.values())


def _cardinality(spec: ChildSpec) -> str:
    if spec.many:
        return "one or more" if spec.required else "any number"
    return "required" if spec.required else "optional"


def _default(spec: AttrSpec) -> str:
    if spec.required:
        return "required"
    if spec.default is None:
        return "—"
    shown = spec.kind.show(spec.default)
    return f"`{shown}`" if shown else '`""`'


def _meaning(spec: AttrSpec) -> str:
    text = _prose(spec.doc, cell=True)
    return f"{text} *(accepted for compatibility, ignored)*" if spec.ignored else text


def _element(section: _Section, anchors: dict[type, str]) -> Iterator[str]:
    cls = section.cls
    yield f'<a id="{section.anchor}"></a>'
    yield ""
    yield f"### `<{cls.TAG}>`"
    yield ""
    where = ", ".join(f"`{'/'.join(p)}`" for p in section.paths)
    yield f"Path{'s' if len(section.paths) > 1 else ''}: {where}"
    yield ""
    yield _prose(cls.DOC)
    yield ""
    attrs = attrs_of(cls)
    if attrs:
        yield "| attribute | values | default | meaning |"
        yield "| --- | --- | --- | --- |"
        for xml_name, (_name, spec) in attrs.items():
            values = _escape(spec.kind.doc, cell=True)
            yield f"| `{xml_name}` | {values} | {_default(spec)} | {_meaning(spec)} |"
        yield ""
    txt = text_of(cls)
    if txt is not None:
        yield f"Text content: {_prose(txt[1].doc)}"
        yield ""
    children = children_of(cls)
    if children:
        listed = ", ".join(
            f"[`<{tag}>`](#{anchors[spec.cls]}) ({_cardinality(spec)})"
            for tag, (_name, spec) in children.items()
        )
        yield f"Contains: {listed}."
        yield ""


def _file_part(title: str, intro: str, root: type[Any]) -> Iterator[str]:
    sections = _sections(root)
    anchors = {s.cls: s.anchor for s in sections}
    yield f"## {title}"
    yield ""
    yield intro
    yield ""
    for section in sections:
        yield from _element(section, anchors)


def _durations() -> Iterator[str]:
    yield "## Time values"
    yield ""
    yield (
        "A time attribute takes a number, optionally followed by a unit. A plain number is read "
        "in the attribute's own unit, the one SafeKit uses for it, so existing files keep their "
        'meaning: `<heart pulse="700">` is 0.7 seconds and `loop_interval="24"` is 24 hours. '
        "With a unit the number says what it is: `500ms`, `30s`, `5mn`, `2h`, `1d`. Decimals "
        "are allowed (`1.5s`)."
    )
    yield ""
    # The parser's own table, so the reference cannot list a suffix the reader refuses.
    by_factor: dict[float, list[str]] = {}
    for suffix, factor in kinds._UNITS.items():
        by_factor.setdefault(factor, []).append(f"`{suffix}`")
    yield "| unit | suffixes |"
    yield "| --- | --- |"
    for factor, suffixes in sorted(by_factor.items()):
        yield f"| {_seconds(factor)} | {', '.join(suffixes)} |"
    yield ""
    yield "Time attributes and the unit of a plain number:"
    yield ""
    yield "| attribute | plain number in | default |"
    yield "| --- | --- | --- |"
    for root in (Cluster, Safe):
        for section in _sections(root):
            for xml_name, (_name, spec) in attrs_of(section.cls).items():
                if isinstance(spec.kind, Duration):
                    where = f"[`<{section.cls.TAG} {xml_name}>`](#{section.anchor})"
                    yield f"| {where} | {spec.kind.unit} | {_default(spec)} |"
    yield ""


def _seconds(factor: float) -> str:
    names = {0.001: "millisecond", 1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
    return names.get(factor, f"{factor:g} s")


def _macros() -> Iterator[str]:
    yield "## Macros"
    yield ""
    yield (
        'A userconfig.xml may define named values with `<macro name="NAME" value="..."/>` and use '
        "them as `%NAME%` in any attribute value or text content of the same file: paths, "
        "addresses, `<var>` values given to the scripts, checker arguments, failover rules. "
        "Macros are expanded before values are checked, so "
        '`<replicated dir="%REPDIR%"/>` must expand to an absolute path.'
    )
    yield ""
    yield (
        "Macros go inside `<safe>`, or before it at the top of the file as in some SafeKit "
        "examples; both forms are read the same way. cluster.xml has no macros."
    )
    yield ""
    yield (
        "A macro value may use other macros; expansion repeats until nothing changes, at most "
        f"{MAX_MACRO_DEPTH} rounds. A macro that refers to itself, directly or through "
        "others, never settles and is reported as a problem. A `%WORD%` that names no macro is "
        "left as written, so percent signs in regular expressions and script arguments need no "
        "escaping."
    )
    yield ""


def _when(cls: Any) -> str:
    mirror, farm = cls.DEFAULT_WHEN
    return f"`{mirror}`" if mirror == farm else f"`{mirror}` (farm: `{farm}`)"


def _checkers() -> Iterator[str]:
    yield "## Checker resources and generated rules"
    yield ""
    yield (
        "Each checker keeps a resource up to date that failover rules and `hakit state` show: "
        "`up` or `down` while the checker runs, `unknown` while it does not. Its name is the "
        "checker's prefix and its `ident`. When the checker has an `action` attribute, hakit also "
        "generates the failover rule that applies that action when the resource goes down; its "
        "label is the rule prefix and the `ident`. Write a rule in `<failover>` only for "
        "conditions those generated rules do not express."
    )
    yield ""
    yield "| checker | resource | generated rule | default action | runs (default `when`) |"
    yield "| --- | --- | --- | --- | --- |"
    anchors = {s.cls: s.anchor for s in _sections(Safe)}
    for cls in CHECKERS:
        resource, rule = cls.RESOURCE, cls.RULE_PREFIX
        action = attrs_of(cls)["action"][1].default
        shown = f"`{action}`" if action else "none: write the rule"
        ident = "<ident>"
        yield (f"| [`<{cls.TAG}>`](#{anchors[cls]}) | `{resource}.{ident}` | `{rule}{ident}` | {shown} "
               f"| {_when(cls)} |")
    yield ""
    yield (
        "`when` says in which states a checker runs: `pre` from the module's start to its stop; "
        "`prim` on a mirror's primary (after `start_prim`, until `stop_prim`; a light module is "
        "always primary); `second` on the secondary; `both` on either side. On a farm node every "
        "checker but the `pre` ones runs once `start_both` has run."
    )
    yield ""
    yield (
        "What each one tests: `tcp` connects to `<to addr port>` every `interval` (down when "
        "the connection fails within `timeout`); `ping` sends ICMP echo requests to `<to addr>` "
        "(down when none is answered within `timeout`); `intf` follows the kernel's link events "
        "(up while the link is administratively up and has a carrier); `ip` follows the "
        "kernel's address events (up while the address is configured on one of the node's "
        "interfaces); `custom` keeps its program running while the checker runs (restarted a second after "
        "it exits, killed with its process group when it stops), and the program sets the "
        "resource with `hakit set -r custom.<ident> -v up|down`; `module` asks every second "
        "for the other module's state (up when it is Ready in ALONE, PRIM, SECOND or UP)."
    )
    yield ""
    yield (
        f'`<interface check="on">` adds an `intf` checker named after the interface (`intf.eth0`, '
        f"rule `i_eth0`, action `{Interface.GENERATED_ACTION}`); without `<interface name>`, the "
        "interface is the one whose subnet holds the first address. "
        '`<virtual_addr check="on">` in `<real_interface>` adds an `ip` checker named after the '
        f"address (`ip.10.0.0.10`, rule `ip_10.0.0.10`, action `{VirtualAddr.GENERATED_ACTION}`). "
        "A checker written in `<check>` for the same resource replaces the generated one. "
        '*(next)* `<virtual_addr check="on">` in a farm\'s `<virtual_interface>` is not watched '
        "yet. Heartbeats show as `heartbeat.<LAN name>`. The split-brain checker has no resource: "
        "it is consulted only when every heartbeat is lost."
    )
    yield ""
    proc = attrs_of(Proc)
    yield (
        "Process monitoring (`<errd><proc>`) publishes `errd.<name>` (`errd.<name>.2`, `.3`, … "
        "when several `<proc>` share a name) and acts by itself, without a rule: when the count "
        "of this node's matching processes leaves [`atleast`, `atmost`] it runs the `action` "
        f"(default `{proc['action'][1].default}`): a module action, or any other word as a script "
        f"of the module's `bin/`. Its `class` (default `{proc['class'][1].default}`) works as "
        "`when` above; `sec` is read as `second`; any other class runs between "
        "`hakit errd enable CLASS` and `hakit errd disable CLASS`. `name` is compared with the "
        "process name as `ps` shows it (15 characters); `nameregex` and `argregex` match anywhere "
        "in the name and in the command line (anchor them with `^` and `$`)."
    )
    yield ""


def _rules() -> Iterator[str]:
    yield "## Failover rule grammar"
    yield ""
    yield (
        "`<failover>` holds rules, usually inside a CDATA section so that `&&` needs no XML "
        "escaping. Spaces and line breaks are free; `#` starts a comment that runs to the "
        "end of the line."
    )
    yield ""
    yield "```"
    yield "rules      = { rule }"
    yield 'rule       = label ":" "if" "(" expression ")" "then" action "(" ")" ";"'
    yield 'expression = conjunct { "||" conjunct }'
    yield 'conjunct   = unary { "&&" unary }'
    yield 'unary      = "!" unary | "(" expression ")" | resource ( "==" | "!=" ) value'
    yield "action     = " + " | ".join(f'"{a}"' for a in ACTIONS)
    yield "```"
    yield ""
    yield (
        "`!` binds tighter than `&&`, which binds tighter than `||`. Labels, resources and values "
        "are words of letters, digits and `_ . - ? *`; in a resource name `?` and `*` stand for "
        "any checker of that class (`ip.?`, `heartbeat.*`). Every label is used once. A syntax "
        "error is reported at the line of the file where it occurs. The `restart` and "
        "`stopstart` actions count towards the module's `maxloop`."
    )
    yield ""
    yield "```xml"
    yield f"<failover><![CDATA[{RULE_EXAMPLE}]]></failover>"
    yield "```"
    yield ""


def generate() -> str:
    """The generated part of docs/configuration.md (between the markers)."""
    lines: list[str] = []
    lines += _file_part(
        "cluster.xml",
        "The nodes of the cluster and their addresses on each network. Every node holds the "
        "same file; `hakit cluster confinfo` prints its signature, equal on nodes that agree.",
        Cluster,
    )
    lines += _file_part(
        "userconfig.xml",
        "One application module: its kind, virtual addresses, replicated directories, scripts, "
        "checkers and failover rules.",
        Safe,
    )
    lines += _durations()
    lines += _macros()
    lines += _checkers()
    lines += _rules()
    return "\n".join(lines).rstrip("\n") + "\n"


def splice(document: str, generated: str) -> str:
    """`document` with the text between the markers replaced by `generated`."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN} and {END} are missing or out of order")
    head = document[: start + len(BEGIN)]
    return f"{head}\n\n{generated}\n{document[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hakit.config.docgen", description="Generate the configuration reference."
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="FILE", help="regenerate the marked part of FILE")
    action.add_argument("--check", type=Path, metavar="FILE", help="exit 1 when FILE is out of date")
    args = parser.parse_args(argv)
    if args.write is None and args.check is None:
        sys.stdout.write(generate())
        return 0
    target: Path = args.write or args.check
    try:
        current = target.read_text(encoding="utf-8")
        updated = splice(current, generate())
    except (OSError, ValueError) as exc:
        print(f"{target}: {exc}", file=sys.stderr)
        return 1
    if args.check is not None:
        if updated != current:
            print(f"{target} is out of date; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if updated != current:
        target.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
