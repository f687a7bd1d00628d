"""LDAP logins (hakit.node.web.ldap_auth) against a real slapd this module starts: roles from
each kind of group, refusals, filter injection, TLS (StartTLS, ldaps, a wrong CA, a wrong name)
and a directory that does not answer."""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import ssl
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest

from hakit import ipc
from hakit.config.cluster_model import WEB_PORT, WebLdap
from hakit.config.loader import check_files
from hakit.config.safe_archive import pack
from hakit.node.web import ldap_auth
from hakit.node.web.ldap_auth import LdapUnavailable, ldap_role
from hakit.runtime import credentials
from hakit.throttle import Throttle
from tests.helpers import wait_for
from tests.leaks import run_loop
from tests.slapd import ROOT_DN, ROOT_PW, Certs, Slapd, free_port, make_ca, make_certs

BASE = "dc=example,dc=com"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
SERVICE_DN = f"cn=hakit,ou=services,{BASE}"
SERVICE_PW = "service-pw"


def _person(uid: str, ou: str = PEOPLE) -> str:
    return textwrap.dedent(f"""\
        dn: uid={uid},{ou}
        objectClass: inetOrgPerson
        uid: {uid}
        cn: {uid}
        sn: {uid}
        userPassword: {uid}-pw

        """)


# Loaded before slapd starts (slapadd): no memberOf for anyone.  operators is found by
# `member`, viewers by `memberUid`, auditors by `uniqueMember`.
PRELOAD = textwrap.dedent(f"""\
    dn: {BASE}
    objectClass: dcObject
    objectClass: organization
    o: Example
    dc: example

    dn: {PEOPLE}
    objectClass: organizationalUnit
    ou: people

    dn: ou=staff,{PEOPLE}
    objectClass: organizationalUnit
    ou: staff

    dn: {GROUPS}
    objectClass: organizationalUnit
    ou: groups

    dn: ou=services,{BASE}
    objectClass: organizationalUnit
    ou: services

    dn: {SERVICE_DN}
    objectClass: organizationalRole
    objectClass: simpleSecurityObject
    cn: hakit
    userPassword: {SERVICE_PW}

    """) + "".join(_person(u) for u in ("alice", "bob", "carol", "dave", "erin", "o*hara", "twin")) + \
    _person("twin", f"ou=staff,{PEOPLE}") + textwrap.dedent(f"""\
    dn: cn=operators,{GROUPS}
    objectClass: groupOfNames
    cn: operators
    member: uid=bob,{PEOPLE}

    dn: cn=viewers,{GROUPS}
    objectClass: posixGroup
    cn: viewers
    gidNumber: 5000
    memberUid: carol
    memberUid: erin
    memberUid: o*hara
    memberUid: twin

    dn: cn=auditors,{GROUPS}
    objectClass: groupOfUniqueNames
    cn: auditors
    uniqueMember: uid=dave,{PEOPLE}

    """)

# Added once slapd runs: the memberof overlay gives alice and erin memberOf, as Active Directory would.
ONLINE = textwrap.dedent(f"""\
    dn: cn=admins,{GROUPS}
    objectClass: groupOfNames
    cn: admins
    member: uid=alice,{PEOPLE}
    member: uid=erin,{PEOPLE}
    """)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("ldap-certs"), ["127.0.0.1"])


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Slapd]:
    with Slapd(tmp_path_factory.mktemp("slapd"), certs, PRELOAD, ONLINE) as server:
        yield server


def conf(server: Slapd, certs: Certs, **kw: Any) -> WebLdap:
    """The settings the tests start from: StartTLS, anonymous search, the three groups."""
    base = WebLdap(url=server.url(), cafile=str(certs.ca), base=PEOPLE, admin=f"cn=admins,{GROUPS}",
                   control=f"cn=operators,{GROUPS}", monitor=f"cn=viewers,{GROUPS}")
    return dataclasses.replace(base, **kw)


def role(c: WebLdap, user: str, password: str) -> str | None:
    return run_loop(ldap_role(c, user, password))


def unavailable(c: WebLdap, user: str = "alice", password: str = "alice-pw") -> str:
    with pytest.raises(LdapUnavailable) as caught:
        role(c, user, password)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600, message
    return message


def search(server: Slapd, dn: str, attr: str) -> str:
    return subprocess.run(["ldapsearch", "-x", "-LLL", "-H", server.url(), "-D", ROOT_DN, "-w", ROOT_PW,
                           "-b", dn, "-s", "base", attr], check=True, capture_output=True, text=True).stdout


def test_both_ways_of_finding_groups_are_exercised(slapd: Slapd) -> None:
    assert f"memberOf: cn=admins,{GROUPS}" in search(slapd, f"uid=alice,{PEOPLE}", "memberOf")
    assert "memberOf" not in search(slapd, f"uid=bob,{PEOPLE}", "memberOf")


@pytest.mark.parametrize(("user", "expected"), [
    ("alice", "admin"),      # memberOf on her entry
    ("bob", "control"),      # member of a groupOfNames, no memberOf
    ("carol", "monitor"),    # memberUid of a posixGroup
    ("erin", "admin"),       # admins (memberOf) and viewers: the highest role wins
    ("dave", None),          # in no configured group
    ("ALICE", "admin"),      # uid compares case-insensitively, memberOf too
])
def test_role_of_each_group(slapd: Slapd, certs: Certs, user: str, expected: str | None) -> None:
    assert role(conf(slapd, certs), user, f"{user.lower()}-pw") == expected


def test_unique_member_group(slapd: Slapd, certs: Certs) -> None:
    c = conf(slapd, certs, admin=None, control=None, monitor=f"cn=auditors,{GROUPS}")
    assert role(c, "dave", "dave-pw") == "monitor"
    assert role(c, "alice", "alice-pw") is None


def test_group_dns_compare_whatever_their_case_and_spaces(slapd: Slapd, certs: Certs) -> None:
    c = conf(slapd, certs, admin="CN=Admins, OU=Groups, DC=Example, DC=Com")
    assert role(c, "alice", "alice-pw") == "admin"


@pytest.mark.parametrize(("user", "password"), [
    ("alice", "wrong"),
    ("alice", "bob-pw"),
    ("alice", ""),           # an unauthenticated bind, which slapd would accept as anonymous
    ("nobody", "nobody-pw"),
    ("", "alice-pw"),
    ("x" * 300, "alice-pw"),
    ("twin", "twin-pw"),     # two entries answer to the name: refused rather than picking one
])
def test_refused(slapd: Slapd, certs: Certs, user: str, password: str) -> None:
    assert role(conf(slapd, certs), user, password) is None


def test_an_empty_password_is_never_sent(slapd: Slapd, certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    binds: list[str | None] = []

    class Spy(ldap3.Connection):  # type: ignore[misc]
        def bind(self, *a: Any, **kw: Any) -> Any:
            binds.append(self.user)
            return super().bind(*a, **kw)

    monkeypatch.setattr(ldap3, "Connection", Spy)
    assert role(conf(slapd, certs), "alice", "") is None
    assert binds == []
    assert role(conf(slapd, certs), "alice", "alice-pw") == "admin"
    assert binds == [None, f"uid=alice,{PEOPLE}"]  # the anonymous search, then alice


@pytest.mark.parametrize("name", ["*", "a*", "*lice", "al*e", "alice)(uid=*", "*)(uid=alice", "alice)",
                                  "(uid=alice)", "alice\\", "alice\x00"])
def test_filter_injection_logs_nobody_in(slapd: Slapd, certs: Certs, name: str) -> None:
    assert role(conf(slapd, certs), name, "alice-pw") is None
    # The same with a filter whose other terms an injection would try to escape.
    c = conf(slapd, certs, filter="(&(objectClass=inetOrgPerson)(uid={user}))")
    assert role(c, name, "alice-pw") is None


def test_a_name_with_filter_characters_is_taken_literally(slapd: Slapd, certs: Certs) -> None:
    # o*hara exists: escaping makes the name a value, both in the user's search and in memberUid.
    assert role(conf(slapd, certs), "o*hara", "o*hara-pw") == "monitor"
    assert role(conf(slapd, certs), "o*hara", "alice-pw") is None


def test_search_with_a_service_account(slapd: Slapd, certs: Certs) -> None:
    c = conf(slapd, certs, binddn=SERVICE_DN, bindpassword=SERVICE_PW)
    assert role(c, "bob", "bob-pw") == "control"
    message = unavailable(dataclasses.replace(c, bindpassword="wrong"))
    assert "refused the bind of binddn" in message and "invalidCredentials" in message


def test_ldaps(slapd: Slapd, certs: Certs) -> None:
    assert role(conf(slapd, certs, url=slapd.url("ldaps")), "alice", "alice-pw") == "admin"
    assert role(conf(slapd, certs, url=slapd.url("ldaps")), "alice", "wrong") is None


def test_a_certificate_of_another_ca_is_refused(slapd: Slapd, certs: Certs, tmp_path: Path) -> None:
    other, _, _ = make_ca(tmp_path, "another-ca")
    for url in (slapd.url(), slapd.url("ldaps")):  # StartTLS, ldaps
        message = unavailable(conf(slapd, certs, url=url, cafile=str(other)))
        assert url in message and "certificate is refused" in message and str(other) in message, message


def test_a_certificate_for_another_name_is_refused(slapd: Slapd, certs: Certs) -> None:
    # The certificate names 127.0.0.1 only.
    url = f"ldaps://localhost:{slapd.tls_port}"
    assert "certificate is refused (Hostname mismatch" in unavailable(conf(slapd, certs, url=url))


def test_a_cafile_that_cannot_be_read(slapd: Slapd, certs: Certs, tmp_path: Path) -> None:
    assert "No such file" in unavailable(conf(slapd, certs, cafile=str(tmp_path / "none.pem")))
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    assert f"LDAP cafile {tmp_path}/bad.pem cannot be used" in unavailable(
        conf(slapd, certs, cafile=str(tmp_path / "bad.pem")))


def test_starttls_refused_by_the_directory(tmp_path: Path) -> None:
    # A directory with no certificate answers StartTLS with an error: no password goes out then.
    with Slapd(tmp_path / "slapd", None, PRELOAD) as server:
        message = unavailable(WebLdap(url=server.url(), base=PEOPLE, admin=f"cn=admins,{GROUPS}"))
    assert "StartTLS" in message, message


def test_plain_ldap_when_asked_warns_once(slapd: Slapd, certs: Certs,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    c = conf(slapd, certs, starttls=False)
    assert role(c, "alice", "alice-pw") == "admin"
    assert role(c, "bob", "bob-pw") == "control"
    err = capsys.readouterr().err
    assert err.count("passwords are sent in the clear") == 1, err


def test_a_stopped_directory_is_unavailable(tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ldap_auth, "_unavailable_log", Throttle(60.0, burst=3))
    with Slapd(tmp_path / "slapd", certs, PRELOAD, ONLINE) as server:
        c = conf(server, certs)
        assert role(c, "alice", "alice-pw") == "admin"
    message = unavailable(c)
    assert server.url() in message and "refused" in message.lower(), message
    assert not server.dir.exists()
    # In hakitd's log too, but not once per attempt.
    for _ in range(5):
        unavailable(c)
    assert capsys.readouterr().err.count(f"hakitd: web: ldap: {message}\n") == 3


def test_the_next_url_answers_when_the_first_does_not(slapd: Slapd, certs: Certs) -> None:
    dead = f"ldap://127.0.0.1:{free_port('127.0.0.1')}"
    assert role(conf(slapd, certs, url=f"{dead} {slapd.url()}"), "alice", "alice-pw") == "admin"
    message = unavailable(conf(slapd, certs, url=f"{dead} {dead.replace('ldap:', 'ldaps:')}"))
    assert message.count("127.0.0.1") == 2, message


def test_a_base_not_in_the_directory(slapd: Slapd, certs: Certs) -> None:
    assert "is not in the directory" in unavailable(conf(slapd, certs, base=f"ou=nobody,{BASE}"))


def test_a_group_not_in_the_directory(slapd: Slapd, certs: Certs, capsys: pytest.CaptureFixture[str]) -> None:
    c = conf(slapd, certs, admin=f"cn=gone,{GROUPS}")
    assert role(c, "alice", "alice-pw") is None
    assert role(c, "bob", "bob-pw") == "control"
    assert f"the admin group cn=gone,{GROUPS} is not in the directory" in capsys.readouterr().err


CLUSTER = """\
<cluster>
  <lans><lan name="default"><node name="node1" addr="10.0.0.1"/></lan></lans>
  <web>
    {ldap}
  </web>
</cluster>
"""


@pytest.mark.parametrize(("ldap", "message"), [
    ('<ldap url="http://dc1" base="dc=x" admin="cn=a"/>', "is not ldap://host[:port] or ldaps://host[:port]"),
    ('<ldap url="ldaps://dc1 ldap://dc2/x" base="dc=x" admin="cn=a"/>', "'ldap://dc2/x' is not ldap://"),
    ('<ldap url="ldaps://dc1" base="dc=x" filter="(uid=alice)" admin="cn=a"/>', "must contain {user}"),
    ('<ldap url="ldaps://dc1" base="dc=x" filter="(uid={user}" admin="cn=a"/>', "is not an LDAP filter"),
    ('<ldap url="ldaps://dc1" base="dc=x" binddn="cn=svc" admin="cn=a"/>', "both binddn and bindpassword"),
    ('<ldap url="ldaps://dc1" base="dc=x"/>', "names no group"),
])
def test_configuration_problems(tmp_path: Path, ldap: str, message: str) -> None:
    path = tmp_path / "cluster.xml"
    path.write_text(CLUSTER.format(ldap=ldap))
    found = [str(p) for p in check_files([path])]
    assert len(found) == 1 and message in found[0] and ":4:" in found[0], found


def test_a_good_configuration(tmp_path: Path) -> None:
    path = tmp_path / "cluster.xml"
    path.write_text(CLUSTER.format(ldap=(
        '<ldap url="ldaps://dc1.example.com ldaps://dc2.example.com:3269" base="dc=example,dc=com" '
        'filter="(sAMAccountName={user})" binddn="svc@example.com" bindpassword="x" '
        'admin="cn=a,dc=example,dc=com"/>')))
    assert check_files([path]) == []


def test_a_directory_that_never_answers_times_out(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel accepts the connection (the backlog); nothing ever reads or answers it.
    monkeypatch.setattr(ldap_auth, "RECEIVE_TIMEOUT_S", 1)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        url = f"ldap://127.0.0.1:{mute.getsockname()[1]}"
        start = time.monotonic()
        message = unavailable(WebLdap(url=url, cafile=str(certs.ca), base=PEOPLE,
                                      admin=f"cn=admins,{GROUPS}"))
        assert time.monotonic() - start < 5, message
    assert url in message and "timed out" in message, message


# ---------------------------------------------------------------- end to end: hakitd in the simulated cluster


class Api:
    """HTTPS to a node's web service, as the console talks to it: a session cookie and its CSRF token."""

    def __init__(self, addr: str, ca: Path) -> None:
        self.addr = addr
        # The node's certificate chains to the cluster CA; the name it gives is the node's, not the address.
        self.tls = ssl.create_default_context(cafile=str(ca))
        self.tls.check_hostname = False
        self.cookie = self.csrf = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.addr, WEB_PORT, context=self.tls, timeout=60)
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
            headers["X-CSRF-Token"] = self.csrf
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"null")
            cookie = resp.getheader("Set-Cookie")
        finally:
            conn.close()
        if cookie and resp.status == 200:
            self.cookie = cookie.split(";", 1)[0]
        return resp.status, data

    def login(self, user: str, password: str) -> tuple[int, Any]:
        self.cookie = self.csrf = ""
        status, data = self.call("POST", "/api/v1/login", {"user": user, "password": password})
        if status == 200:
            self.csrf = data["csrf"]
        return status, data


@pytest.mark.root
def test_login_through_hakitd(make_sim: Any, tmp_path: Path) -> None:
    sim = make_sim(nodes=1, daemon=True)
    host = sim.host_addr(0)
    certs = make_certs(tmp_path / "certs", [host])
    paths = sim.paths("node1")
    (paths.etc / "ldap-ca.pem").write_bytes(certs.ca.read_bytes())
    archive = sim.host_path("node1", "/var/lib/hakit/am.safe")
    (archive.parent / "am" / "conf").mkdir(parents=True)
    (archive.parent / "am" / "conf" / "userconfig.xml").write_text(
        '<safe><service mode="light"><user/></service></safe>\n')
    pack(archive.parent / "am", archive)
    assert sim.exec("node1", ["hakit", "module", "install", "-m", "AM", "/var/lib/hakit/am.safe"],
                    check=False).returncode == 0

    with Slapd(tmp_path / "slapd", certs, PRELOAD, ONLINE, addr=host) as server:
        ldap = (f'<ldap url="{server.url()}" cafile="/etc/hakit/ldap-ca.pem" base="{PEOPLE}" '
                f'admin="cn=admins,{GROUPS}" control="cn=operators,{GROUPS}" monitor="cn=viewers,{GROUPS}"/>')
        paths.cluster_xml.write_text(paths.cluster_xml.read_text().replace("</cluster>",
                                                                           f"<web>{ldap}</web></cluster>"))
        ipc.call(paths.daemon_socket, "web_reload")
        api = Api(sim.addr("node1"), credentials.credential_files(paths)[0])
        wait_for("the web service", lambda: _answers(api))
        action = "/api/v1/modules/AM/nodes/node1/action"

        # Control: module actions, no administration.
        assert api.login("bob", "bob-pw") == (200, {"user": "bob", "role": "control", "csrf": api.csrf})
        status, session = api.call("GET", "/api/v1/session")
        assert status == 200 and (session["user"], session["role"], session["via"]) == (
            "bob", "control", "ldap session"), session
        status, done = api.call("POST", action, {"action": "start"})
        assert status == 200 and done["code"] == 0, done
        assert api.call("GET", "/api/v1/users")[0] == 403
        status, done = api.call("POST", action, {"action": "stop"})
        assert status == 200 and done["code"] == 0, done

        # Monitor: reads only.
        assert api.login("carol", "carol-pw")[1]["role"] == "monitor"
        assert api.call("GET", "/api/v1/modules/AM")[0] == 200
        status, refused = api.call("POST", action, {"action": "start"})
        assert status == 403 and "carol (monitor) may not do this" in refused["error"], refused

        # Admin: everything.
        assert api.login("alice", "alice-pw")[1]["role"] == "admin"
        assert api.call("GET", "/api/v1/users")[0] == 200

        for user, password in (("alice", "wrong"), ("dave", "dave-pw"), ("*", "alice-pw"), ("alice", "")):
            status, refused = api.login(user, password)
            assert status in (400, 401) and api.cookie == "", (user, status, refused)

        # The commands log names the directory's user (carol's refused start never ran).
        assert api.login("alice", "alice-pw")[0] == 200
        status, log = api.call("GET", "/api/v1/commands?node=node1")
        assert status == 200
        assert [(c["user"], c["origin"], c["command"], c["result"]) for c in log if c["origin"] == "api"] == [
            ("bob", "api", "hakit start -m AM", 0), ("bob", "api", "hakit stop -m AM", 0)], log

    # The directory gone: a clear answer, not "wrong password".
    status, refused = api.login("bob", "bob-pw")
    assert status == 503 and server.url() in refused["error"] and "refused" in refused["error"], refused
    out = (sim.node_dir("node1") / "log" / "hakitd.out").read_text()
    assert f"hakitd: web: ldap: {refused['error']}" in out and "Traceback" not in out, out


def _answers(api: Api) -> bool:
    try:
        return api.call("GET", "/api/v1/openapi.json")[0] == 200
    except OSError:
        return False
