"""The store's errors. Each message is a sentence a person or a model can act on.

Four kinds, by base class, which is what a caller maps (to a protocol error, an exit code):
``InvalidInput`` (an argument broke a rule), ``NotFound`` (no such session, message or
block), ``Conflict`` (the state is not what the caller expected: another writer was first, an
id is taken), ``Refused`` (the state does not allow it: a read-only block, an ended session),
and ``StoreError`` (the database cannot do it: busy, full, damaged).
"""

from __future__ import annotations


class ThreadlineError(Exception):
    """Base of every error the store raises on purpose."""


class InvalidInput(ThreadlineError):
    """An argument broke a rule; the message names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(ThreadlineError):
    """What was named does not exist (for this user)."""


class Refused(ThreadlineError):
    """The state of what was named does not allow this; nothing changed."""


class Conflict(ThreadlineError):
    """Not as the caller expected (another writer was first, an id is taken); nothing changed."""


class SessionNotFound(NotFound):
    """No session has this id (for this user)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found")
        self.session_id = session_id


class SessionExists(Conflict):
    """A session with this id already exists."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists; choose another id or omit it")
        self.session_id = session_id


class MessageNotFound(NotFound):
    """No message has this id in the session."""

    def __init__(self, session_id: str, message_id: str, field: str = "message_id") -> None:
        super().__init__(f"{field}: message {message_id!r} not found in session {session_id!r}")
        self.session_id = session_id
        self.message_id = message_id


class HeadMoved(Conflict):
    """The session's head is not the ``expected_head`` the write was guarded by."""

    def __init__(self, session_id: str, expected: str | None, head: str | None) -> None:
        super().__init__(
            f"session {session_id!r} has head {head!r}, not {expected!r} (another writer "
            "changed it): nothing was written; read the history again and retry"
        )
        self.session_id = session_id
        self.head_id = head


class MessageConflict(Conflict):
    """A message id is reused with different content."""


class BlockNotFound(NotFound):
    """No context block has this label."""


class BlockReadOnly(Refused):
    """The context block cannot be written."""


class BlockOverLimit(Refused):
    """The write would take a context block over its token limit."""


class NothingToCompact(Refused):
    """The history is too short for a compaction once the protected messages are kept."""


class SessionEnded(Refused):
    """The session was ended (split) and takes no more messages."""


class StoreError(ThreadlineError):
    """The database cannot do what was asked (busy, full, read-only, damaged)."""


class StoreUnusable(StoreError):
    """The file is not a threadline store this version can open; it was left untouched."""


class ExportUnreadable(InvalidInput):
    """An export file is not one this version can import; the message says where and why."""

    def __init__(self, message: str) -> None:
        ThreadlineError.__init__(self, message)
        self.field = "file"
        self.rule = message


class ImportRefused(Conflict):
    """An import would overwrite: session ids are taken, or user blocks hold other content."""

    def __init__(self, taken: list[str], differing: list[str]) -> None:
        self.taken = taken
        self.differing = differing
        super().__init__(
            f"nothing imported: {self.problems}; pass skip_existing to leave those alone"
        )

    @property
    def problems(self) -> str:
        """What stands in the way, as one clause: ``2 sessions already exist (a, b); ...``."""
        parts = []
        if self.taken:
            shown = ", ".join(self.taken[:5])
            if len(self.taken) > 5:
                shown += f" and {len(self.taken) - 5} more"
            n = len(self.taken)
            parts.append(f"{n:,} session{'' if n == 1 else 's'} already exist ({shown})")
        if self.differing:
            parts.append(f"user blocks {', '.join(self.differing)} hold other content")
        return "; ".join(parts)


class ImportStopped(ThreadlineError):
    """A session of the file could not be imported after others were; those stay imported."""

    def __init__(self, session_id: str, cause: ThreadlineError, imported: int) -> None:
        super().__init__(
            f"session {session_id}: {cause}. {imported} sessions were imported before it; fix "
            "the file and run the import again with skip_existing for the rest"
        )
        self.session_id = session_id
        self.cause = cause
        self.imported = imported
