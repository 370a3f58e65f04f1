"""The store's errors. Each message is a sentence a person or a model can act on."""

from __future__ import annotations


class ThreadlineError(Exception):
    """Base of every error the store raises on purpose."""


class InvalidInput(ThreadlineError):
    """An argument broke a rule; the message names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class SessionNotFound(ThreadlineError):
    """No session has this id (for this user)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found")
        self.session_id = session_id


class SessionExists(ThreadlineError):
    """A session with this id already exists."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists; choose another id or omit it")
        self.session_id = session_id


class MessageNotFound(ThreadlineError):
    """No message has this id in the session."""

    def __init__(self, session_id: str, message_id: str, field: str = "message_id") -> None:
        super().__init__(f"{field}: message {message_id!r} not found in session {session_id!r}")
        self.session_id = session_id
        self.message_id = message_id


class Conflict(ThreadlineError):
    """The session is not as the caller expected (another writer was first); nothing changed."""


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


class BlockNotFound(ThreadlineError):
    """No context block has this label."""


class BlockReadOnly(ThreadlineError):
    """The context block cannot be written."""


class BlockOverLimit(ThreadlineError):
    """The write would take a context block over its token limit."""


class NothingToCompact(ThreadlineError):
    """The history is too short for a compaction once the protected messages are kept."""


class SessionEnded(ThreadlineError):
    """The session was ended (split) and takes no more messages."""


class StoreError(ThreadlineError):
    """The database cannot do what was asked (busy, full, read-only, damaged)."""


class StoreUnusable(StoreError):
    """The file is not a threadline store this version can open; it was left untouched."""
