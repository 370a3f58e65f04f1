"""Who is calling: static bearer tokens from a file, or signed JWTs.

A verified token becomes an identity ``(issuer, subject)``; the store a request reaches is
derived from that identity alone (see ``stores.py``). Static tokens are random 256-bit strings
the ``threadline token`` command prints once; the file keeps only their SHA-256 and the user,
and a presented token is compared against every entry in constant time. The file is re-read
when it changes, so a revoked token stops working at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from threadline.config import ConfigError
from threadline.paths import STATIC_ISSUER

log = logging.getLogger(__name__)

TOKEN_PREFIX = "tl_"


class TokenFileError(ConfigError):
    """The tokens or key file cannot be used; the message says which and why."""


@dataclass(frozen=True)
class TokenEntry:
    id: str
    user: str
    sha256: str
    created_at: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenFile:
    """The static tokens: ``{"tokens": [{"id", "user", "sha256", "created_at"}, ...]}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: list[TokenEntry] = []
        self._good = False  # the file has read well at least once

    def entries(self) -> list[TokenEntry]:
        """The entries, re-read whenever the file changed since the last look. A file that
        no longer reads (a bad edit) keeps the last good entries in force, with one log line;
        one that never read raises ``TokenFileError``."""
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._entries, self._good = None, [], True
                return []
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                try:
                    self._entries, self._good = self._read(), True
                except TokenFileError as exc:
                    if not self._good:
                        raise
                    log.error("%s; the tokens read before stay in force", exc)
                self._stamp = stamp
            return list(self._entries)

    def _read(self) -> list[TokenEntry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = [TokenEntry(**item) for item in data["tokens"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TokenFileError(f"tokens file {self.path} is not readable: {exc}") from None
        for entry in entries:
            if not all(isinstance(v, str) for v in entry.__dict__.values()):
                raise TokenFileError(f"tokens file {self.path}: every field must be a string")
        return entries

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive use of the file across processes, for a read-modify-write (a lock file
        beside it, as the file itself is replaced on every write)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _current(self) -> list[TokenEntry]:
        """The entries as the file holds them now (under the lock: never a cached copy)."""
        return self._read() if self.path.exists() else []

    def _write(self, entries: list[TokenEntry]) -> None:
        """Replace the file whole: a temporary file of its own, synced, renamed over it."""
        data = {"tokens": [e.__dict__ for e in entries]}
        prefix = f".{self.path.name}."
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=prefix, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(name, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def add(self, user: str) -> tuple[TokenEntry, str]:
        """A new token for ``user``: the entry stored, and the token itself (shown once)."""
        if not user or len(user) > 200 or any(ch.isspace() or not ch.isprintable() for ch in user):
            raise TokenFileError("user: must be 1-200 printable characters without spaces")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        entry = TokenEntry(
            id=secrets.token_hex(4),
            user=user,
            sha256=_digest(token),
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        with self._locked():
            self._write([*self._current(), entry])
        return entry, token

    def revoke(self, user_or_id: str) -> list[TokenEntry]:
        """Remove every token of a user, or the token with this id; returns what was removed."""
        with self._locked():
            entries = self._current()
            gone = [e for e in entries if user_or_id in (e.user, e.id)]
            if gone:
                self._write([e for e in entries if e not in gone])
        return gone

    def find(self, token: str) -> TokenEntry | None:
        """The entry for a presented token; every entry is compared, in constant time."""
        digest = _digest(token)
        found = None
        for entry in self.entries():
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found


class StaticTokenVerifier:
    """The SDK's TokenVerifier over a tokens file."""

    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        entry = self.tokens.find(token)
        if entry is None:
            return None
        return AccessToken(
            token=entry.id,
            client_id=entry.user,
            scopes=[],
            subject=entry.user,
            claims={"iss": STATIC_ISSUER, "sub": entry.user},
        )


class JWTVerifier:
    """Signed JWTs: signature, issuer, audience, expiry and a present ``sub`` are required.

    The key file holds a PEM public key (RS256, ES256) or, for HS256, the shared secret.
    """

    def __init__(self, issuer: str, audience: str, key_file: Path) -> None:
        try:
            material = key_file.read_bytes()
        except OSError as exc:
            raise TokenFileError(f"JWT key file {key_file}: {exc.strerror or exc}") from None
        self.issuer = issuer
        self.audience = audience
        self._key: Any
        if material.lstrip().startswith(b"-----BEGIN"):
            self._key, self._algorithms = _public_key(material, key_file)
        else:
            self._key = material.strip()
            if len(self._key) < 32:
                raise TokenFileError("JWT HS256 secret must be at least 32 bytes")
            self._algorithms = ["HS256"]

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError):  # any token this key cannot verify: a 401
            return None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            return None
        return AccessToken(
            token=token[-8:],
            client_id=str(claims.get("azp") or subject),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            subject=subject,
            claims=claims,
        )


def _public_key(material: bytes, key_file: Path) -> tuple[Any, list[str]]:
    """A PEM public key and the one algorithm it verifies: a token signed for another key
    type is refused by the algorithm list, never handed to the wrong key (a 401, not a 500)."""
    try:
        key = serialization.load_pem_public_key(material)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TokenFileError(f"JWT key file {key_file}: not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, ["ES256"]
    raise TokenFileError(f"JWT key file {key_file}: an RSA or P-256 public key is needed")


def identity(token: AccessToken) -> tuple[str, str]:
    """(issuer, subject) of a verified token: the user, as threadline keys it."""
    claims = token.claims or {}
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not token.subject:
        raise ValueError("a verified token without issuer or subject")
    return issuer, token.subject


def current_user() -> tuple[str, str] | None:
    """The user behind the current request; None where there is no auth (stdio, local)."""
    token = get_access_token()
    return None if token is None else identity(token)
