"""Console and API logins checked against an LDAP directory or Active Directory (cluster.xml
<web><ldap>; docs/web.md, "LDAP").

A login, in a worker thread since ldap3 blocks (hakitd's event loop must not wait on a directory):

1. The service connection (binddn, or anonymous) finds the user's entry under `base` with
   `filter`, the login name escaped: a name such as `*` or `a)(uid=*` is a value, never filter
   syntax.  No entry, or more than one, is a refusal.
2. A second connection binds as that entry's DN with the password: the directory alone judges
   it.  An empty password is refused before any bind: to RFC 4513 (5.1.2) a DN with no password
   is an *unauthenticated* bind, which many directories accept as anonymous.
3. The role: the first of admin, control, monitor whose group holds the user, seen either in
   the entry's memberOf (Active Directory, OpenLDAP's memberof overlay) or by asking the group
   itself for member / uniqueMember (the DN) or memberUid (the uid): groupOfNames,
   groupOfUniqueNames and posixGroup alike.  Nested groups are not followed.

Passwords (the user's and bindpassword) travel only inside TLS: ldaps://, or ldap:// upgraded
with StartTLS, the server's certificate verified against `cafile` (the system's CAs without it)
and its name against the URL's host.  Only ldap:// with starttls="off" sends them in the clear,
and hakitd says so once.  Referrals are not chased: one would resend the service credentials to
a server the configuration does not name.

Several URLs (space separated) are tried in order until one answers, so that one domain
controller down does not lock everybody out.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from hakit.config.cluster_model import WebLdap
from hakit.errors import HakitError
from hakit.throttle import Throttle

ROLES = ("admin", "control", "monitor")  # highest first: a user in several groups gets the first
CONNECT_TIMEOUT_S = 5
RECEIVE_TIMEOUT_S = 10  # an int: ldap3 packs it into SO_RCVTIMEO as whole seconds
MAX_NAME = 256  # longer login names are refused unasked: no directory has them
_NO_SUCH_OBJECT = 32
_SEARCH_ANSWERED = (0, 4, _NO_SUCH_OBJECT)  # success, sizeLimitExceeded (two entries), noSuchObject


class LdapUnavailable(HakitError):
    """The directory could not be asked: unreachable, TLS refused, or hakit's own settings refused."""


class _Unreachable(Exception):
    """One URL did not answer or failed TLS: the next one is tried."""


_warned: set[str] = set()
_unavailable_log = Throttle(60.0, burst=3)


def _log(message: str) -> None:
    print(f"hakitd: web: ldap: {message}", file=sys.stderr, flush=True)


def _warn_once(message: str) -> None:
    # A login every few seconds must not fill the log with the same line.
    if message not in _warned:
        _warned.add(message)
        _log(message)


async def ldap_role(conf: WebLdap, user: str, password: str) -> str | None:
    """The role ("admin", "control" or "monitor") of `user` if the directory accepts `password`
    and puts the user in a configured group; None otherwise.  LdapUnavailable when it cannot be asked."""
    if not user or not password or len(user) > MAX_NAME or not user.isprintable():
        # (a control character in a name is no login, and would reach the log)
        return None
    try:
        return await asyncio.to_thread(_login, conf, user, password)
    except LdapUnavailable as exc:
        # Logins go on failing while the directory is away: the operator needs the reason in
        # the log, not one line per attempt.
        line = _unavailable_log(str(exc))
        if line is not None:
            _log(line)
        raise


def _login(conf: WebLdap, user: str, password: str) -> str | None:
    failures = []
    context = _tls_context(conf)
    for url in conf.url.split():
        try:
            server = _server(conf, url, context)
            service = _connect(server, conf, conf.binddn or None, conf.bindpassword or None)
        except _Unreachable as exc:
            failures.append(f"{url}: {exc}")
            continue
        try:
            if not service.bound:
                raise LdapUnavailable(f"LDAP directory {url} refused the bind of binddn "
                                      f"{conf.binddn or '(anonymous)'}: {_result(service)}")
            return _check(conf, server, service, user, password)
        except (LDAPException, _Unreachable) as exc:
            # The directory went away between the steps: the same for this login as not answering.
            raise LdapUnavailable(f"LDAP directory {url}: {_reason(exc, conf)}") from None
        finally:
            _close(service)
    raise LdapUnavailable("LDAP directory unavailable: " + "; ".join(failures))


class _Tls(ldap3.Tls):
    """ldap3's TLS with Python's own check of the certificate and of the name it gives: ldap3
    turns the context's check off for a check of its own through ssl.match_hostname, deprecated
    (and gone from Python 3.12)."""

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.context = context
        self.host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        # An IP address is checked against the certificate's IP addresses and sent as no SNI.
        connection.socket = self.context.wrap_socket(connection.socket, server_side=False,
                                                     do_handshake_on_connect=do_handshake,
                                                     server_hostname=self.host)


def _tls_context(conf: WebLdap) -> ssl.SSLContext:
    # The certificate verified and its name checked (create_default_context), TLS 1.2 at least.
    try:
        context = ssl.create_default_context(cafile=conf.cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise LdapUnavailable(f"LDAP cafile {conf.cafile} cannot be used: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # the default now; stated, as docs/web.md promises it
    return context


def _server(conf: WebLdap, url: str, context: ssl.SSLContext) -> Any:
    if urlsplit(url).scheme == "ldap" and not conf.starttls:
        _warn_once(f"{url} with starttls=\"off\": passwords are sent in the clear")
    try:
        server = ldap3.Server(url, connect_timeout=CONNECT_TIMEOUT_S, get_info=ldap3.NONE)
    except LDAPException as exc:
        raise _Unreachable(_reason(exc, conf)) from None
    server.tls = _Tls(context, server.host)
    return server


def _connect(server: Any, conf: WebLdap, dn: str | None, password: str | None) -> Any:
    """An open connection, TLS started when it must be, bound as dn (anonymous when None); its
    `bound` says whether the directory accepted the credentials.  _Unreachable when it cannot."""
    conn = ldap3.Connection(
        server, user=dn, password=password,
        authentication=ldap3.SIMPLE if dn else ldap3.ANONYMOUS,
        auto_referrals=False, read_only=True, receive_timeout=RECEIVE_TIMEOUT_S,
        raise_exceptions=False, return_empty_attributes=False)
    try:
        conn.open()
        if conf.starttls and not server.ssl and not conn.start_tls():
            raise _Unreachable("StartTLS refused")
        conn.bind()
    except LDAPException as exc:
        _close(conn)
        raise _Unreachable(_reason(exc, conf)) from None
    except BaseException:
        _close(conn)
        raise
    return conn


def _check(conf: WebLdap, server: Any, service: Any, user: str, password: str) -> str | None:
    found = _find_user(conf, service, user)
    if found is None:
        return None
    dn, attrs = found
    own = _connect(server, conf, dn, password)
    try:
        if not own.bound:
            return None
    finally:
        _close(own)
    member_of = {_dn_key(group) for group in attrs.get("memberOf") or ()}
    uid = (attrs.get("uid") or [user])[0]
    for role in ROLES:
        group = getattr(conf, role)
        if group and (_dn_key(group) in member_of or _has_member(service, role, group, dn, uid)):
            return role
    return None


def _find_user(conf: WebLdap, service: Any, user: str) -> tuple[str, dict[str, Any]] | None:
    query = conf.filter.replace("{user}", escape_filter_chars(user))
    # Two at most: a second entry is enough to refuse, and no directory should hand over a list.
    service.search(conf.base, query, ldap3.SUBTREE, attributes=["memberOf", "uid"], size_limit=2)
    _search_answered(service, f"the search under {conf.base}")
    if service.result["result"] == _NO_SUCH_OBJECT:
        raise LdapUnavailable(f"LDAP base {conf.base} is not in the directory")
    entries = [r for r in service.response or () if r.get("type") == "searchResEntry"]
    if len(entries) != 1:
        if len(entries) > 1:
            _warn_once(f"{query} matches more than one entry under {conf.base}: such logins are refused")
        return None
    return entries[0]["dn"], entries[0]["attributes"]


def _has_member(service: Any, role: str, group: str, dn: str, uid: str) -> bool:
    e_dn, e_uid = escape_filter_chars(dn), escape_filter_chars(uid)
    service.search(group, f"(|(member={e_dn})(uniqueMember={e_dn})(memberUid={e_uid}))",
                   ldap3.BASE, attributes=[ldap3.NO_ATTRIBUTES])
    _search_answered(service, f"the search of the {role} group {group}")
    if service.result["result"] == _NO_SUCH_OBJECT:
        _warn_once(f"the {role} group {group} is not in the directory")
        return False
    return any(r.get("type") == "searchResEntry" for r in service.response or ())


def _search_answered(service: Any, what: str) -> None:
    # Anything else (Active Directory refusing an anonymous search: operationsError; an
    # unwilling server) would otherwise pass for "no such user" and look like a wrong password.
    if service.result["result"] not in _SEARCH_ANSWERED:
        raise LdapUnavailable(f"LDAP directory refused {what}: {_result(service)}")


def _dn_key(dn: str) -> str:
    # DNs name the same entry whatever the case and the spaces around separators (the
    # attributes of DNs that groups use compare case-insensitively).
    try:
        rdns = parse_dn(dn, strip=True)
    except LDAPException:
        return dn.strip().lower()
    return "".join(f"{kind.lower()}={value.lower()}{sep}" for kind, value, sep in rdns)


def _close(conn: Any) -> None:
    with contextlib.suppress(LDAPException):
        conn.unbind()
    # unbind() leaves the socket of a connection whose opening failed (TLS refused) open.
    sock = getattr(conn, "socket", None)
    if sock is not None:
        sock.close()


def _result(conn: Any) -> str:
    result = conn.result or {}
    text = result.get("description") or "refused"
    if result.get("message"):
        text += f" ({result['message']})"
    return text


def _reason(exc: BaseException, conf: WebLdap) -> str:
    """ldap3's message made one line a person can act on."""
    text = " ".join(str(exc).split())
    # ldap3 wraps some messages in tuples, which print as their repr: ("('message',)",)
    while (inner := re.fullmatch(r"""\(\s*(["'])(.*)\1,\s*\)""", text)) is not None:
        text = inner.group(2).replace("\\'", "'").replace('\\"', '"')
    text = re.sub(r"^(socket connection error while opening|socket ssl wrapping error|wrap socket error): ",
                  "", text)
    text = re.sub(r" \(_ssl\.c:\d+\)|\[Errno \d+\] ", "", text)
    verify = re.search(r"certificate verify failed: (.+)", text)
    if verify:
        trusted = f"cafile {conf.cafile}" if conf.cafile else "the system's CAs"
        why = verify.group(1).strip().rstrip(".")
        return f"TLS: the directory's certificate is refused ({why}; checked against {trusted})"
    if text.startswith("[SSL"):
        return "TLS handshake failed: " + text
    if "startTLS failed - " in text:
        return "the directory refused StartTLS: " + text.split("startTLS failed - ", 1)[1]
    return text[:300]
