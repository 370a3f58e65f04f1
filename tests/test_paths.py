"""Each HTTP user's store file: one hashed name inside the users directory for every
identity, distinct for distinct identities, whatever characters they hold (property tests)."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import HEX_DB
from threadline.paths import STATIC_ISSUER, user_file

DATA_DIR = Path("/srv/threadline-data")
ROOT = DATA_DIR / "users"
FRAGMENTS = [
    "../", "..\\", "/", "\\", "..", ".", "\x00", "%2e%2e", "%2e%2e%2f", "%00", "~", "$HOME",
    "CON", "con", "con.txt", "NUL", "COM1", "LPT1", "COM¹", "AUX.db", "a:b", "x::$DATA",
    "alice", "Alice", "ALICE", "alice.", "alice ", " alice", "alice\t",
    "Straße", "STRASSE", "strasse", "ß", "ss", "K", "\u212a", "k", "ı", "i", "I", "İ", "ſ",
    "\u202e", "\u200b", "\u200d", "\ufeff", "👩\u200d💻", "👩", "💻",
    "café", "cafe\u0301", "Å", "A\u030a", "\u212b", "ﬁ", "ｆｕｌｌ",
    "\ud800", "\udfff", "\ud83d\ude00", "😀", "\ud83d",
    "x" * 300, "é" * 150, ":" * 10, "<>|?*\"",
]  # fmt: skip
SUBJECTS = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=5).map("".join),
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())),
    st.text(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=3)
    .map("".join)
    .map(lambda s: unicodedata.normalize("NFD", s)),
)
# Issuers are configured by the operator (a JWT's iss must equal --jwt-issuer), never chosen by a
# caller, and cannot hold NUL (they come from argv or TOML); subjects are the attacker's.
ISSUER = "https://idp.example"  # as the JWT tests have it
ISSUERS = st.one_of(
    st.sampled_from([STATIC_ISSUER, ISSUER, ISSUER + "/", ISSUER.upper(), "https://idp.example/b"]),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1),
)
SEEN: dict[Path, tuple[str, str]] = {}


def assert_safe(path: Path) -> None:
    assert path.parent == ROOT
    assert HEX_DB.match(path.name), path.name
    assert os.path.normpath(path) == str(path)
    assert os.path.commonpath([os.path.abspath(path), str(ROOT)]) == str(ROOT)


@settings(max_examples=200, deadline=None)
@given(issuer=ISSUERS, subject=SUBJECTS, other_issuer=ISSUERS)
def test_every_identity_maps_to_one_hashed_file_inside_the_users_directory(
    issuer: str, subject: str, other_issuer: str
) -> None:
    path = user_file(DATA_DIR, (issuer, subject))
    assert_safe(path)
    assert user_file(DATA_DIR, (issuer, subject)) == path
    assert SEEN.setdefault(path, (issuer, subject)) == (issuer, subject)
    if other_issuer != issuer:
        assert user_file(DATA_DIR, (other_issuer, subject)) != path


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ISSUERS, SUBJECTS), min_size=2, max_size=25, unique=True))
def test_distinct_identities_get_distinct_files(identities: list[tuple[str, str]]) -> None:
    paths = [user_file(DATA_DIR, identity) for identity in identities]
    for path in paths:
        assert_safe(path)
    assert len(set(paths)) == len(identities)


def test_lookalike_subjects_get_distinct_files() -> None:
    groups = [
        ["café", "cafe\u0301"],
        ["Å", "A\u030a", "\u212b"],
        ["alice", "Alice", "ALICE", "alice.", "alice ", "alice\u200b", "\u202ealice", "ａｌｉｃｅ"],
        ["k", "K", "\u212a"],
        ["i", "I", "ı", "İ"],
        ["straße", "STRASSE", "strasse", "Strasse"],
        ["con", "CON", "con.txt", "CON.", "con "],
        ["../alice", "..\\alice", "alice/..", "%2e%2e/alice", "alice\x00"],
        ["😀", "\ud83d\ude00", "\ud83d", "\ude00"],
    ]
    for group in groups:
        paths = {user_file(DATA_DIR, (ISSUER, subject)) for subject in group}
        assert len(paths) == len(group), group
        for path in paths:
            assert_safe(path)
    same = {user_file(DATA_DIR, (issuer, "alice")) for issuer in (STATIC_ISSUER, ISSUER, "x")}
    assert len(same) == 3


def test_identities_that_differ_only_in_where_a_nul_falls_get_distinct_files() -> None:
    root = Path("/srv/threadline-data")
    assert user_file(root, ("a\x00b", "c")) != user_file(root, ("a", "b\x00c"))
    assert user_file(root, ("ab", "c")) != user_file(root, ("a", "bc"))
