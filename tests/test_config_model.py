"""Values as the model holds them (time units, macros), the cluster signature, installing
cluster.xml, and the generated configuration reference."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from hakit.config import docgen
from hakit.config.cluster_model import Cluster
from hakit.config.loader import cluster_signature, load_cluster, load_module
from hakit.config.module_model import CHECKERS, Check, ModuleConfig, Safe, SplitbrainChecker
from hakit.config.rules import parse_rules
from hakit.config.schema import children_of
from hakit.paths import paths
from tests.config_support import REPO, SEEDS, hakit, isolated_root, write  # noqa: F401 - autouse fixture

TWO_LANS = SEEDS / "15.1.1-cluster-two-lans.xml"


def module(tmp_path: Path, text: str) -> ModuleConfig:
    return load_module(write(tmp_path, text))


# ---------------------------------------------------------------- time values

MIRROR = """\
<safe>
  <service mode="mirror" {service}>
    <heart {heart}><heartbeat name="default"/></heart>
    <rfs {rfs}><replicated dir="/srv"/></rfs>
    <user {user}/>
  </service>
</safe>
"""


@pytest.mark.parametrize(
    ("element", "attribute", "raw", "seconds"),
    [
        # A plain number is in the attribute's own (SafeKit) unit.
        ("heart", "pulse", "700", 0.7),
        ("heart", "timeout", "5000", 5.0),
        ("service", "loop_interval", "24", 86400.0),
        ("user", "nicestoptimeout", "30", 30.0),
        # A suffix says its unit, whatever the attribute's.
        ("heart", "timeout", "500ms", 0.5),
        ("rfs", "sendtimeout", "30s", 30.0),
        ("rfs", "sendtimeout", "1.5s", 1.5),
        ("user", "forcestoptimeout", "5mn", 300.0),
        ("user", "starttimeout", "5min", 300.0),
        ("user", "starttimeout", "5MN", 300.0),
        ("service", "loop_interval", "2h", 7200.0),
        ("service", "loop_interval", "90m", 5400.0),
        ("service", "boot_delay", "1d", 86400.0),
    ],
)
def test_time_values(tmp_path: Path, element: str, attribute: str, raw: str, seconds: float) -> None:
    fields = {"service": "", "heart": "", "rfs": "", "user": ""}
    fields[element] = f'{attribute}="{raw}"'
    if attribute == "pulse":  # a pulse of 0.7 s needs more than the default timeout
        fields[element] += ' timeout="5s"'
    svc = module(tmp_path, MIRROR.format(**fields)).service
    holder = svc if element == "service" else getattr(svc, element)
    assert getattr(holder, attribute) == pytest.approx(seconds)


def test_time_defaults_are_in_seconds(tmp_path: Path) -> None:
    svc = module(tmp_path, MIRROR.format(service="", heart="", rfs="", user="")).service
    assert svc.loop_interval == 24 * 3600
    assert svc.heart is not None and svc.heart.pulse < svc.heart.timeout


# ---------------------------------------------------------------- replication


@pytest.mark.parametrize(
    ("rfs", "policy"),
    [
        ("", "buffered"),
        ('writes="applied"', "applied"),
        ('writes="buffered"', "buffered"),
        # SafeKit's own attribute: none is its synchronous replication, second its asynchronous.
        ('async="none"', "applied"),
        ('async="second"', "buffered"),
        ('writes="buffered" async="none"', "buffered"),
        ('writes="applied" async="second"', "applied"),
    ],
)
def test_write_policy(tmp_path: Path, rfs: str, policy: str) -> None:
    svc = module(tmp_path, MIRROR.format(service="", heart="", rfs=rfs, user="")).service
    assert svc.rfs is not None and svc.rfs.write_policy == policy


# ---------------------------------------------------------------- macros


def test_macros_in_attributes_paths_and_rules(tmp_path: Path) -> None:
    config = module(
        tmp_path,
        """\
        <!DOCTYPE safe>
        <macro name="BASE" value="%ROOT%/app"/>
        <safe>
          <macro name="ROOT" value="/srv"/>
          <macro name="WEB_PORT" value="8080"/>
          <macro name="WEB" value="tcp.web"/>
          <service mode="mirror">
            <heart><heartbeat name="default"/></heart>
            <rfs><replicated dir="%BASE%/data"/></rfs>
            <user>
              <var name="DATA" value="%BASE%/data"/>
              <var name="PATTERN" value="100%DONE% %unknown% 50%"/>
            </user>
            <check>
              <tcp ident="web"><to addr="localhost" port="%WEB_PORT%"/></tcp>
            </check>
            <failover><![CDATA[
              web_gone: if (%WEB% == down) then stopstart();
            ]]></failover>
          </service>
        </safe>
        """,
    )
    svc = config.service
    # Nested (BASE uses ROOT, defined later and elsewhere), in a path and in a <var>.
    assert svc.rfs is not None and [r.dir for r in svc.rfs.replicated] == ["/srv/app/data"]
    assert svc.user is not None
    values = {v.name: v.value for v in svc.user.vars}
    assert values["DATA"] == "/srv/app/data"
    # A %WORD% that names no macro stays as written.
    assert values["PATTERN"] == "100%DONE% %unknown% 50%"
    # Expanded before the value is converted: the port is an integer.
    assert svc.checks is not None and svc.checks.tcp[0].to.port == 8080
    assert svc.failover is not None
    [rule] = parse_rules(svc.failover.rules)
    assert (rule.label, rule.action) == ("web_gone", "stopstart")
    assert rule.expr.resource == "tcp.web"  # type: ignore[union-attr]
    assert config.macros["BASE"] == "%ROOT%/app"


def test_a_macro_expands_to_a_value_that_is_then_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        MIRROR.format(service="", heart="", rfs="", user="")
        .replace('"/srv"', '"%DIR%"')
        .replace("<safe>", '<safe>\n  <macro name="DIR" value="srv"/>'),
    )
    run = hakit(capsys, "config", "check", path)
    assert run.code == 1
    assert run.err_lines == [f"{path}:5: <replicated dir>: 'srv' is not an absolute Linux path"]


@pytest.mark.parametrize(
    "macros",
    [
        '<macro name="LOOP" value="x%LOOP%"/>',
        '<macro name="LOOP" value="%OTHER%"/><macro name="OTHER" value="%LOOP%"/>',
    ],
    ids=["self", "mutual"],
)
def test_self_referencing_macro_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], macros: str
) -> None:
    text = f"""\
        <safe>
          {macros}
          <service mode="light">
            <user><var name="V" value="%LOOP%"/></user>
          </service>
        </safe>
        """
    path = write(tmp_path, text)
    run = hakit(capsys, "config", "check", path)
    assert run.code == 1
    assert f"{path}:4: macro expansion does not end (a macro refers to itself)" in run.err
    assert all(line.startswith(f"{path}:") for line in run.err_lines)


# ---------------------------------------------------------------- cluster signature

CLUSTER = """\
<cluster>
  <lans>
    <lan name="default">
      <node name="node1" addr="10.0.0.107"/>
      <node name="node2" addr="10.0.0.108"/>
    </lan>
    <lan name="private">
      <node name="node1" addr="10.1.0.107"/>
      <node name="node2" addr="10.1.0.108"/>
    </lan>
  </lans>
</cluster>
"""

REORDERED = """\
<!-- same cluster: LANs, nodes and attributes in another order, other layout -->
<cluster><lans>
<lan name="private"><node addr="10.1.0.108" name="node2"/>
                    <node addr="10.1.0.107" name="node1"/></lan>
<lan name="default">
   <node name="node2"   addr="10.0.0.108" />
   <node name="node1"   addr="10.0.0.107" />
</lan>
</lans></cluster>
"""


def signature_of(tmp_path: Path, text: str) -> str:
    return cluster_signature(load_cluster(write(tmp_path, text, "cluster.xml")))


def test_signature_ignores_order_and_layout(tmp_path: Path) -> None:
    assert signature_of(tmp_path, CLUSTER) == signature_of(tmp_path, REORDERED)
    assert signature_of(tmp_path, CLUSTER) == cluster_signature(load_cluster(TWO_LANS))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('addr="10.1.0.108"', 'addr="10.1.0.109"'),
        ('name="private"', 'name="replication"'),
        ('name="node2"', 'name="node3"'),
    ],
    ids=["address", "lan-name", "node-name"],
)
def test_signature_changes_with_what_nodes_must_agree_on(tmp_path: Path, old: str, new: str) -> None:
    changed = CLUSTER.replace(old, new)
    assert changed != CLUSTER
    assert signature_of(tmp_path, CLUSTER) != signature_of(tmp_path, changed)


# ---------------------------------------------------------------- hakit cluster


def installed() -> Path:
    return paths().cluster_xml


def leftovers() -> list[str]:
    return sorted(p.name for p in installed().parent.iterdir() if p.name not in ("cluster.xml", "pki"))


def test_confinfo_without_cluster_xml(capsys: pytest.CaptureFixture[str]) -> None:
    run = hakit(capsys, "cluster", "confinfo")
    assert run.code == 1
    assert run.err_lines == [
        f"hakit: no cluster configuration on this node ({installed()} is missing); "
        "install one with 'hakit cluster config FILE'"
    ]


def test_cluster_config_installs_and_confinfo_shows_it(capsys: pytest.CaptureFixture[str]) -> None:
    signature = cluster_signature(load_cluster(TWO_LANS))
    run = hakit(capsys, "cluster", "config", TWO_LANS)
    assert (run.code, run.err) == (0, "")
    lines = run.out.splitlines()
    assert lines[:2] == [
        f"cluster configuration installed in {installed()}",
        f"signature  {signature} (new)",
    ]
    # The first node makes the cluster's CA and secret; this machine is no node of TWO_LANS,
    # so it gets no certificate.
    assert lines[2].startswith("credentials  created the cluster CA (fingerprint ")
    assert lines[3] == f"credentials  created the cluster secret {paths().cluster_secret}"
    assert lines[4].startswith("credentials  no node certificate: this machine is not a node of cluster.xml")
    assert len(lines) == 5
    assert installed().read_bytes() == TWO_LANS.read_bytes()
    assert installed().stat().st_mode & 0o777 == 0o644
    assert leftovers() == []

    run = hakit(capsys, "cluster", "confinfo")
    assert (run.code, run.err) == (0, "")
    assert run.out.splitlines() == [
        f"file       {installed()}",
        f"signature  {signature}",
        "",
        "node   default     private",
        "node1  10.0.0.107  10.1.0.107",
        "node2  10.0.0.108  10.1.0.108",
    ]

    run = hakit(capsys, "cluster", "config", TWO_LANS)
    assert run.out.splitlines()[1] == f"signature  {signature} (unchanged)"


def test_cluster_config_replaces_by_rename(capsys: pytest.CaptureFixture[str]) -> None:
    assert hakit(capsys, "cluster", "config", TWO_LANS).code == 0
    with installed().open() as reader:  # a reader of the old file keeps reading the old file
        old_inode = os.fstat(reader.fileno()).st_ino
        assert hakit(capsys, "cluster", "config", SEEDS / "15.2.1-cluster-three-nodes.xml").code == 0
        assert reader.read() == TWO_LANS.read_text()
    assert installed().stat().st_ino != old_inode
    assert "node3" in installed().read_text()
    assert leftovers() == []


def test_invalid_cluster_installs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert hakit(capsys, "cluster", "config", TWO_LANS).code == 0
    bad = write(tmp_path, CLUSTER.replace('addr="10.1.0.108"', 'addr="10.1.0.108.5 x"'), "cluster.xml")
    run = hakit(capsys, "cluster", "config", bad)
    assert run.code == 1
    assert run.err_lines == [
        f"{bad}:9: <node addr>: '10.1.0.108.5 x' is not an IP address or host name",
        f"hakit: {bad} has problems: nothing installed, {installed()} is unchanged",
    ]
    assert installed().read_bytes() == TWO_LANS.read_bytes()
    assert leftovers() == []


def test_cluster_config_refuses_a_module_file(capsys: pytest.CaptureFixture[str]) -> None:
    module_file = SEEDS / "15.1.2.1-mirror-linux.xml"
    run = hakit(capsys, "cluster", "config", module_file)
    assert run.code == 1
    assert run.err_lines[0] == f"{module_file}:1: this is a module configuration (<safe>), not a cluster.xml"
    assert not installed().exists()


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_cluster_config_of_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    source = tmp_path / "missing.xml" if what == "missing" else tmp_path
    run = hakit(capsys, "cluster", "config", source)
    assert run.code == 1
    reason = "No such file or directory" if what == "missing" else "Is a directory"
    assert run.err_lines == [f"hakit: {source}: cannot read: {reason}"]


def test_failed_rename_keeps_the_old_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert hakit(capsys, "cluster", "config", TWO_LANS).code == 0

    def full_disk(self: Path, target: Path) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", full_disk)
    run = hakit(capsys, "cluster", "config", SEEDS / "15.2.1-cluster-three-nodes.xml")
    assert run.code == 1
    assert run.err_lines == [f"hakit: cannot install {installed()}: No space left on device"]
    assert installed().read_bytes() == TWO_LANS.read_bytes()
    assert leftovers() == []


def test_cluster_config_warns_about_modules_it_breaks(capsys: pytest.CaptureFixture[str]) -> None:
    conf = paths().module_conf("web")
    conf.parent.mkdir(parents=True)
    conf.write_text((SEEDS / "15.1.2.2-mirror-flow-linux.xml").read_text())
    run = hakit(capsys, "cluster", "config", SEEDS / "15.2.1-cluster-three-nodes.xml")
    assert run.code == 0  # installed all the same: the module may be the next thing fixed
    assert run.err_lines == [f"warning: {conf}:8: LAN 'private' is not in cluster.xml"]


def test_confinfo_of_a_file_with_a_node_missing_on_a_lan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, CLUSTER.replace('      <node name="node2" addr="10.1.0.108"/>\n', ""), "cluster.xml"
    )
    run = hakit(capsys, "cluster", "confinfo", path)
    assert run.code == 0
    assert run.out.splitlines()[3:] == [
        "node   default     private",
        "node1  10.0.0.107  10.1.0.107",
        "node2  10.0.0.108  -",
    ]


# ---------------------------------------------------------------- generated reference

DOC = REPO / "docs" / "configuration.md"


def test_configuration_reference_is_up_to_date() -> None:
    current = DOC.read_text(encoding="utf-8")
    assert docgen.splice(current, docgen.generate()) == current, (
        f"docs/configuration.md no longer matches python/hakit/config/; regenerate it: {docgen.REGENERATE}"
    )


def test_config_doc_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    run = hakit(capsys, "config", "doc")
    assert (run.code, run.out) == (0, docgen.generate())


def test_reference_documents_every_element() -> None:
    text = docgen.generate()
    for root in (Cluster, Safe):
        todo, seen = [root], set()
        while todo:
            cls = todo.pop()
            if cls in seen:
                continue
            seen.add(cls)
            assert f"### `<{cls.TAG}>`" in text
            assert cls.DOC.split(" ")[0] in text
            todo.extend(spec.cls for _tag, (_f, spec) in children_of(cls).items())


def test_reference_links_lead_somewhere() -> None:
    text = docgen.generate()
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    assert targets and targets <= anchors


def test_reference_marks_ignored_attributes() -> None:
    row = next(line for line in docgen.generate().splitlines() if line.startswith("| `polltimer` |"))
    assert "accepted for compatibility, ignored" in row


def test_reference_rule_example_parses() -> None:
    [rule] = parse_rules(docgen.RULE_EXAMPLE)
    assert rule.action == "stopstart"


def test_checker_names_match_the_checkers_own_description() -> None:
    checkers = {spec.cls for _tag, (_f, spec) in children_of(Check).items()} - {SplitbrainChecker}
    assert set(CHECKERS) == checkers
    for cls in CHECKERS:
        assert f"{cls.RESOURCE}.<ident>" in cls.DOC and f"{cls.RULE_PREFIX}<ident>" in cls.DOC, cls.__name__


def test_docgen_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(f"intro\n\n{docgen.BEGIN}\nold\n{docgen.END}\n\nafter\n")
    assert docgen.main(["--check", str(stale)]) == 1
    assert docgen.REGENERATE in capsys.readouterr().err
    assert docgen.main(["--write", str(stale)]) == 0
    assert docgen.main(["--check", str(stale)]) == 0
    text = stale.read_text()
    assert text.startswith("intro\n\n") and text.endswith(f"{docgen.END}\n\nafter\n")
    stale.write_text("no markers\n")
    assert docgen.main(["--write", str(stale)]) == 1
