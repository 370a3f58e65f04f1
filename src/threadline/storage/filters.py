"""The rules every backend keeps for sessions: which sessions a listing or a prune names
(``Filters``, each condition checked and named), a title, and one turn's usage."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.errors import InvalidInput


def check_title(title: object, config: Config) -> str | None:
    if title is None:
        return None
    return validate.text(title, "title", config.limits.max_title_chars)


def check_usage(
    input_tokens: int, output_tokens: int, cost: float | None, model: str | None
) -> None:
    """The rules of one turn's usage, on every backend."""
    validate.limit(input_tokens, "input_tokens", 0, 10**12)
    validate.limit(output_tokens, "output_tokens", 0, 10**12)
    if cost is not None and (
        isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost <= 1e9
    ):
        raise InvalidInput("cost", "must be a number from 0 to 1e9")
    if model is not None:
        validate.text(model, "model", 200, allow_empty=False)


@dataclass(frozen=True)
class Filters:
    """Which sessions ``list_sessions`` lists: every condition given must hold."""

    status: str | None = None
    title: str | None = None  # a part of the title, any case
    metadata: dict[str, Any] | None = None  # each key holds this string, number or boolean
    created_after: str | None = None
    created_before: str | None = None
    updated_after: str | None = None
    updated_before: str | None = None

    def checked(self) -> list[tuple[str, Any, Any]]:
        """The conditions given, each checked (a bad value is refused, naming the field), as
        ``(kind, subject, value)``: ``("status", None, "ended")``, ``("title", None, part)``
        with the part in lower case, ``("metadata", key, value)``, or ``(">=" or "<",
        column, stamp)``. Each backend writes them in its own SQL."""
        out: list[tuple[str, Any, Any]] = []
        if self.status not in (None, "active", "ended"):
            raise InvalidInput("status", "must be 'active' or 'ended'")
        if self.status is not None:
            out.append(("status", None, self.status))
        if self.title is not None:
            out.append(("title", None, validate.text(self.title, "title", 200).lower()))
        if self.metadata is not None:
            if not isinstance(self.metadata, dict):
                raise InvalidInput("metadata", "must be an object of keys and values to match")
            for key, value in self.metadata.items():
                where = f"metadata.{key}"
                if not isinstance(key, str) or not key or '"' in key or len(key) > 200:
                    raise InvalidInput(where, "a key must be 1-200 characters without '\"'")
                if type(value) not in JSON_TYPES or (
                    isinstance(value, float) and not math.isfinite(value)
                ):
                    raise InvalidInput(where, "must be a string, a number or a boolean")
                out.append(("metadata", key, value))
        for field, column, op in (
            ("created_after", "created_at", ">="),
            ("created_before", "created_at", "<"),
            ("updated_after", "updated_at", ">="),
            ("updated_before", "updated_at", "<"),
        ):
            stamp = validate.moment(getattr(self, field), field)
            if stamp is not None:
                out.append((op, column, stamp))
        return out


# What json_type says of a filter value, by its Python type.
JSON_TYPES: dict[type, Callable[[Any], str]] = {
    str: lambda _: "text",
    int: lambda _: "integer",
    float: lambda _: "real",
    bool: lambda v: "true" if v else "false",
}
