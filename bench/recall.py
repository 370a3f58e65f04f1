"""Workload 8: retrieval quality on LoCoMo conversations (``--locomo FILE``).

Each conversation goes into a store of its own through the public API: one threadline
session per conversation session, one message per turn (``"Speaker: text"``, with the
caption of a shared photo), turns alternating user and assistant. Every question that has
evidence (categories 1-4) is sent to ``session_search(limit=10)`` twice: verbatim, and as its
keywords (its words less stop words and punctuation). The baseline, computed in the same run
over the same turn texts, is Okapi BM25 (``rank_bm25.BM25Okapi``: lower-cased word tokens,
every word of the query counting, OR). Figures: recall@1/5/10 (the share of a question's
evidence turns among the first k hits, averaged), nDCG@10 and the questions with no hit.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench.sizes import Results, Sizes, scratch
from bench.stats import Row
from bench.text import WordSalad
from threadline import Store
from threadline.storage.words import STOP_WORDS

_TOKEN = re.compile(r"\w+")
_WORK = "8. recall on LoCoMo"
SKIPPED = "skipped (no --locomo FILE)"
INSTALL_HINT = "skipped (pip install -e '.[bench]' for rank_bm25)"


@dataclass
class Scores:
    """Per-question figures of one ranker on one form of the questions."""

    recall: dict[int, list[float]] = field(default_factory=lambda: {1: [], 5: [], 10: []})
    ndcg: list[float] = field(default_factory=list)
    empty: int = 0

    def add(self, ranked: Sequence[str], evidence: set[str]) -> None:
        for k, values in self.recall.items():
            values.append(len(evidence & set(ranked[:k])) / len(evidence))
        gains = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in evidence)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(evidence), 10)))
        self.ndcg.append(gains / ideal)
        self.empty += not ranked

    def figures(self) -> dict[str, float]:
        out = {f"recall@{k}": sum(v) / len(v) for k, v in self.recall.items()}
        out["nDCG@10"] = sum(self.ndcg) / len(self.ndcg)
        out["no hit"] = float(self.empty)
        return out


def turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("image_caption"):
        text += f" [shares a photo: {turn['image_caption']}]"
    return text


def keywords(question: str) -> str:
    words = [w for w in _TOKEN.findall(question) if w.lower() not in STOP_WORDS]
    return " ".join(words) or question


def message_id(dia_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", dia_id)


def questions(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    return [q for q in conversation["qa"] if q.get("category") != 5 and q.get("evidence")]


async def _load(store: Store, conversation: dict[str, Any]) -> None:
    first = conversation["speaker_a"]
    for session in conversation["sessions"]:
        messages = [
            {
                "id": message_id(turn["dia_id"]),
                "role": "user" if turn["speaker"] == first else "assistant",
                "content": turn_text(turn),
            }
            for turn in session["turns"]
        ]
        title = f"session {session['session']}, {session.get('date_time', '')}".strip(", ")
        await store.create_session(title=title, messages=messages)


def _bm25() -> Callable[[list[list[str]]], Any] | None:
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        return None
    return BM25Okapi  # type: ignore[no-any-return]


async def recall(locomo: Path | None, sizes: Sizes, salad: WordSalad, results: Results) -> None:
    """Workload 8 (``sizes`` and ``salad`` are unused: the data is the file's)."""
    forms: dict[str, Callable[[str], str]] = {
        "verbatim": lambda q: q,
        "keywords": keywords,
    }
    if locomo is None:
        for form in forms:
            results.add(Row(f"{_WORK}, {form}", "recall@10", math.nan, "", "higher", note=SKIPPED))
        print(f"  {SKIPPED}", file=sys.stderr)
        return
    data = json.loads(await anyio.Path(locomo).read_text())
    okapi = _bm25()
    ours = {form: Scores() for form in forms}
    base = {form: Scores() for form in forms}
    count = 0
    for conversation in data:
        turns = [turn for session in conversation["sessions"] for turn in session["turns"]]
        ids = [message_id(turn["dia_id"]) for turn in turns]
        model = okapi([_TOKEN.findall(turn_text(t).lower()) for t in turns]) if okapi else None
        with scratch() as directory:
            async with Store.open(directory / "locomo.db") as store:
                await _load(store, conversation)
                for qa in questions(conversation):
                    count += 1
                    evidence = {message_id(e) for e in qa["evidence"]}
                    for form, make in forms.items():
                        query = make(qa["question"])
                        found = await store.session_search(query, limit=10)
                        ours[form].add([h.message_id for h in found.hits], evidence)
                        if model is not None:
                            tokens = _TOKEN.findall(query.lower())
                            scores = model.get_scores(tokens)
                            order = sorted(range(len(ids)), key=lambda i: -scores[i])
                            hit = [ids[i] for i in order[:10] if scores[i] > 0]
                            base[form].add(hit, evidence)
    results.details["recall"] = {
        "file": locomo.name,
        "conversations": len(data),
        "questions": count,
        "threadline": {form: s.figures() for form, s in ours.items()},
        "okapi_bm25": {form: s.figures() for form, s in base.items()} if okapi else None,
    }
    for form in forms:
        mine = ours[form].figures()
        theirs = base[form].figures() if okapi else {}
        for figure, value in mine.items():
            better = "lower" if figure == "no hit" else "higher"
            unit = "questions" if figure == "no hit" else ""
            if okapi is None:
                row = Row(f"{_WORK}, {form}", figure, value, unit, better, note=INSTALL_HINT)
            else:
                row = Row(
                    f"{_WORK}, {form}",
                    figure,
                    value,
                    unit,
                    better,
                    "Okapi BM25 (rank_bm25), OR",
                    theirs[figure],
                )
            results.add(row)
