"""The server's own retention: the ``[retention]`` rules of the config, run on every store it
serves at start and then every ``every_hours``, the way ``threadline prune`` runs them once.

A pass that fails on one store (a locked or damaged file) is logged and the others go on; the
server keeps serving either way. Writers wait while a pass that deleted something vacuums.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import anyio

from threadline.config import Retention, duration
from threadline.storage import Store

log = logging.getLogger(__name__)

Lenders = Callable[[], Iterable[AbstractAsyncContextManager[Store]]]


def rules(policy: Retention, now: datetime | None = None) -> list[dict[str, Any]]:
    """The ``Store.prune`` arguments of each rule the policy sets."""
    now = now or datetime.now(UTC)
    found: list[dict[str, Any]] = []
    if policy.ended_for is not None:
        span = duration(policy.ended_for)
        assert span is not None  # the config checked it
        found.append({"ended_before": (now - span).isoformat()})
    if policy.inactive_for is not None:
        span = duration(policy.inactive_for)
        assert span is not None
        found.append({"inactive_before": (now - span).isoformat(), "status": policy.status})
    return found


async def prune_once(policy: Retention, lend: AbstractAsyncContextManager[Store]) -> int:
    """Apply the policy to one store; the number of sessions deleted."""
    deleted = 0
    async with lend as store:
        for options in rules(policy):
            done = await store.prune(**options)
            deleted += len(done.sessions)
            if done.sessions:
                log.info(
                    "retention: deleted %d sessions (%d messages); %.1f -> %.1f MiB",
                    len(done.sessions),
                    done.messages,
                    done.bytes_before / 2**20,
                    done.bytes_after / 2**20,
                )
    return deleted


async def keep(policy: Retention, stores: Lenders) -> None:
    """Run the policy over ``stores()`` now and every ``policy.every_hours``, until cancelled."""
    while True:
        for lend in stores():
            try:
                await prune_once(policy, lend)
            except Exception as exc:  # one store's trouble must not stop the server or the pass
                log.error("retention: a store could not be pruned: %s", exc)
        await anyio.sleep(policy.every_hours * 3600)
