"""A session as Markdown for people: the whole tree, branches and compactions marked.

One renderer serves ``threadline sessions show`` and ``threadline export --format markdown``.
It reads an export record, so it shows what is stored (every branch, every compacted message)
rather than what the model reads (``get_history`` applies the summaries).
"""

from __future__ import annotations

from collections import defaultdict

from threadline.cli.common import count, when
from threadline.storage import MessageRecord, SessionRecord
from threadline.text import readable


class _Tree:
    def __init__(self, record: SessionRecord) -> None:
        self.record = record
        self.by_id = {m.id: m for m in record.messages}
        self.children: dict[str | None, list[str]] = defaultdict(list)
        for m in record.messages:
            self.children[m.parent_id].append(m.id)
        self.leaves = [m.id for m in record.messages if not self.children.get(m.id)]

    def path(self, leaf: str | None) -> list[MessageRecord]:
        out = []
        while leaf is not None:
            message = self.by_id[leaf]
            out.append(message)
            leaf = message.parent_id
        return out[::-1]

    def leaves_under(self, mid: str) -> list[str]:
        found, stack = [], [mid]
        while stack:
            top = stack.pop()
            kids = self.children.get(top)
            if kids:
                stack.extend(reversed(kids))
            else:
                found.append(top)
        return found


def header(record: SessionRecord, branches: int) -> list[str]:
    lines = [f"# {record.title or record.session_id}", ""]
    facts = [
        f"session `{record.session_id}`",
        record.status,
        f"{count(len(record.messages), 'message')}",
        f"{branches} branch{'es' if branches != 1 else ''}",
    ]
    if record.compactions:
        n = len(record.compactions)
        facts.append(f"{n} compaction{'s' if n != 1 else ''}")
    lines.append(" · ".join(facts))
    lines.append(f"created {when(record.created_at)} · last activity {when(record.updated_at)}")
    if record.lineage:
        at = f" at `{record.forked_from_message_id}`" if record.forked_from_message_id else ""
        word = "forked from" if record.lineage == "fork" else "split from"
        lines.append(f"{word} `{record.parent_session_id}`{at}")
    if record.turns:
        lines.append(
            f"usage: {count(record.turns, 'turn')}, {count(record.input_tokens)} in / "
            f"{count(record.output_tokens)} out tokens, cost {record.cost:g}"
            + (f", last model {record.last_model}" if record.last_model else "")
        )
    return lines


def session_markdown(
    record: SessionRecord,
    leaf: str | None = None,
    *,
    last: int | None = None,
    all_branches: bool = False,
) -> str:
    """The path to ``leaf`` (default: the head), then, with ``all_branches``, every other one."""
    tree = _Tree(record)
    leaf = record.head_id if leaf is None else leaf
    lines = header(record, len(tree.leaves))
    if leaf is None:
        lines += ["", "*(no messages)*"]
        return "\n".join(lines) + "\n"
    path = tree.path(leaf)
    title = "head" if leaf == record.head_id else f"branch ending at `{leaf}`"
    lines += ["", f"## {title}"]
    lines += _messages(tree, path, path, last)
    if all_branches:
        on_path = {m.id for m in path}
        for other in tree.leaves:
            if other in on_path:
                continue
            branch = tree.path(other)
            fork = next((i for i, m in enumerate(branch) if m.id not in on_path), 0)
            start = f"after `{branch[fork - 1].id}`" if fork else "as a new root"
            lines += ["", f"## branch ending at `{other}` ({start})"]
            lines += _messages(tree, branch, branch[fork:], None)
            on_path.update(m.id for m in branch)
    return "\n".join(lines) + "\n"


def _messages(
    tree: _Tree, path: list[MessageRecord], shown: list[MessageRecord], last: int | None
) -> list[str]:
    """``shown`` (a tail of ``path``) with compaction and branch marks."""
    index = {m.id: i for i, m in enumerate(path)}
    spans = [
        (index[c.first_id], index[c.last_id], c)
        for c in tree.record.compactions
        if c.first_id in index and c.last_id in index
    ]
    lines: list[str] = []
    if last is not None and len(shown) > last:
        lines += ["", f"*({count(len(shown) - last, 'earlier message')} not shown)*"]
        shown = shown[-last:]
    for n, m in enumerate(shown):
        at = index[m.id]
        for _, _, c in (s for s in spans if s[0] == at or (n == 0 and s[0] < at <= s[1])):
            summary = "\n".join(f"> {line}" for line in c.summary.splitlines() or [""])
            lines += [
                "",
                f"> ✂ `{c.summary_id}`: the {count(c.replaced, 'message')} from `{c.first_id}` to "
                f"`{c.last_id}` read as this summary ({when(c.created_at)}):",
                ">",
                summary,
            ]
        inside = any(lo <= at <= hi for lo, hi, _ in spans)
        name = f" ({m.name})" if m.name else ""
        mark = " · compacted" if inside else ""
        lines += ["", f"### {m.role}{name} · {when(m.created_at)} · `{m.id}`{mark}", ""]
        lines.append(readable(m.content))
        others = [k for k in tree.children.get(m.id, []) if k not in index]
        if others:
            leaves = [leaf for k in others for leaf in tree.leaves_under(k)]
            shown_leaves = ", ".join(f"`{leaf}`" for leaf in leaves[:5])
            more = f" and {len(leaves) - 5} more" if len(leaves) > 5 else ""
            lines += [
                "",
                f"> ⎇ {len(others)} other branch{'es' if len(others) != 1 else ''} from here, "
                f"ending at {shown_leaves}{more}",
            ]
        for _, _, c in (s for s in spans if s[1] == at):
            lines += ["", f"> ✂ end of `{c.summary_id}`"]
    return lines
