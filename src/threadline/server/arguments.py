"""Arguments a tool refused, said the way the store says its errors: ``field: rule``.

The SDK validates a tool's arguments against its signature before the tool runs, and its
message is pydantic's (several lines, the input echoed back, a link). A model acts better on
one sentence that names the field and the rule; only the first error is told.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from threadline.tools.schemas import WireError


def field_name(loc: tuple[int | str, ...]) -> str:
    """``("messages", 0, "content")`` as ``messages[0].content``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        elif part.endswith("]") or part in ("str", "list[...]", "dict[...]", "none"):
            continue  # a union's member name, not a field
        else:
            out += f".{part}"
    return out or "arguments"


def _rule(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    rules = {
        "missing": "is required",
        "extra_forbidden": "is not an argument of this tool",
        "string_type": "must be a string",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "list_type": "must be a list",
        "dict_type": "must be a JSON object",
        "model_type": "must be a JSON object",
        "model_attributes_type": "must be a JSON object",
        "none_required": "must be null",
    }
    if kind in rules:
        return rules[kind]
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters"
    if kind in ("too_long", "too_short"):
        count = ctx.get("max_length" if kind == "too_long" else "min_length")
        bound = "most" if kind == "too_long" else "least"
        return f"must hold at {bound} {count} item{'' if count == 1 else 's'}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '').replace(chr(39), '')}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    message = str(error.get("msg", "is not valid"))
    return message.replace("Input should be", "must be").replace("Value error, ", "")


def explain(exc: ValidationError) -> str:
    """The first error, as ``field: rule``."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return "arguments: are not valid"
    first = errors[0]
    cause: Any = (first.get("ctx") or {}).get("error")
    if isinstance(cause, WireError):
        # Raised below the field pydantic names: the message names the whole path.
        return str(cause)
    name = field_name(first["loc"])
    if name.endswith("content") and first["type"] != "missing":
        # A union: pydantic tells each member's rule; say the rule once.
        return f"{name}: must be a string or a list of parts"
    return f"{name}: {_rule(first)}"
