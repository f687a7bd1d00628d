"""GET /metrics on a simulated cluster: a running mirror scraped on both nodes as Prometheus
would (HTTPS with the cluster's certificate, which the scraper does not verify), the text
checked against the exposition format, and who may read it."""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request

import pytest

from hakit.config.cluster_model import WEB_PORT
from tests.cluster import MODULE, hk, install, mirror_conf, wait_state
from tests.helpers import wait_for

pytestmark = pytest.mark.root

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(sim, node: str, token: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of GET /metrics on the node."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"https://{sim.addr(node)}:{WEB_PORT}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _labels(text: str, at: int, where: str) -> tuple[dict[str, str], int]:
    """The {name="value",...} block starting at text[at] == "{"; the index after it."""
    labels: dict[str, str] = {}
    i = at + 1
    while text[i] != "}":
        m = LABEL_NAME.match(text, i)
        assert m and text[m.end():m.end() + 2] == '="', f"{where}: bad label at {text[i:]!r}"
        name, i, value = m.group(), m.end() + 2, []
        while text[i] != '"':
            if text[i] == "\\":
                escaped = {"\\": "\\", '"': '"', "n": "\n"}.get(text[i + 1])
                assert escaped is not None, f"{where}: bad escape in label {name}"
                value.append(escaped)
                i += 2
            else:
                assert text[i] != "\n", f"{where}: raw newline in label {name}"
                value.append(text[i])
                i += 1
        assert name not in labels, f"{where}: label {name} twice"
        labels[name] = "".join(value)
        i += 1
        if text[i] == ",":
            i += 1
        else:
            assert text[i] == "}", f"{where}: expected , or }} after label {name}"
    return labels, i + 1


def parse_exposition(text: str) -> tuple[dict[str, str], Series]:
    """Strictly, the text format 0.0.4: each family's HELP and TYPE once, before its samples,
    which come together; valid names, label escapes and values; no series twice.
    -> ({family: type}, {(name, labels): value})."""
    assert text.endswith("\n"), "the text must end with a newline"
    types: dict[str, str] = {}
    series: Series = {}
    current, closed = "", set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}"
        if line.startswith(("# HELP ", "# TYPE ")):
            name, _, rest = line[7:].partition(" ")
            assert METRIC_NAME.fullmatch(name), f"{where}: bad metric name {name!r}"
            if line.startswith("# HELP "):
                assert name != current and name not in closed, f"{where}: {name} described twice"
                assert rest and "\n" not in rest, f"{where}: empty HELP"
                if current:
                    closed.add(current)
                current = name
            else:
                assert name == current and name not in types, f"{where}: TYPE of {name} out of place"
                assert rest in TYPES, f"{where}: unknown type {rest!r}"
                types[name] = rest
            continue
        assert line and not line.startswith("#"), f"{where}: unexpected line {line!r}"
        m = METRIC_NAME.match(line)
        assert m, f"{where}: no metric name"
        name, i = m.group(), m.end()
        assert name == current and name in types, f"{where}: sample of {name} outside its family"
        labels: dict[str, str] = {}
        if line[i:i + 1] == "{":
            labels, i = _labels(line, i, where)
        assert line[i:i + 1] == " ", f"{where}: expected a space before the value"
        value, *stamp = line[i + 1:].split(" ")
        assert len(stamp) <= 1 and all(s.lstrip("-").isdigit() for s in stamp), f"{where}: bad timestamp"
        assert re.fullmatch(r"[+-]?(Inf|NaN|[0-9.]+([eE][+-]?[0-9]+)?)", value), f"{where}: bad value {value}"
        key = (name, frozenset(labels.items()))
        assert key not in series, f"{where}: series repeated"
        series[key] = float(value)
        if types[name] == "counter":
            assert name.endswith("_total") and series[key] >= 0, f"{where}: a counter {name}"
    return types, series


def find(series: Series, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {k[1]: v for k, v in series.items() if k[0] == name and want <= k[1]}


def test_exposition_parser_refuses_what_prometheus_would():
    good = '# HELP a_b One.\n# TYPE a_b gauge\na_b{x="q\\"\\n\\\\"} 1\na_b 2.5e-3\n'
    assert parse_exposition(good)[1][("a_b", frozenset({("x", 'q"\n\\')}))] == 1
    for bad in ('# TYPE a gauge\na 1\n',                      # no HELP
                '# HELP a A.\n# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n',  # a series twice
                '# HELP a A.\n# TYPE a gauge\na{x="\\t"} 1\n',          # an unknown escape
                '# HELP a A.\n# TYPE a gauge\nb 1\n',                   # outside its family
                '# HELP a A.\n# TYPE a gauge\na one\n',                  # not a number
                '# HELP a A.\n# TYPE a counter\na 1\n',                  # a counter not _total
                '# HELP a A.\n# TYPE a gauge\na 1'):                      # no final newline
        with pytest.raises(AssertionError):
            parse_exposition(bad)


CHECKED = '<check><intf ident="lan0"><to name="eth0"/></intf></check>'


def test_metrics_of_a_running_mirror_on_both_nodes(make_sim, tmp_path):
    sim = make_sim(nodes=2, daemon=True, paths=("/srv/rep",))
    install(sim, tmp_path, ["node1", "node2"],
            mirror_conf(sim.spare_addr(0, 1), f'<rfs><replicated dir="/srv/rep"/></rfs>{CHECKED}'))
    # Unauthenticated: refused, with the API's JSON error, as soon as the listener is up.
    wait_for("node1's web service", lambda: scrape(sim, "node1")[0] == 401, timeout=20)
    status, kind, body = scrape(sim, "node2")
    assert status == 401 and kind.startswith("application/json") and '"error"' in body

    sim.exec("node1", ["hakit", "web", "user", "add", "prom", "--role", "monitor", "--password-stdin"],
             input="a monitoring password\n")
    token = sim.exec("node1", ["hakit", "web", "token", "add", "prom", "scrape"]).stdout.split()[-1]
    hk(sim, "node1", "prim", "-m", MODULE)
    hk(sim, "node2", "start", "-m", MODULE)
    wait_state(sim, "node2", "SECOND (Ready)", timeout=30)
    wait_state(sim, "node1", "PRIM (Ready)")

    roles = {"node1": "PRIM", "node2": "SECOND"}
    got: dict[str, Series] = {}

    def complete() -> bool:
        # What the module processes publish every second (bandwidths) or 5 s (lateness).
        for node in roles:
            status, kind, body = scrape(sim, node, token)  # the token was shipped to node2 too
            assert status == 200, body
            assert kind == "text/plain; version=0.0.4; charset=utf-8"
            got[node] = parse_exposition(body)[1]
        return all(find(got[n], "hakit_heartbeat_lateness_seconds") and
                   find(got[n], "hakit_rfs_bandwidth_bytes_per_second") for n in roles)

    wait_for("lateness and bandwidths in both nodes' metrics", complete, timeout=20)
    for node, role in roles.items():
        peer = "node2" if node == "node1" else "node1"
        s = got[node]
        assert find(s, "hakit_info", node=node)
        assert find(s, "hakit_module_state", module=MODULE, node=node) == {
            frozenset({("module", MODULE), ("node", node), ("state", role), ("status", "Ready")}): 1.0}
        [age] = find(s, "hakit_module_state_seconds", module=MODULE, node=node).values()
        assert 0 <= age < 120
        assert list(find(s, "hakit_heartbeat_up", module=MODULE, node=node).values()) == [1.0]
        [late] = find(s, "hakit_heartbeat_lateness_seconds", module=MODULE, node=node, peer=peer).values()
        assert 0 <= late < 0.6  # late by a timeout, the peer would be lost
        [checker] = find(s, "hakit_checker_state", module=MODULE, checker="intf.lan0")
        assert ("state", "up") in checker
        scripts = {dict(k)["script"]: v for k, v in find(s, "hakit_script_duration_seconds").items()}
        started = "start_prim" if role == "PRIM" else "start_second"
        assert {"prestart", started} <= set(scripts) and all(0 <= v < 10 for v in scripts.values())
        bandwidths = {dict(k)["direction"] for k in find(s, "hakit_rfs_bandwidth_bytes_per_second")}
        assert bandwidths == ({"netout", "rep", "rei"} if role == "PRIM" else {"netin"})
    assert find(got["node1"], "hakit_rfs_sync_active", module=MODULE) == {
        frozenset({("module", MODULE), ("node", "node1")}): 0.0}

    # A stopped module: its state, and nothing its process found any more.
    hk(sim, "node2", "stop", "-m", MODULE)
    series = parse_exposition(scrape(sim, "node2", token)[2])[1]
    assert [dict(k)["state"] for k in find(series, "hakit_module_state", module=MODULE)] == ["STOP"]
    assert not find(series, "hakit_heartbeat_up") and not find(series, "hakit_rfs_bandwidth_bytes_per_second")
    assert find(series, "hakit_script_duration_seconds", script="stop_second")

    # <web metrics="open">: anyone reaching the port reads them, on every node it was applied to.
    xml = sim.host_path("node1", "/etc/hakit/cluster.xml").read_text()
    sim.host_path("node1", "/etc/hakit/cluster-open.xml").write_text(
        xml.replace("</cluster>", '  <web metrics="open"/>\n</cluster>'))
    hk(sim, "node1", "cluster", "config", "/etc/hakit/cluster-open.xml")
    hk(sim, "node1", "-H", "*", "-G")
    for node in roles:
        status, _kind, body = scrape(sim, node)
        assert status == 200 and parse_exposition(body)[1]
