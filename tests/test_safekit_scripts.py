"""Module scripts written for SafeKit run unchanged: they call `$SAFE/safekit VERB ...`
with SafeKit's syntax (printi, errd enable|disable, kill -level= -name=, incloop -i,
stop -i without -m, $SAFEBIN/exitcode, -r saferpc_send vipd SETGROUPS), here the
process-restart example of SafeKit's guide (chapter 15), written for a Linux shell."""

from __future__ import annotations

import pytest

from hakit.cli.safekit import translate
from tests.cluster import MODULE, hk, install, state, wait_state
from tests.helpers import node_pids, wait_for

CONF = """<!DOCTYPE safe>
<safe>
  <service mode="light" maxloop="1">
    <errd>
      <proc name="myappli" atleast="1" action="restart_myappli" class="myappli"/>
    </errd>
    <user/>
  </service>
</safe>
"""
SCRIPTS = {
    "start_prim": """#!/bin/sh
echo "Running start_prim $*"
$SAFE/safekit printi "start myappli"
cp /bin/sleep "$SAFEUSERVAR/myappli"
setsid "$SAFEUSERVAR/myappli" 1000000 </dev/null >/dev/null 2>&1 &
$SAFE/safekit errd enable myappli
$SAFEBIN/exitcode 0
""",
    "stop_prim": """#!/bin/sh
echo "Running stop_prim $*"
$SAFE/safekit printi "stop myappli"
$SAFE/safekit errd disable myappli
$SAFE/safekit kill -level="terminate" -name="myappli"
$SAFEBIN/exitcode 0
""",
    "restart_myappli": """#!/bin/sh
$SAFE/safekit printi "restart_myappli"
$SAFE/safekit errd disable myappli
$SAFE/safekit incloop -i "restart_myappli"
if [ $? -ne 0 ]; then
  $SAFE/safekit stop -i "restart_myappli" &
  exit 0
fi
$SAFE/safekit printi "Restart myappli"
$SAFE/safekit kill -level="terminate" -name="myappli"
setsid "$SAFEUSERVAR/myappli" 1000000 </dev/null >/dev/null 2>&1 &
$SAFE/safekit errd enable myappli
$SAFEBIN/exitcode 0
""",
}


def myappli(sim) -> list[str]:
    return node_pids(sim, "node1", "myappli")


@pytest.mark.root
def test_safekit_scripts_restart_their_process_then_stop_the_module_at_maxloop(make_sim, tmp_path):
    sim = make_sim(nodes=1, daemon=True)
    install(sim, tmp_path, ["node1"], CONF, scripts=SCRIPTS)
    hk(sim, "node1", "start", "-m", MODULE)
    wait_state(sim, "node1", "ALONE (Ready)")
    wait_for("myappli running", lambda: len(myappli(sim)) == 1)
    assert "start myappli" in hk(sim, "node1", "logview", "-m", MODULE, "-A")
    first = myappli(sim)

    sim.exec("node1", ["kill", "-KILL", first[0]])
    wait_for("myappli restarted by its script", lambda: myappli(sim) not in ([], first), timeout=20)
    log = hk(sim, "node1", "logview", "-m", MODULE, "-A")
    assert "restart_myappli" in log and "Restart myappli" in log
    assert state(sim, "node1") == "ALONE (Ready)"

    # maxloop="1": the second death is one restart too many; the script stops the module
    # (`safekit stop -i restart_myappli`, the module from SAFEMODULE), whose stop_prim runs.
    sim.exec("node1", ["kill", "-KILL", myappli(sim)[0]])
    wait_state(sim, "node1", "STOP (NotReady)", timeout=30)
    log = hk(sim, "node1", "logview", "-m", MODULE, "-A")
    assert "stop myappli" in log
    assert not myappli(sim)


@pytest.mark.root
def test_a_safekit_verb_hakit_lacks_is_refused_by_name(make_sim):
    sim = make_sim(nodes=1, daemon=True)
    run = sim.exec("node1", ["safekit", "webstatus"], check=False)
    assert run.returncode == 2
    assert run.stderr.startswith("safekit: webstatus: not a verb hakit implements (it implements: ")
    assert sim.exec("node1", ["safekit", "level"]).stdout.startswith("hakit ")
    assert sim.exec("node1", ["exitcode", "3"], check=False).returncode == 3


def test_safekit_syntax_becomes_hakits():
    setgroups = ["-r", "saferpc_send", "vipd", "SETGROUPS"]
    assert translate([*setgroups, "all", "all", "all"], "am") == ["vip", "open"]
    assert translate([*setgroups, "none", "none", "none"], "am") == ["vip", "close"]
    assert translate(["stop", "-i", "restart_myappli"], "am") == ["stop", "-m", "am", "-i", "restart_myappli"]
    assert translate(["stop", "-m", "other"], "am") == ["stop", "-m", "other"]
    assert translate(["printi", "hello"], "am") == ["printi", "hello"]
    for refused in ([*setgroups, "g1", "none", "all"], ["-r", "other"], ["bogus"]):
        with pytest.raises(SystemExit) as exit_:
            translate(refused, "am")
        assert exit_.value.code == 2
