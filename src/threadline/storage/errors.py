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
