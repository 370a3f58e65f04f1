"""``threadline context show`` and ``set``: the context blocks and the frozen prompt."""

from __future__ import annotations

import argparse
import sys

from threadline.cli.common import Commands, UsageError, add_common, on_store, print_json, when
from threadline.storage import Store


def add_parsers(commands: Commands) -> None:
    ctx = commands.add_parser("context", help="show and set context blocks (working memory)")
    ctx_verbs = ctx.add_subparsers(dest="verb", required=True, metavar="VERB")
    show_ctx = ctx_verbs.add_parser(
        "show",
        help="the context blocks: the user's, or with --session also the session's",
        description="Without --session: the user-scoped blocks every session shares. With "
        "--session: all of that session's blocks and its frozen system prompt.",
    )
    add_common(show_ctx, store=True, json=True)
    show_ctx.add_argument("--session", metavar="SESSION_ID")
    show_ctx.set_defaults(run=on_store(_context_show))
    set_ctx = ctx_verbs.add_parser(
        "set",
        help="replace (or --append to) a block, from an argument or stdin",
        description="Sets LABEL to TEXT, or to standard input when TEXT is omitted or '-'. "
        "Session-scoped blocks need --session.",
    )
    add_common(set_ctx, store=True, json=True)
    set_ctx.add_argument("label")
    set_ctx.add_argument("text", nargs="?", default="-")
    set_ctx.add_argument("--session", metavar="SESSION_ID")
    set_ctx.add_argument("--append", action="store_true", help="append instead of replacing")
    set_ctx.set_defaults(run=on_store(_context_set))


async def _context_show(args: argparse.Namespace, store: Store) -> None:
    if args.session is None:
        blocks = await store.get_user_context()
        if args.json:
            print_json(blocks)
            return
        prompt = None
    else:
        view = await store.get_context(args.session)
        if args.json:
            print_json(view)
            return
        blocks, prompt = view.blocks, view
    sections = []
    for b in blocks:
        flags = ", read-only" if b.readonly else ""
        sections.append(
            f"## {b.label} ({b.scope}{flags}) · {b.tokens}/{b.max_tokens} tokens\n"
            f"{b.description}\n\n{b.content or '*(empty)*'}"
        )
    if prompt is not None:
        stale = " · stale: the blocks changed since (get_context refresh renders it again)"
        sections.append(
            f"## frozen system prompt · rendered {when(prompt.rendered_at)}"
            f"{stale if prompt.stale else ''}\n\n{prompt.system_prompt}"
        )
    print("\n\n".join(sections))


async def _context_set(args: argparse.Namespace, store: Store) -> None:
    spec = store.config.block(args.label)
    if spec is not None and spec.scope == "session" and args.session is None:
        raise UsageError(f"block {args.label!r} belongs to a session: name it with --session")
    text = sys.stdin.read() if args.text == "-" else args.text
    usage = await store.update_context(
        args.session, args.label, text, mode="append" if args.append else "replace"
    )
    if args.json:
        print_json(usage)
    else:
        print(usage.usage)
