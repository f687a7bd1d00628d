"""The web API against real hakitd's in a simulated cluster: every endpoint for every role,
authentication, CSRF, bad input, the cluster read through one node, actions on another node
recorded with the web user's name, users shipped to every node, a node down shown down."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakit.node.web.endpoints import api
from hakit.node.web.users import ROLES, role_rank
from hakit.testing.sim import Sim
from tests.cluster import wait_state
from tests.helpers import make_module, wait_for
from tests.sim_support import IS_ROOT, unique_sim_name
from tests.web_client import Client

pytestmark = pytest.mark.root
LIGHT = '<safe><service mode="light"><user/></service></safe>\n'
USERS = {"ada": "admin", "cy": "control", "mo": "monitor"}
BROKEN = ('<safe>\n  <service mode="mirror">\n    <heart><heartbeat name="default" bogus="1"/></heart>\n'
          "  </service>\n</safe>\n")


def password(user: str) -> str:
    return f"pw-{user}-long-enough"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """Two nodes running hakitd, a light module 'am' on both, a user of each role."""
    if not IS_ROOT:
        pytest.skip("needs root (namespaces, bridges, mounts)")
    cluster = Sim(unique_sim_name())
    try:
        cluster.up(2, daemon=True, owner_pid=os.getpid())
        archive = make_module(tmp_path_factory.mktemp("am"), LIGHT, {})
        for node in ("node1", "node2"):
            cluster.exec(node, ["hakit", "module", "install", "-m", "am", str(archive)])
        for user, role in USERS.items():
            cluster.exec("node1", ["hakit", "web", "user", "add", user, "--role", role, "--password-stdin"],
                         input=password(user) + "\n")
        yield cluster
    finally:
        cluster.down()


def client(sim: Sim, node: str = "node1", user: str | None = None) -> Client:
    c = Client(sim.addr(node), sim.host_path(node, "/etc/hakit/pki/ca.crt"))
    if user is not None:
        reply = c.login(user, password(user))
        assert reply.status == 200, reply.body
    return c


def concrete(path: str) -> str:
    return (path.replace("{module}", "am").replace("{node}", "node2").replace("{name}", "nobody-x"))


def test_every_endpoint_for_every_role(sim: Sim) -> None:
    """Allowed or 403 as the role says, 401 without credentials.  An allowed change is sent
    with an unknown field (400 after the role check) so that nothing is changed here."""
    sessions = {role: client(sim, user=user) for user, role in USERS.items()}
    anonymous = client(sim)
    checked = 0
    for e in api.endpoints:
        if e.role is None:
            continue
        path = concrete(e.path)
        if e.method == "DELETE" and e.path.endswith("{module}"):
            path = path.replace("/am", "/ghost")
        if "history" in e.path:
            path += "?resource=module.state"
        assert anonymous.request(e.method, path, {} if e.body is not None else None).status == 401, e.path
        for role in ROLES:
            c = client(sim, user=next(u for u, r in USERS.items() if r == role)) \
                if e.path.endswith("/logout") else sessions[role]
            if e.answers == "text/event-stream":
                if role_rank(role) >= role_rank(e.role):
                    assert c.events(path, 0) == [], e.path  # opened: 200, text/event-stream
                else:
                    assert c.request("GET", path).status == 403
                continue
            reply = c.request(e.method, path, {"bogus": 1} if e.body is not None else None)
            if role_rank(role) < role_rank(e.role):
                assert reply.status == 403, (e.method, e.path, role, reply.status, reply.body)
                assert "may not" in reply.error
            elif e.body is not None:
                assert reply.status == 400 and "unknown field(s): bogus" in reply.error, (e.path, reply.body)
            else:
                assert reply.status not in (401, 403, 500), (e.method, e.path, role, reply.body)
            checked += 1
    assert checked >= 3 * 20


def test_csrf_bad_input_and_login_limits(sim: Sim) -> None:
    cy = client(sim, user="cy")
    action = "/api/v1/modules/am/nodes/node1/action"
    # A session's change needs its CSRF token: a page on another site cannot forge one.
    reply = cy.request("POST", action, {"action": "start"}, headers={"X-CSRF-Token": "forged"})
    assert reply.status == 403 and "X-CSRF-Token" in reply.error
    stolen = Client(cy.addr, cy.ca, cookie=cy.cookie)
    assert stolen.request("POST", action, {"action": "start"}).status == 403
    # Bad bodies and queries are answered 400 with what is wrong.
    assert "not JSON" in cy.request("POST", action, raw=b"{nope").error
    assert "must be a JSON object" in cy.request("POST", action, raw=b"[1]").error
    assert "must be one of" in cy.request("POST", action, {"action": "explode"}).error
    second = {"action": "second", "fullsync": "y"}
    assert "'fullsync' must be a boolean" in cy.request("POST", action, second).error
    assert "needs 'value'" in cy.request("POST", action, {"action": "checker"}).error
    assert "field 'action' is required" in cy.request("POST", action, {}).error
    assert "unknown query" in cy.request("GET", "/api/v1/commands?x=1").error
    assert cy.request("GET", "/api/v1/nowhere").status == 404
    assert cy.request("DELETE", "/api/v1/cluster").status == 405
    # Cookie flags: no script reads it, no other site sends it, never over plain HTTP.
    login = client(sim).request("POST", "/api/v1/login", {"user": "mo", "password": password("mo")})
    flags = login.headers["set-cookie"].lower()
    assert "httponly" in flags and "secure" in flags and "samesite=strict" in flags
    assert "default-src 'self'" in login.headers["content-security-policy"]
    # Guessing, from node1's address (so that the host's logins on node2 go on): after five
    # failures a name and an address are refused for a while, even with the right password.
    def attempt(user: str, pw: str) -> tuple[int, str]:
        out = sim.exec("node1", ["curl", "-sk", "-o", "/dev/null", "-D", "-",
                                 "-H", "Content-Type: application/json",
                                 "-d", json.dumps({"user": user, "password": pw}),
                                 f"https://{sim.addr('node2')}:9453/api/v1/login"]).stdout
        return int(out.split()[1]), out.lower()
    for _ in range(5):
        assert attempt("mo", "wrong-password")[0] == 401
    status, headers = attempt("mo", password("mo"))
    assert status == 429 and "retry-after: " in headers
    assert attempt("cy", password("cy"))[0] == 429  # the address too
    assert client(sim, "node2").login("mo", password("mo")).status == 429  # and the name, from anywhere
    assert client(sim, "node2").login("cy", password("cy")).status == 200
    assert client(sim).login("", "").status == 401

def test_actions_run_on_the_node_for_the_web_user(sim: Sim) -> None:
    cy, mo = client(sim, user="cy"), client(sim, user="mo")
    assert mo.request("POST", "/api/v1/modules/am/nodes/node2/action", {"action": "start"}).status == 403
    reply = cy.request("POST", "/api/v1/modules/am/nodes/node2/action", {"action": "start"})
    assert reply.status == 200, reply.body
    wait_state(sim, "node2", "ALONE (Ready)", "am")
    overview = mo.request("GET", "/api/v1/cluster").json()
    (am,) = [m for m in overview["modules"] if m["name"] == "am"]
    assert am["states"]["node2"]["state"] == "ALONE" and am["states"]["node1"]["state"] == "STOP"
    # Refused by the CLI: its message, as a 409.
    again = cy.request("POST", "/api/v1/modules/am/nodes/node2/action", {"action": "start"})
    assert again.status == 409 and "already started" in again.error
    commands = mo.request("GET", "/api/v1/commands?node=node2").json()
    assert any(c["user"] == "cy@node1" and c["origin"] == "api" and c["command"] == "hakit start -m am"
               and c["result"] == 0 for c in commands), commands
    log = mo.request("GET", "/api/v1/modules/am/nodes/node2/log").json()
    assert any("requested by cy@node1" in line["message"] for line in log)
    events = mo.events("/api/v1/modules/am/nodes/node2/log/follow?level=all", 2)
    assert all(kind == "log" for kind, _ in events)
    assert cy.request("POST", "/api/v1/modules/am/nodes/node2/action", {"action": "stop"}).status == 200


def test_configuration_wizard_path(sim: Sim) -> None:
    ada, cy = client(sim, user="ada"), client(sim, user="cy")
    templates = {t["name"]: t for t in ada.request("GET", "/api/v1/templates").json()}
    assert {"VIRTUAL_IP", "REPDIR", "SERVICES"} <= {m["name"] for m in templates["mirror"]["macros"]}
    checked = ada.request("POST", "/api/v1/config/check", {"userconfig": BROKEN}).json()
    assert not checked["ok"] and any(p["line"] == 3 and "bogus" in p["message"] for p in checked["problems"])
    body = {"name": "web", "template": "mirror", "macros": {"VIRTUAL_IP": sim.spare_addr(0, 9),
                                                             "REPDIR": "/var/lib/hakit-web-data"}}
    assert cy.request("POST", "/api/v1/modules", body).status == 403
    reply = ada.request("POST", "/api/v1/modules", body)
    assert reply.status == 201, reply.body
    reply = ada.request("POST", "/api/v1/modules/web/apply", {"nodes": ["node1", "node2"]})
    assert reply.status == 200, reply.body
    conf = ada.request("GET", "/api/v1/modules/web/config").json()
    assert sim.spare_addr(0, 9) in conf["userconfig"] and conf["nodes"] == ["node1", "node2"]
    shipped = sim.host_path("node2", "/etc/hakit/modules/web/conf/userconfig.xml").read_text()
    assert "/var/lib/hakit-web-data" in shipped
    bad = ada.request("PUT", "/api/v1/modules/web/config", {"userconfig": BROKEN})
    assert bad.status == 400 and bad.json()["problems"]
    reply = ada.request("DELETE", "/api/v1/modules/web")
    assert reply.status == 200, reply.body
    commands = ada.request("GET", "/api/v1/commands").json()
    assert any(c["user"] == "ada" and c["origin"] == "api"
               and c["command"].startswith("hakit module install -m web") for c in commands)


def test_users_and_tokens(sim: Sim) -> None:
    ada = client(sim, user="ada")
    users_file = sim.host_path("node2", "/etc/hakit/web/users.json")
    eve_body = {"name": "eve", "role": "monitor", "password": "eve-password-1"}
    reply = ada.request("POST", "/api/v1/users", eve_body)
    assert reply.status == 201, reply.body
    # Shipped: eve logs in on the other node; the file holds no password, and only root reads it.
    assert client(sim, "node2").login("eve", "eve-password-1").status == 200
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    assert "eve-password-1" not in users_file.read_text()
    assert ada.request("POST", "/api/v1/users", {**eve_body, "role": "admin"}).status == 409
    assert "at least 8" in ada.request("POST", "/api/v1/users", {"name": "al", "role": "admin",
                                                                  "password": "short"}).error
    eve = client(sim, user=None)
    eve.login("eve", "eve-password-1")
    assert ada.request("PUT", "/api/v1/users/eve", {"role": "control"}).status == 200
    assert eve.request("GET", "/api/v1/session").status == 401  # logged out by the change
    # A token for scripts: no cookie, no CSRF; deleted, it no longer works.
    token = ada.request("POST", "/api/v1/tokens", {"name": "ci", "days": 1}).json()["token"]
    script = Client(sim.addr("node2"), ada.ca, token=token)
    assert script.request("GET", "/api/v1/session").json()["user"] == "ada"
    assert script.request("POST", "/api/v1/config/check", {"userconfig": LIGHT}).json()["ok"]
    assert ada.request("DELETE", "/api/v1/tokens/ci").status == 200
    assert script.request("GET", "/api/v1/cluster").status == 401
    out = sim.exec("node1", ["hakit", "web", "token", "add", "mo", "probe"]).stdout.strip().splitlines()[-1]
    assert Client(sim.addr("node1"), ada.ca, token=out).request("GET", "/api/v1/cluster").status == 200
    assert "eve" in sim.exec("node2", ["hakit", "web", "user", "list"]).stdout
    assert ada.request("DELETE", "/api/v1/users/eve").status == 200
    assert ada.request("DELETE", "/api/v1/users/ada").status == 409
    bad = sim.exec("node1", ["hakit", "web", "user", "add", "zed", "--role", "root", "--password-stdin"],
                   input="whatever-pw\n", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_openapi_lists_every_endpoint(sim: Sim) -> None:
    doc = client(sim).request("GET", "/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for e in api.endpoints:
        op = doc["paths"][e.path][e.method.lower()]
        assert op["summary"]
        if e.body is not None:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert schema["additionalProperties"] is False and set(schema["properties"]) == set(e.body)


def test_a_node_down_is_shown_down(sim: Sim) -> None:
    """Last: kills node2."""
    mo = client(sim, user="mo")
    sim.kill("node2")
    began = time.monotonic()
    overview = mo.request("GET", "/api/v1/cluster").json()
    assert time.monotonic() - began < 8
    (node2,) = [n for n in overview["nodes"] if n["name"] == "node2"]
    assert not node2["up"] and node2["error"]
    (am,) = [m for m in overview["modules"] if m["name"] == "am"]
    assert am["states"]["node2"] is None and am["states"]["node1"]["state"] == "STOP"
    reply = mo.request("GET", "/api/v1/modules/am/nodes/node2/resources")
    assert reply.status == 502 and "node2" in reply.error
    wait_for("node1 still answers", lambda: mo.request("GET", "/api/v1/session").status == 200, 5)


def test_users_file_damage_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    from hakit.node.web.users import UserError, Users

    bad = tmp_path / "users.json"
    bad.write_text('{"users": {"x": {"role": "god"}}}')
    with pytest.raises(UserError, match="damaged"):
        Users(bad)
