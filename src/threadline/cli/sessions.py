"""``threadline sessions …`` and ``threadline prune``: look after the threads of a store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import anyio

from threadline import config
from threadline.cli.common import (
    Commands,
    UsageError,
    add_common,
    confirm,
    count,
    on_store,
    print_json,
    table,
    when,
)
from threadline.cli.render import session_markdown
from threadline.storage import SessionSummary, Store


def add_parsers(commands: Commands) -> None:
    sessions = commands.add_parser(
        "sessions",
        help="list, show, rename, delete and fork sessions",
        description="Look after the threads of a store without an MCP host.",
    )
    verbs = sessions.add_subparsers(dest="verb", required=True, metavar="VERB")

    listing = verbs.add_parser("list", help="the sessions, most recently active first")
    add_common(listing, store=True, json=True)
    listing.add_argument("--status", choices=["active", "ended"], help="only these sessions")
    listing.add_argument("--title", help="only titles containing this text (any case)")
    listing.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only sessions whose metadata KEY holds VALUE (JSON: 3, true, or a string); "
        "repeatable",
    )
    for moment in ("created", "updated"):
        for side, rule in (("after", "at or after"), ("before", "before")):
            listing.add_argument(
                f"--{moment}-{side}", metavar="TIME", help=f"only sessions {moment} {rule} TIME "
                "(ISO 8601: 2026-03-01 or 2026-03-01T14:30Z)"
            )  # fmt: skip
    listing.add_argument(
        "--limit", type=int, default=50, help="at most this many (default 50; 0 for all)"
    )
    listing.set_defaults(run=on_store(_list))

    show = verbs.add_parser(
        "show",
        help="a session's transcript (Markdown), branches and compactions marked",
        description="Print the path to the head (or --leaf) with every stored message: "
        "compacted ranges are marked with their summary, and messages where other branches "
        "start say where those branches end.",
    )
    add_common(show, store=True, json=True)
    show.add_argument("session_id")
    show.add_argument("--leaf", help="show the branch ending at this message instead of the head")
    show.add_argument("--last", type=int, help="only the last N messages of the path")
    show.add_argument("--all", action="store_true", help="also print every other branch")
    show.set_defaults(run=on_store(_show))

    rename = verbs.add_parser("rename", help="change a session's title")
    add_common(rename, store=True, json=True)
    rename.add_argument("session_id")
    rename.add_argument("title", help='the new title ("" removes it)')
    rename.set_defaults(run=on_store(_rename))

    delete = verbs.add_parser(
        "delete", help="delete sessions with everything in them (asks first unless --yes)"
    )
    add_common(delete, store=True, json=True)
    delete.add_argument("session_ids", nargs="+", metavar="session_id")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(run=on_store(_delete))

    fork = verbs.add_parser("fork", help="copy a session's path into a new, independent session")
    add_common(fork, store=True, json=True)
    fork.add_argument("session_id")
    fork.add_argument("--at", metavar="MESSAGE_ID", help="fork at this message (default: head)")
    fork.add_argument("--title", help='default: the source title + " (fork)"')
    fork.set_defaults(run=on_store(_fork))


def add_prune_parser(commands: Commands) -> None:
    prune = commands.add_parser(
        "prune",
        help="delete whole sessions that ended or went quiet long ago, and shrink the file",
        description="Delete whole sessions (never part of one): ended ones last active before "
        "a date, or any (--status narrows it) inactive for a while; then give the space back "
        "(VACUUM: other writers wait while it runs, readers go on). --dry-run lists them.",
    )
    add_common(prune, store=True, json=True)
    which = prune.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--ended-before", metavar="TIME", help="ended sessions last active before TIME"
    )
    which.add_argument(
        "--inactive-for", metavar="DURATION", help="sessions not active for DURATION (30d, 12h, 2w)"
    )
    prune.add_argument("--status", choices=["active", "ended"], help="only these sessions")
    prune.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    prune.add_argument("--yes", action="store_true", help="delete without asking")
    prune.set_defaults(run=on_store(_prune))


def _ago(duration: str) -> str:
    """The time ``duration`` (``30d``, ``12h``, ``2w``, ``90m``) before now, ISO 8601."""
    span = config.duration(duration)
    if span is None:
        raise UsageError(f"--inactive-for {duration!r}: give a number and m, h, d or w (30d)")
    return (datetime.now(UTC) - span).isoformat()


async def _prune(args: argparse.Namespace, store: Store) -> None:
    options: dict[str, Any] = {"status": args.status}
    if args.ended_before is not None:
        options["ended_before"] = args.ended_before
    else:
        options["inactive_before"] = _ago(args.inactive_for)
    plan = await store.prune(**options, dry_run=True)
    if not args.dry_run and plan.sessions and not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"would delete {count(len(plan.sessions), 'session')}; pass --yes to delete "
                "them, or --dry-run to list them"
            )
        answer = await anyio.to_thread.run_sync(
            input,
            f"delete {count(len(plan.sessions), 'session')} "
            f"({count(plan.messages, 'message')})? [y/N] ",
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return
    done = plan if args.dry_run or not plan.sessions else await store.prune(**options)
    if args.json:
        print_json(done)
        return
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {count(len(done.sessions), 'session')} ({count(done.messages, 'message')})")
    for sid in done.sessions[:20]:
        print(f"  {sid}")
    if len(done.sessions) > 20:
        print(f"  ... and {len(done.sessions) - 20} more")
    if not args.dry_run and done.sessions:
        before, after = done.bytes_before / 2**20, done.bytes_after / 2**20
        print(f"the store went from {before:.1f} MiB to {after:.1f} MiB")


def _metadata_filter(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` options as a metadata filter: a VALUE that reads as JSON (a number,
    true, false, a quoted string) is that, anything else the string itself."""
    wanted: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta {pair!r}: give KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        wanted[key] = value
    return wanted


async def _list(args: argparse.Namespace, store: Store) -> None:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    wanted = args.limit or None
    filters = {
        "status": args.status,
        "title": args.title,
        "metadata": _metadata_filter(args.meta) if args.meta else None,
        "created_after": args.created_after,
        "created_before": args.created_before,
        "updated_after": args.updated_after,
        "updated_before": args.updated_before,
    }
    found: list[SessionSummary] = []
    cursor = None
    while wanted is None or len(found) < wanted:
        page = await store.list_sessions(limit=200, cursor=cursor, **filters)
        found += page.sessions
        cursor = page.next_cursor
        if cursor is None:
            break
    found = found[:wanted]
    if args.json:
        print_json(found)
        return
    if not found:
        filtered = any(value is not None for value in filters.values())
        print("no sessions" + (" match" if filtered else ""), file=sys.stderr)
        return
    rows = [
        [
            s.session_id,
            s.title or "",
            s.status,
            count(s.message_count),
            count(s.token_estimate),
            when(s.updated_at),
        ]
        for s in found
    ]
    print(
        table(
            ["ID", "TITLE", "STATUS", "MESSAGES", "TOKENS", "LAST ACTIVITY"],
            rows,
            squeeze=1,
            right=(3, 4),
        )
    )


async def _show(args: argparse.Namespace, store: Store) -> None:
    record = await store.export_session(args.session_id)
    if args.leaf is not None and args.leaf not in {m.id for m in record.messages}:
        raise UsageError(f"--leaf: no message {args.leaf!r} in session {args.session_id!r}")
    if args.last is not None and args.last < 1:
        raise UsageError("--last must be 1 or more")
    if args.json:
        print_json(record)
        return
    print(session_markdown(record, args.leaf, last=args.last, all_branches=args.all), end="")


async def _rename(args: argparse.Namespace, store: Store) -> None:
    info = await store.rename_session(args.session_id, args.title or None)
    if args.json:
        print_json(info)
    else:
        print(
            f"{info.session_id}: {info.title!r}" if info.title else f"{info.session_id}: untitled"
        )


async def _delete(args: argparse.Namespace, store: Store) -> None:
    infos = [await store.get_session(sid) for sid in dict.fromkeys(args.session_ids)]
    if not args.yes:
        described = "; ".join(
            f"{i.session_id} ({i.title!r}, {count(i.message_count, 'message')})" for i in infos
        )
        if not confirm(f"Delete {described}? This cannot be undone."):
            raise UsageError("nothing deleted (confirm on a terminal, or pass --yes)")
    results = [await store.delete_session(i.session_id) for i in infos]
    if args.json:
        print_json(results)
        return
    for r in results:
        print(f"deleted {r.session_id} ({count(r.messages_deleted, 'message')})")


async def _fork(args: argparse.Namespace, store: Store) -> None:
    info = await store.fork_session(args.session_id, args.at, args.title)
    if args.json:
        print_json(info)
    else:
        print(
            f"{info.session_id}: {info.title or 'untitled'} "
            f"({count(info.message_count, 'message')}, forked from {args.session_id})"
        )
