"""``threadline search``: ranked or exact search across sessions, matches highlighted."""

from __future__ import annotations

import argparse
import re
import sys

from threadline.cli.common import Commands, UsageError, add_common, on_store, print_json, when
from threadline.storage import Store
from threadline.storage.search import MAX_CONTEXT


def add_parsers(commands: Commands) -> None:
    search = commands.add_parser(
        "search",
        help="search across sessions, best match first",
        description="QUERY is a question or keywords: messages holding more (and rarer) of "
        "its words rank first, and word forms match (painted, painting). A phrase in double "
        "quotes ('\"error 0x80070005\"') finds that exact text, parts of words included "
        "(when no message holds it, its words rank as usual). Matches are highlighted.",
    )
    add_common(search, store=True, json=True)
    search.add_argument("query")
    search.add_argument("--session", metavar="SESSION_ID", help="search one session only")
    search.add_argument("--role", choices=["system", "user", "assistant", "tool"])
    search.add_argument(
        "--after", metavar="TIME", help="only messages from this ISO 8601 time on (2026-03-01)"
    )
    search.add_argument(
        "--before", metavar="TIME", help="only messages older than this ISO 8601 time"
    )
    search.add_argument(
        "--order",
        choices=["relevance", "newest", "oldest"],
        default="relevance",
        help="default: relevance",
    )
    search.add_argument(
        "--context",
        type=int,
        default=0,
        metavar="N",
        help=f"show N messages before and after each hit (0-{MAX_CONTEXT}, default 0)",
    )
    search.add_argument("--limit", type=int, default=10, help="hits to show (1-50, default 10)")
    search.set_defaults(run=on_store(_search))


_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)


async def _search(args: argparse.Namespace, store: Store) -> None:
    if not 1 <= args.limit <= 50:
        raise UsageError("--limit must be from 1 to 50")
    if not 0 <= args.context <= MAX_CONTEXT:
        raise UsageError(f"--context must be from 0 to {MAX_CONTEXT}")
    results = await store.session_search(
        args.query,
        session_id=args.session,
        role=args.role,
        limit=args.limit,
        after=args.after,
        before=args.before,
        order=args.order,
        context=args.context,
    )
    if args.json:
        print_json(results)
        return
    if not results.hits:
        print(f"no messages match {args.query!r}", file=sys.stderr)
        return
    color = sys.stdout.isatty()
    for rank, hit in enumerate(results.hits, 1):
        snippet = " ".join(hit.snippet.split())
        if color:
            snippet = _BOLD.sub("\x1b[1m\\1\x1b[0m", snippet)
        print(
            f"{rank}. {hit.session_title or 'untitled'} ({hit.session_id}) · {hit.role} · "
            f"{when(hit.created_at)} · {hit.message_id}"
        )
        if hit.before or hit.after:
            for near in hit.before:
                print(f"     {near.role}: {near.text}")
            print(f"   > {hit.role}: {snippet}")
            for near in hit.after:
                print(f"     {near.role}: {near.text}")
        else:
            print(f"   {snippet}")
