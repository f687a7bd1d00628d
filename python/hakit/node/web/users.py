"""Console and API users of a node: name, role, a memory-hard hash of the password, and the
hashes of the tokens scripts present.  One JSON file, 0600, replaced whole on each change
(and shipped whole to the other nodes: `hakit web user` changes the cluster's users)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hakit.errors import HakitError, UsageError
from hakit.files import private_dir, write_atomic

ROLES = ("monitor", "control", "admin")  # each may do what the ones before it may
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# scrypt with N=2^15, r=8: 32 MiB and about 0.1 s per check, so a stolen file costs an attacker
# as much per guess; the parameters are stored with each hash, so they can grow later.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
MIN_PASSWORD = 8
TOKEN_PREFIX = "hk_"


class UserError(HakitError):
    pass


class UserExists(UserError):
    pass


def role_rank(role: str) -> int:
    return ROLES.index(role)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def hash_password(password: str, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        again = hash_password(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(again.rsplit("$", 1)[1], digest)


def token_hash(token: str) -> str:
    """Tokens are 256 random bits: a fast hash is enough, and lets every request be checked."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Token:
    hash: str
    created: float
    expires: float | None = None


@dataclass
class User:
    name: str
    role: str
    password: str  # the scrypt string; "" for a user that logs in with a token only
    tokens: dict[str, Token] = field(default_factory=dict)


class Users:
    """The file's content; `save()` writes it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users: dict[str, User] = {}
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} cannot be read: {exc}") from None
        try:
            for name, u in raw.get("users", {}).items():
                tokens = {t: Token(**v) for t, v in u.get("tokens", {}).items()}
                self.users[name] = User(name, check_role(u["role"]), u.get("password", ""), tokens)
        except (TypeError, KeyError, AttributeError, HakitError) as exc:
            raise UserError(f"{path} is damaged: {exc}") from None

    def dump(self) -> bytes:
        body = {"users": {n: {"role": u.role, "password": u.password,
                              "tokens": {t: asdict(v) for t, v in u.tokens.items()}}
                          for n, u in sorted(self.users.items())}}
        return json.dumps(body, indent=1).encode() + b"\n"

    def save(self) -> None:
        private_dir(self.path.parent)
        write_atomic(self.path, self.dump(), 0o600)

    def get(self, name: str) -> User:
        try:
            return self.users[name]
        except KeyError:
            raise UserError(f"no user {name!r}") from None

    def add(self, name: str, role: str, password: str) -> None:
        if not NAME.match(name):
            raise UsageError(f"user name {name!r}: 1 to 64 letters, digits or _.@-")
        if name in self.users:
            raise UserExists(f"user {name!r} exists already ('hakit web user passwd' or 'role')")
        self.users[name] = User(name, check_role(role), hash_password(check_password(password)))

    def set_password(self, name: str, password: str) -> None:
        self.get(name).password = hash_password(check_password(password))

    def set_role(self, name: str, role: str) -> None:
        self.get(name).role = check_role(role)

    def delete(self, name: str) -> None:
        self.get(name)
        del self.users[name]

    def check(self, name: str, password: str) -> User | None:
        """The user if the password is theirs.  An unknown name costs the same time as a
        wrong password, so that the answer's delay does not tell which names exist."""
        user = self.users.get(name)
        if user is None or not user.password:
            verify_password(password, hash_password("", b"\0" * 16))
            return None
        return user if verify_password(password, user.password) else None

    def new_token(self, name: str, label: str, lifetime: float | None = None) -> str:
        user = self.get(name)
        if not NAME.match(label):
            raise UsageError(f"token name {label!r}: 1 to 64 letters, digits or _.@-")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        user.tokens[label] = Token(token_hash(token), now, now + lifetime if lifetime else None)
        return token

    def drop_token(self, name: str, label: str) -> None:
        if self.get(name).tokens.pop(label, None) is None:
            raise UserError(f"user {name!r} has no token {label!r}")

    def by_token(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        wanted, now = token_hash(token), time.time()
        for user in self.users.values():
            for t in user.tokens.values():
                if hmac.compare_digest(t.hash, wanted) and (t.expires is None or t.expires > now):
                    return user
        return None

    def listing(self) -> list[dict[str, Any]]:
        return [{"name": u.name, "role": u.role, "password": bool(u.password),
                 "tokens": [{"name": t, "created": v.created, "expires": v.expires}
                            for t, v in sorted(u.tokens.items())]}
                for u in sorted(self.users.values(), key=lambda u: u.name)]


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a password needs at least {MIN_PASSWORD} characters")
    return password
