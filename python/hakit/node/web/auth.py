"""Who is asking: console sessions (a cookie, with a CSRF token for every change), script tokens
(Authorization: Bearer), and the failed-login limits that keep password guessing slow."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hakit.node.web.users import Users

COOKIE = "hakit_session"
CSRF_HEADER = "X-CSRF-Token"
FAILURES_ALLOWED = 5  # failed logins per client address, and per user name, per window
FAILURE_WINDOW_S = 60.0
MAX_SESSIONS = 1000  # beyond it the idlest session ends: logins cannot fill the memory
# At most this many password checks at once: each takes 32 MiB and a tenth of a second of CPU.
CONCURRENT_CHECKS = 2


@dataclass
class Identity:
    user: str
    role: str
    via: str  # "session" | "token" | "ldap session"
    csrf: str = ""


@dataclass
class Session:
    identity: Identity
    last: float


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)

    def recent(self, now: float) -> int:
        while self.times and now - self.times[0] > FAILURE_WINDOW_S:
            self.times.popleft()
        return len(self.times)


class TooManyFailures(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


# A directory login: (user, password) -> role, None when refused.
DirectoryCheck = Callable[[str, str], Awaitable[str | None]]


class Authenticator:
    def __init__(self, users: Callable[[], Users], idle_s: float,
                 directory: DirectoryCheck | None = None) -> None:
        self._users = users
        self.idle_s = idle_s
        self.directory = directory
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, _Failures] = {}
        self._checks = asyncio.Semaphore(CONCURRENT_CHECKS)

    # -- logins
    def _limited(self, keys: list[str], now: float) -> None:
        for key in keys:
            f = self._failures.get(key)
            if f is not None and f.recent(now) >= FAILURES_ALLOWED:
                raise TooManyFailures(FAILURE_WINDOW_S - (now - f.times[0]))

    def _failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            self._failures.setdefault(key, _Failures()).times.append(now)
        if len(self._failures) > 10 * MAX_SESSIONS:
            # Forget addresses and names with nothing recent rather than grow without bound.
            for key in [k for k, f in self._failures.items() if not f.recent(now)]:
                del self._failures[key]

    async def login(self, user: str, password: str, client: str) -> tuple[str, Identity] | None:
        """(session id, identity) for a good password; None for a bad one.  Raises
        TooManyFailures for a client address or a user name with too many recent failures."""
        now = time.monotonic()
        keys = [f"addr:{client}", f"user:{user}"]
        self._limited(keys, now)
        async with self._checks:
            users = self._users()
            found = await asyncio.to_thread(users.check, user, password)
            role, via = (found.role, "session") if found else (None, "")
            # A local name is never asked of the directory: a directory user of the same name
            # must not log in as someone the commands log could not tell from the local one.
            if role is None and self.directory is not None and password and user not in users.users:
                role, via = await self.directory(user, password), "ldap session"
        if role is None:
            self._failed(keys, now)
            return None
        identity = Identity(user, role, via, secrets.token_urlsafe(24))
        sid = secrets.token_urlsafe(32)
        if len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].last)]
        self._sessions[sid] = Session(identity, time.monotonic())
        return sid, identity

    def logout(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def end_sessions_of(self, user: str) -> None:
        """After a password, role or deletion change: the user logs in again."""
        for sid in [s for s, v in self._sessions.items() if v.identity.user == user]:
            del self._sessions[sid]

    # -- requests
    def session(self, sid: str) -> Identity | None:
        s = self._sessions.get(sid)
        now = time.monotonic()
        if s is None:
            return None
        if now - s.last > self.idle_s:
            del self._sessions[sid]
            return None
        s.last = now
        if s.identity.via == "session":
            # A local user's role or deletion, changed by `hakit web user` meanwhile, applies now.
            user = self._users().users.get(s.identity.user)
            if user is None:
                del self._sessions[sid]
                return None
            s.identity.role = user.role
        return s.identity

    def token(self, token: str) -> Identity | None:
        user = self._users().by_token(token)
        return Identity(user.name, user.role, "token") if user else None
