"""``python -m bench.stdio_server --data-dir DIR``: ``threadline serve`` (stdio) plus ``noop``.

The same server ``threadline serve`` runs over stdio (threadline's ``build_server`` with the
local runtime, the default configuration), with one extra tool, ``noop``, the baseline of
workload 6 on the stdio transport. ``threadline serve`` has no hook for extra tools.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.noop import add_noop
from threadline.config import Config
from threadline.server import LocalRuntime, build_server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stdio_server")
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # as ``threadline serve``
    runtime = LocalRuntime(args.data_dir, Config())
    add_noop(build_server(runtime, lifespan=runtime)).run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
