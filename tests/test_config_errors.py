"""What `hakit config check` says about wrong configurations: one FILE:LINE: message per
problem, the right line, a suggestion for a misspelt name, and never a traceback."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from hakit.config.cluster_model import Cluster
from hakit.config.loader import check_files
from hakit.config.module_model import Safe
from hakit.config.schema import attrs_of, children_of
from tests.config_support import SEEDS, hakit, isolated_root, write  # noqa: F401 - autouse fixture

TWO_LANS = SEEDS / "15.1.1-cluster-two-lans.xml"
THREE_NODES = SEEDS / "15.2.1-cluster-three-nodes.xml"


def problems(capsys: pytest.CaptureFixture[str], *files: Path) -> list[str]:
    """stderr lines of `hakit config check FILES`, which must fail."""
    run = hakit(capsys, "config", "check", *files)
    assert run.code == 1, run
    return run.err_lines


def mirror(*parts: str, service_attrs: str = 'mode="mirror"') -> str:
    """A mirror module whose <service> (line 3) holds the parts, one after the other
    from line 4 on, without blank lines."""
    body = "\n".join(textwrap.dedent(part).strip("\n") for part in parts)
    return f"<!DOCTYPE safe>\n<safe>\n  <service {service_attrs}>\n{body}\n  </service>\n</safe>\n"


HEART = """
<heart>
  <heartbeat name="default"/>
</heart>
"""  # lines 4-6


# ---------------------------------------------------------------- syntax and names


def test_unclosed_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        """\
        <safe>
          <service mode="mirror">
            <heart>
              <heartbeat name="default">
            </heart>
          </service>
        </safe>
        """,
    )
    assert problems(capsys, path) == [
        f"{path}:5: malformed XML: mismatched tag (<heartbeat> of line 4 is not closed)"
    ]


def test_misspelt_element_names_the_right_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, mirror('<hart>\n  <heartbeat name="default"/>\n</hart>'))
    assert problems(capsys, path) == [
        f"{path}:4: unknown element <hart> inside <service> (did you mean 'heart'?)"
    ]


def test_misspelt_attribute_names_the_right_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, mirror(HEART, service_attrs='mdoe="mirror"'))
    assert problems(capsys, path) == [
        f"{path}:3: <service> has no attribute 'mdoe' (did you mean 'mode'?)",
        f"{path}:3: <service> needs the attribute 'mode'",
    ]


def test_misplaced_element_says_where_it_belongs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, mirror('<heartbeat name="default"/>'))
    assert problems(capsys, path) == [
        f"{path}:4: <heartbeat> is not allowed inside <service> (it belongs inside <heart>)"
    ]


def test_bad_enum_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, mirror(HEART, service_attrs='mode="mirorr"'))
    assert problems(capsys, path) == [f"{path}:3: <service mode>: 'mirorr' is not one of mirror, farm, light"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "'fast' is not a time value (e.g. 30, 500ms, 30s, 5mn, 2h)"),
        ("-100", "'-100' is not a time value (e.g. 30, 500ms, 30s, 5mn, 2h)"),
        ("3weeks", "unknown time unit 'weeks' (use ms, s, mn, h or d)"),
    ],
)
def test_bad_time_value(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    path = write(
        tmp_path, mirror(f'<heart pulse="{value}" timeout="10s">\n  <heartbeat name="default"/>\n</heart>')
    )
    assert problems(capsys, path) == [f"{path}:4: <heart pulse>: {message}"]


@pytest.mark.parametrize(
    ("to", "line", "message"),
    [
        ('port="70000"', 9, "<to port>: 70000 is out of range (integer 1..65535)"),
        ('port="http"', 9, "<to port>: 'http' is not an integer"),
        ("", 8, '<tcp ident="web"><to> needs a port'),  # reported by <tcp>, which needs it
    ],
)
def test_bad_checker_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], to: str, line: int, message: str
) -> None:
    checker = f'<check>\n  <tcp ident="web">\n    <to addr="localhost" {to}/>\n  </tcp>\n</check>'
    path = write(tmp_path, mirror(HEART, checker))
    assert problems(capsys, path) == [f"{path}:{line}: {message}"]


@pytest.mark.parametrize("port", ["0", "65536", "80-20", "1-2-3", "web"])
def test_bad_load_balancing_port(tmp_path: Path, capsys: pytest.CaptureFixture[str], port: str) -> None:
    text = (SEEDS / "15.2.2.1-farm.xml").read_text().replace('port="9010"', f'port="{port}"')
    path = write(tmp_path, text)
    assert problems(capsys, path) == [f"{path}:19: <rule port>: '{port}' is not a port, a range or *"]


def test_duplicate_checker_ident(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checks = """
    <check>
      <tcp ident="web"><to addr="localhost" port="80"/></tcp>
      <tcp ident="web"><to addr="localhost" port="443"/></tcp>
    </check>
    """
    path = write(tmp_path, mirror(HEART, checks))
    assert problems(capsys, path) == [f'{path}:7: two <tcp> checkers share ident "web"']


def test_every_problem_is_listed_in_file_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = """
    <heart pulse="soon">
      <heartbeat name="default"/>
    </heart>
    <rfs nbremconn="99">
      <replicated dir="data"/>
    </rfs>
    <usr/>
    """
    path = write(tmp_path, mirror(body))
    assert [line.split(": ", 1)[0] for line in problems(capsys, path)] == [
        f"{path}:4",
        f"{path}:7",
        f"{path}:8",
        f"{path}:10",
    ]


# ---------------------------------------------------------------- failover rules


def test_rule_syntax_error_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = """
    <failover>
      <![CDATA[
      # the first rule is fine
      web_down: if (tcp.web == down) then restart();
      web_odd: if (tcp.web = down) then restart();
      ]]>
    </failover>
    """
    path = write(tmp_path, mirror(HEART, rules))
    assert problems(capsys, path) == [f"{path}:11: failover rule: unexpected character '='"]


def test_rule_error_on_a_continuation_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = """
    <failover><![CDATA[
      a: if (tcp.web == down) then restart();
      b: if (tcp.web == down
             && ping.gw == up) then explode();
    ]]></failover>
    """
    path = write(tmp_path, mirror(HEART, rules))
    assert problems(capsys, path) == [
        f"{path}:10: failover rule: unknown action 'explode' (use restart, stopstart, wait, stop, swap, prim)"
    ]


def test_rule_label_used_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = """
    <failover><![CDATA[
      a: if (tcp.web == down) then restart();
      a: if (ping.gw == down) then wait();
    ]]></failover>
    """
    path = write(tmp_path, mirror(HEART, rules))
    assert problems(capsys, path) == [f"{path}:9: failover rule: rule label 'a' is used twice"]


# ---------------------------------------------------------------- module kinds


def test_farm_without_farm_element(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (SEEDS / "15.2.2.1-farm.xml").read_text()
    start, end = text.index("  <farm>"), text.index("</farm>\n") + len("</farm>\n")
    path = write(tmp_path, text[:start] + text[end:])
    assert problems(capsys, path) == [f'{path}:4: a farm module needs <farm><lan name="…"/></farm>']


def test_replication_in_a_farm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (SEEDS / "15.2.2.1-farm.xml").read_text()
    path = write(tmp_path, text.replace("  <user>", '  <rfs><replicated dir="/srv"/></rfs>\n  <user>'))
    assert problems(capsys, path) == [
        f'{path}:4: <rfs> replication is for mirror modules only (mode="mirror")'
    ]


# ---------------------------------------------------------------- against cluster.xml


def test_unknown_lan_with_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (SEEDS / "15.1.2.2-mirror-flow-linux.xml").read_text().replace('"private"', '"privat"')
    path = write(tmp_path, text)
    expected = [f"{path}:8: LAN 'privat' is not in cluster.xml (did you mean 'private'?)"]
    assert problems(capsys, TWO_LANS, path) == expected


def test_installed_cluster_is_used_when_none_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (SEEDS / "15.1.2.2-mirror-flow-linux.xml").read_text().replace('"private"', '"privat"')
    path = write(tmp_path, text)
    assert hakit(capsys, "config", "check", path).code == 0  # nothing installed yet: nothing to compare
    assert hakit(capsys, "cluster", "config", TWO_LANS).code == 0
    assert problems(capsys, path) == [
        f"{path}:8: LAN 'privat' is not in cluster.xml (did you mean 'private'?)"
    ]


def test_unknown_host_in_load_balancing_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (SEEDS / "15.2.2.4-farm-power.xml").read_text()
    path = write(tmp_path, text.replace('<host name="node3" power="3"/>', '<host name="node4" power="3"/>'))
    assert problems(capsys, THREE_NODES, path) == [
        f"{path}:37: <host name=\"node4\"> is not a node of cluster.xml (did you mean 'node3'?)"
    ]


def test_cluster_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        """\
        <cluster>
          <lans>
            <lan name="default">
              <node name="node1" addr="10.0.0.1"/>
              <node name="node2" addr="10.0.0.1"/>
            </lan>
            <lan name="default">
              <node name="node3" addr="10.1.0.3"/>
            </lan>
          </lans>
        </cluster>
        """,
        "cluster.xml",
    )
    # A duplicate is reported where it occurs the second time.
    assert problems(capsys, path) == [
        f"{path}:1: no LAN connects every node: at least one <lan> must list all nodes",
        f'{path}:5: address 10.0.0.1 is given to two nodes in <lan name="default">',
        f"{path}:7: LAN 'default' is defined twice",
    ]


def one_lan(tmp_path: Path, *nodes: tuple[str, str]) -> Path:
    """A cluster.xml whose LAN "default" (line 3) lists these (name, addr), from line 4 on."""
    lines = "\n".join(f'      <node name="{name}" addr="{addr}"/>' for name, addr in nodes)
    return write(tmp_path, f'<cluster>\n  <lans>\n    <lan name="default">\n{lines}\n    </lan>\n'
                           "  </lans>\n</cluster>\n", "cluster.xml")


@pytest.mark.parametrize("addr", ["10.0.0.256", "300.1.1.1", "10.0.0.1.5", "10..0.1"])
def test_a_dotted_quad_out_of_range_is_no_host_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   addr: str) -> None:
    path = one_lan(tmp_path, ("node1", "10.0.0.1"), ("node2", addr))
    assert problems(capsys, path) == [
        f"{path}:5: <node addr>: '{addr}' is not a valid IPv4 address (four numbers of 0 to 255)"]


def test_a_node_named_twice_in_a_lan_at_its_second_line(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = one_lan(tmp_path, ("node1", "10.0.0.1"), ("node2", "10.0.0.2"), ("node1", "10.0.0.3"))
    assert problems(capsys, path) == [f"{path}:6: node 'node1' appears twice in <lan name=\"default\">"]


# ---------------------------------------------------------------- anything at all


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", ":1: not UTF-8 text"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", ":1: malformed XML"),
        (b"", ":1: no <cluster> or <safe> root element"),
        (b"   \n\n", ":1: no <cluster> or <safe> root element"),
        (b"just some text", ":1: no <cluster> or <safe> root element"),
        (b'{"cluster": []}', ":1: no <cluster> or <safe> root element"),
        (b"<safe>\x00</safe>", ":1: malformed XML"),
        (b"<!-- only a comment -->", ":1: no <cluster> or <safe> root element"),
        (b"<safe/><cluster/>", ":1: more than one <cluster> or <safe> root element"),
        (b'<!DOCTYPE safe [<!ENTITY a "aaaa">]><safe a="&a;"/>', ":1: malformed XML: undefined entity"),
        (b"<safe>" + b"<x>" * 100_000 + b"</x>" * 100_000 + b"</safe>", ":1: unknown element <x> inside"),
    ],
    ids=["binary", "zip", "empty", "blank", "text", "json", "nul", "comment", "two-roots", "entity", "deep"],
)
def test_any_input_gives_lines_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "input.xml"
    path.write_bytes(content)
    lines = problems(capsys, path)
    assert lines and all(line.startswith(f"{path}:") for line in lines)
    assert lines[0].startswith(f"{path}{message}")


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.xml"
    assert problems(capsys, missing, tmp_path) == [
        f"{missing}:0: cannot read: No such file or directory",
        f"{tmp_path}:0: not a regular file (a directory)",
    ]


def test_valid_and_invalid_files_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "<safe>")
    run = hakit(capsys, "config", "check", TWO_LANS, bad)
    assert run.code == 1
    assert run.out == f"{TWO_LANS}: ok\n"
    [line] = run.err_lines
    assert line.startswith(f"{bad}:1: malformed XML")


def _element_paths(root: type) -> list[tuple[type, list[str]]]:
    out: list[tuple[type, list[str]]] = []
    todo: list[tuple[type, list[str]]] = [(root, [root.TAG])]
    seen: set[tuple[str, ...]] = set()
    while todo:
        cls, path = todo.pop()
        if tuple(path) in seen:
            continue
        seen.add(tuple(path))
        out.append((cls, path))
        todo.extend((spec.cls, [*path, tag]) for tag, (_f, spec) in children_of(cls).items())
    return out


def _nest(path: list[str], leaf: str) -> str:
    for tag in reversed(path[:-1]):
        leaf = f"<{tag}>{leaf}</{tag}>"
    return leaf


@pytest.mark.parametrize("root", [Cluster, Safe], ids=["cluster", "safe"])
def test_every_element_half_written_is_reported_not_crashed_on(tmp_path: Path, root: type) -> None:
    """Each element of the schema, at its place, bare, twice, and with every attribute
    set to nonsense or left empty: the reader reports, it never raises."""
    files: list[Path] = []
    for cls, path in _element_paths(root):
        tag = path[-1]
        for value in ("x", ""):
            attrs = " ".join(f'{name}="{value}"' for name in attrs_of(cls))
            for leaf in (f"<{tag}/>", f"<{tag}/><{tag}/>", f"<{tag} {attrs}/><{tag} {attrs}/>"):
                files.append(tmp_path / f"{len(files)}.xml")
                files[-1].write_text(_nest(path, leaf))
    assert len(files) > 20
    for file in files:
        check_files([file])


def test_a_heartbeat_named_twice_at_its_second_line(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, mirror("""
    <heart>
      <heartbeat name="default"/>
      <heartbeat name="default"/>
    </heart>
    """))
    assert problems(capsys, path) == [f'{path}:6: <heartbeat name="default"> is given twice']


def test_what_is_no_configuration_file_is_refused_at_once(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO (nobody writing), a device, a file of gigabytes: refused without waiting
    or reading them through."""
    fifo = tmp_path / "fifo.xml"
    os.mkfifo(fifo)
    big = tmp_path / "big.xml"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse
    assert problems(capsys, fifo) == [f"{fifo}:0: not a regular file (a FIFO)"]
    assert problems(capsys, Path("/dev/zero")) == ["/dev/zero:0: not a regular file (a device)"]
    assert problems(capsys, big) == [f"{big}:0: larger than 4 MiB: not a configuration file"]


def test_doctype_stripping_takes_linear_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "doctypes.xml"
    path.write_text("<!DOCTYPE" * 400_000)  # 3.6 MB: quadratic took minutes
    started = time.monotonic()
    assert problems(capsys, path)
    assert time.monotonic() - started < 20


def test_obsolete_attributes_safekit_accepts_are_accepted_with_a_warning(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "cluster.xml"
    path.write_text('<cluster>\n<lans>\n  <lan name="default" connect="on" console="on">\n'
                    '    <node name="n1" addr="10.0.0.1"/>\n  </lan>\n</lans>\n</cluster>\n')
    run = hakit(capsys, "config", "check", path)
    assert run.code == 0, run
    assert run.err_lines == [f"{path}:3: warning: <lan connect> is obsolete: accepted and ignored",
                             f"{path}:3: warning: <lan console> is obsolete: accepted and ignored"]
    assert run.out == f"{path}: ok\n"


FARM_VIP = """<!DOCTYPE safe>
<safe>
<service mode="farm">
  <farm><lan name="default"/></farm>
  <vip>
    <interface_list>
      <interface><virtual_interface type="vmac_directed">
        <virtual_addr addr="10.0.0.10" where="alias"/>
      </virtual_interface></interface>
      <interface name="eth1"><virtual_interface type="vmac_invisible">
        <virtual_addr addr="10.0.1.10" where="alias"/>
      </virtual_interface></interface>
    </interface_list>
    <loadbalancing_list>
      <group name="web">
        <rule port="80" proto="tcp" filter="on_port" virtual_addr="10.0.0.99"/>
        <rule port="1-40000" proto="udp" filter="on_addr"/>
      </group>
    </loadbalancing_list>
  </vip>
</service>
</safe>
"""


def test_farm_mistakes_are_found_by_the_check_not_at_start(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, FARM_VIP)
    assert problems(capsys, path) == [
        f"{path}:5: the load-balancing rules cover more than 16384 ports: use port=\"*\" or fewer ranges",
        f"{path}:10: the farm's <virtual_interface> elements must all have the same type "
        "(vmac_directed here, vmac_invisible there)",
        f'{path}:16: <rule virtual_addr="10.0.0.99"> of group web is not a VIP of the module',
    ]
