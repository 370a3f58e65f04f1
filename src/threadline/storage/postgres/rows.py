"""Statements scoped to one user by construction, and the row lookups every operation starts
from (a session's row, a message's key and id).

Every statement goes through ``Tx``, which binds the transaction's user as ``$1``: queries are
written ``WHERE user_id = $1 AND ...``, so each one names its user (and is routable by it, the
distribution key of a sharded deployment), and one that forgot to use ``$1`` fails at once
("could not determine data type of parameter $1") instead of reading other users' rows.
Row-level security, keyed on the transaction's ``threadline.user`` setting (``engine``), is
the second wall behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from threadline.storage import validate
from threadline.storage.errors import MessageNotFound, SessionNotFound

if TYPE_CHECKING:
    from asyncpg import Record

    from threadline.storage.postgres.schema import Connection


class Tx:
    """One user's transaction: the connection's queries with the user bound as ``$1``."""

    __slots__ = ("conn", "user")

    def __init__(self, conn: Connection, user: str) -> None:
        self.conn = conn
        self.user = user

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.conn.execute(sql, self.user, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return await self.conn.fetch(sql, self.user, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        return await self.conn.fetchrow(sql, self.user, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, self.user, *args)


async def session_row(tx: Tx, session_id: str, columns: str, *, lock: bool = False) -> Record:
    """The session's row (``columns`` of ``sessions s``), or ``SessionNotFound``; ``lock``
    holds it until the transaction ends, so writers of one session take turns."""
    validate.session_id(session_id)
    row = await tx.fetchrow(
        f"SELECT {columns} FROM sessions s WHERE s.user_id = $1 AND s.id = $2"
        + (" FOR UPDATE OF s" if lock else ""),
        session_id,
    )
    if row is None:
        raise SessionNotFound(session_id)
    return row


async def message_pk(tx: Tx, session_id: str, message_id: str, field: str) -> int:
    validate.message_id(message_id, field)
    pk = await tx.fetchval(
        "SELECT pk FROM messages WHERE user_id = $1 AND session_id = $2 AND id = $3",
        session_id,
        message_id,
    )
    if pk is None:
        raise MessageNotFound(session_id, message_id, field)
    return int(pk)


async def message_id(tx: Tx, pk: int) -> str:
    value: str = await tx.fetchval("SELECT id FROM messages WHERE user_id = $1 AND pk = $2", pk)
    return value
