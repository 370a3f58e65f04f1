"""Deterministic word salad: varied, seeded message text and search queries.

The vocabulary is a few hundred common English words followed by a few thousand pronounceable
made-up words, all drawn with Zipf-like weights (rank ** -1.05), so a message reads like text:
frequent glue words, a long tail of rare ones. Everything comes from ``random.Random(seed)``,
so one seed gives the same messages and queries in every run and on every machine.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

_COMMON = """
the of and to a in is that for it as was with be by on not he this are or his from at which
but have an they you were her she there one all we their has been if more when will would who
so no out up into do any your what some can time only other new them about could than my
first then like its also two after these made over did most such where after many through
back years much before good people just because way very well should make work still even
here between life being world under same last might another great while those both now long
never old each around right thought small know house found again part take place three little
old used number point without find give year day part system against three during since state
session thread message agent model tool context memory store search index query commit branch
fork summary compaction history token prompt server client request reply error retry latency
cache write read table column value record batch queue worker thread lock page file disk
"""
COMMON = _COMMON.split()

_SYLLABLES = """
ka ri to mo na se lu vi pe do ha ne zu ti ra ko mi sa fe lo bu gi ya wo je ru ta ve
an el in or um ar en is ol ur ax ex on ir ek ul as et im op
"""
SYLLABLES = _SYLLABLES.split()

MIN_CHARS = 300
MAX_CHARS = 800


def _made_up_words(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


class WordSalad:
    """Seeded generator of message text (300-800 characters) and queries."""

    def __init__(self, seed: int = 1, made_up: int = 6000) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        common = list(dict.fromkeys(COMMON))
        self.vocabulary: list[str] = common + _made_up_words(self._rng, made_up, set(common))
        weights = [1.0 / (rank**1.05) for rank in range(1, len(self.vocabulary) + 1)]
        self._cum = list(itertools.accumulate(weights))

    def message(self, rng: random.Random | None = None) -> str:
        """One message: sentences of 6-22 words, 300-800 characters, cut at a word boundary."""
        rng = rng or self._rng
        target = rng.randint(MIN_CHARS, MAX_CHARS)
        words = rng.choices(self.vocabulary, cum_weights=self._cum, k=target // 4)
        parts: list[str] = []
        size = 0
        sentence = 0
        for word in words:
            if sentence == 0:
                word = word.capitalize()
                sentence = rng.randint(6, 22)
            sentence -= 1
            if sentence == 0:
                word += "."
            elif rng.random() < 0.04:
                word += ","
            elif rng.random() < 0.02:
                word = f"{word} {rng.randint(2, 9999)}"
            if size + len(word) + 1 > target:
                break
            parts.append(word)
            size += len(word) + 1
        text = " ".join(parts)
        while len(text) < MIN_CHARS + 2:  # short words: top up with more of the tail
            text += " " + rng.choice(self.vocabulary)
        text = text[: MAX_CHARS - 1].rstrip(" ,")
        return text if text.endswith(".") else text + "."

    def messages(self, count: int, seed: int) -> Iterator[str]:
        """``count`` messages from their own stream: the same seed gives the same messages."""
        rng = random.Random(f"{self.seed}/{seed}")
        for _ in range(count):
            yield self.message(rng)

    def queries(self, count: int, seed: int, min_chars: int = 3) -> list[str]:
        """``count`` queries of 1-3 distinct words, drawn uniformly from the vocabulary.

        Uniform over words (not weighted by frequency) mixes common words, whose trigram
        postings are long, with rare ones that are cheap; words shorter than ``min_chars``
        are left out (trigram search serves terms of three characters or more).
        """
        rng = random.Random(f"{self.seed}/queries/{seed}")
        pool = [w for w in self.vocabulary if len(w) >= min_chars]
        return [" ".join(rng.sample(pool, rng.randint(1, 3))) for _ in range(count)]
