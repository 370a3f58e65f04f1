"""Where stores live: the data directory, the local store, and each HTTP user's store file.

Kept free of the MCP SDK so the command line can find stores without importing the server.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

LOCAL_STORE = "local.db"
USERS_DIR = "users"
STATIC_ISSUER = "threadline:tokens"  # the issuer of users signed in by a static token


def default_data_dir() -> Path:
    """The platform's per-user data directory for threadline."""
    if sys.platform == "win32":
        base = env_dir("LOCALAPPDATA", Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = env_dir("XDG_DATA_HOME", Path.home() / ".local" / "share")
    return base / "threadline"


def env_dir(name: str, default: Path) -> Path:
    """A base directory from the environment; unset, empty or relative means the default
    (as the XDG spec says), so a stray ``XDG_DATA_HOME=`` never puts data in the cwd."""
    value = os.environ.get(name, "")
    return Path(value) if os.path.isabs(value) else default


def user_key(user: tuple[str, str]) -> str:
    """The key of ``(issuer, subject)``: 32 hex digits, the same for the same identity. It
    names the user's store file, and the user's rows in a PostgreSQL database."""
    # The issuer's length first makes the pair unambiguous (no separator a name could hold);
    # surrogatepass keeps a lone surrogate distinct from the character a pair of them spells.
    issuer, subject = (part.encode("utf-8", "surrogatepass") for part in user)
    return hashlib.sha256(len(issuer).to_bytes(8, "big") + issuer + subject).hexdigest()[:32]


# The key of the local user (stdio, the CLI without --user, HTTP without auth) in a database.
LOCAL_USER = "local"


def user_file(data_dir: Path, user: tuple[str, str]) -> Path:
    """The store file of ``(issuer, subject)``; the same identity always maps to one file."""
    return data_dir / USERS_DIR / f"{user_key(user)}.db"


def redacted(url: str) -> str:
    """A database URL fit for a log or a terminal: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
