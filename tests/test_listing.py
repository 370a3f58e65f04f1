"""Finding sessions (issue 14): list_sessions filters in the library, the tool and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.helpers import BACKENDS, call
from tests.test_tools import _server
from threadline import Store
from threadline.cli import main
from threadline.paths import LOCAL_STORE
from threadline.storage import InvalidInput

SESSIONS: list[tuple[str, str | None, dict[str, Any] | None]] = [
    ("kyoto", "Trip to Kyoto", {"tag": "travel", "n": 3, "ok": True}),
    ("osaka", "Osaka food", {"tag": "travel", "n": 4, "ok": False}),
    ("tax", "Taxes 2026", {"tag": "admin", "n": "3"}),
    ("bare", None, None),
]


async def _seed(store: Store) -> None:
    for sid, title, metadata in SESSIONS:
        await store.create_session(session_id=sid, title=title, metadata=metadata)


async def _ids(store: Store, **filters: Any) -> list[str]:
    found, cursor = [], None
    while True:  # one per page: filters hold across pages
        page = await store.list_sessions(limit=1, cursor=cursor, **filters)
        found += [s.session_id for s in page.sessions]
        if (cursor := page.next_cursor) is None:
            return sorted(found)


@BACKENDS
async def test_filters_select_by_title_metadata_status_and_time(store: Store) -> None:
    await _seed(store)
    later = (await store.get_session("bare")).updated_at

    assert await _ids(store, title="KYO") == ["kyoto"]
    assert await _ids(store, title="o") == ["kyoto", "osaka"]
    assert await _ids(store, metadata={"tag": "travel"}) == ["kyoto", "osaka"]
    assert await _ids(store, metadata={"n": 3}) == ["kyoto"]  # a number, not the string "3"
    assert await _ids(store, metadata={"n": "3"}) == ["tax"]
    assert await _ids(store, metadata={"ok": True}) == ["kyoto"]
    assert await _ids(store, metadata={"ok": False, "tag": "travel"}) == ["osaka"]
    assert await _ids(store, metadata={"tag": "travel"}, title="food") == ["osaka"]
    assert await _ids(store, status="ended") == []
    assert await _ids(store, updated_after="2999-01-01") == []
    assert await _ids(store, created_before="2999-01-01") == ["bare", "kyoto", "osaka", "tax"]
    assert await _ids(store, updated_after=later) == ["bare"]
    assert await _ids(store, created_before=later) == ["kyoto", "osaka", "tax"]


@pytest.mark.parametrize(
    ("filters", "error"),
    [
        ({"metadata": {"x": [1]}}, "metadata.x: must be a string, a number or a boolean"),
        ({"metadata": {"x": float("nan")}}, "metadata.x: must be a string, a number"),
        ({"metadata": {'a"b': 1}}, 'metadata.a"b: a key must be'),
        ({"metadata": [1]}, "metadata: must be an object"),
        ({"created_after": "yesterday"}, "created_after: must be an ISO 8601"),
        ({"updated_before": 5}, "updated_before: must be an ISO 8601"),
        ({"title": 5}, "title: must be a string"),
        ({"status": "gone"}, "status: must be 'active' or 'ended'"),
    ],
)
@BACKENDS
async def test_a_bad_filter_is_refused_naming_the_field(
    store: Store, filters: dict[str, Any], error: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await store.list_sessions(**filters)
    assert str(refused.value).startswith(error), str(refused.value)


async def test_the_tool_filters_too(tmp_path: Path) -> None:
    async with Client(_server(tmp_path)) as client:
        for sid, title, metadata in SESSIONS:
            await call(client, "create_session", session_id=sid, title=title, metadata=metadata)
        found = await call(client, "list_sessions", metadata='{"tag": "travel"}', title="kyoto")
        assert [s["session_id"] for s in found["sessions"]] == ["kyoto"]
        none = await call(client, "list_sessions", updated_after="2999-01-01")
        assert none["sessions"] == []


def test_the_cli_filters_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def seed() -> None:
        async with Store.open(tmp_path / LOCAL_STORE) as store:
            await _seed(store)

    anyio.run(seed)
    where = ["--data-dir", str(tmp_path), "--json"]
    assert main(["sessions", "list", "--meta", "tag=travel", "--meta", "n=3", *where]) == 0
    assert [s["session_id"] for s in json.loads(capsys.readouterr().out)] == ["kyoto"]
    assert main(["sessions", "list", "--meta", 'n="3"', *where]) == 0
    assert [s["session_id"] for s in json.loads(capsys.readouterr().out)] == ["tax"]
    assert main(["sessions", "list", "--created-after", "2999-01-01", *where]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["sessions", "list", "--meta", "novalue", *where]) == 2
    assert "--meta 'novalue': give KEY=VALUE" in capsys.readouterr().err
