"""The ``threadline`` command: serve, inspect, search, export and import threads, doctor, setup.

Results go to stdout (``--json`` for scripts); logs, prompts and progress go to stderr. An
error is one line on stderr and a non-zero exit: 1 when the store or the data refused, 2 when
the command line asks for something impossible.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from threadline.cli import context, doctor, hosts, search, serve, sessions, transfer
from threadline.cli.common import Env, UsageError, VisibleOutput, visible
from threadline.config import ConfigError
from threadline.storage import ThreadlineError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes are one line too, naming the command and pointing at --help."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        self.exit(2, f"threadline: {where}{message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    root = _Parser(
        prog="threadline",
        description="Persistent, parallel, isolated conversation threads over SQLite: an MCP "
        "server, and the tools to look after its threads.",
        epilog="`threadline COMMAND --help` describes each command.",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parsers(commands)
    sessions.add_parsers(commands)
    search.add_parsers(commands)
    sessions.add_prune_parser(commands)
    context.add_parsers(commands)
    transfer.add_parsers(commands)
    doctor.add_parsers(commands)
    hosts.add_parsers(commands)
    serve.add_token_parsers(commands)
    serve.add_demo_parser(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=max(logging.DEBUG, logging.WARNING - 10 * args.verbose),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    terminal = sys.stdout
    if args.command != "serve" and terminal.isatty():  # (serve's stdout is the protocol)
        sys.stdout = VisibleOutput(terminal)
    try:
        # doctor reports a broken config itself instead of stopping at it
        code = args.run(args, None if args.command == "doctor" else Env.load(args))
    except (ThreadlineError, ConfigError, UsageError) as exc:
        print(f"threadline: {visible(str(exc))}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except BaseExceptionGroup as group:  # raised inside task groups (e.g. the server lifespan)
        ours = group.subgroup(lambda e: isinstance(e, ThreadlineError | ConfigError | UsageError))
        if ours is None:
            raise
        print(f"threadline: {visible(str(_first(ours)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `threadline export | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 0
    finally:
        sys.stdout = terminal
    return int(code or 0)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaf = group.exceptions[0]
    return _first(leaf) if isinstance(leaf, BaseExceptionGroup) else leaf
