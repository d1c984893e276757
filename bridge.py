"""The Zero Problem bridge: the contract with Zero Problem, its service id, its path, and one `View` of the
store in, the status document out: one message within 3 000 characters and 30 lines, the verdict first.

PURE: no I/O, no clock, no logging; the same view always gives the same document. Imports `replicationlag.model`,
`.text` (every server string through `neutral`), `.trend`, `.view` and `.words` (the sentences the status page and
the log share), and is imported by nothing in the package:
exporter.py hands it to the service (`build_service(settings, bridge)`), which serves `PATH` with
`status_document`, rendered once per `document_key`.
"""

from __future__ import annotations

from typing import Any

from replicationlag.model import Member, NoteKind, Snapshot, Status
from replicationlag.text import NAME_LIMIT, neutral
from replicationlag.trend import Trend
from replicationlag.view import SetView, View
from replicationlag.words import (
    FULL_LISTING_MAX_SETS,
    SET_DANGER,
    attributes,
    changing_sentences,
    collection_problems,
    condition,
    danger_words,
    lag_text,
    role,
    set_label,
    since_words,
    summary,
    worst_set_order,
)

# The consumer is configured with this id, typo included: it must not be "corrected".
SERVICE_ID = "mhp.zeroproblem.mongo.replcationlag"
PATH = "/" + SERVICE_ID

# One message, bounded whatever happens: a Slack section block holds 3 000 characters, and a page that scrolls is
# not read. The first line is the verdict (under 120 characters, words.VERDICT_MAX_CHARS).
MAX_CHARS = 3_000
MAX_LINES = 30


def markdown_name(name: str) -> str:
    """A member name as Markdown shows it literally (text.neutral): host:port and [IPv6]:port byte for byte."""
    return neutral(name, NAME_LIMIT)


def member_line(member: Member, snapshot: Snapshot, prefix: str = "", trend: Trend | None = None) -> str:
    """One Markdown list line for one member, e.g. `- Secondary db1:27017 replication lag 1239ms`, and for a
    YELLOW or RED member how it is going: `(rising 2.1 s/min, RED in about 4 min; oplog headroom 5 h 12 min)`."""
    words = [f"{prefix}{role(member)}", markdown_name(member.name)]
    facts = attributes(member)
    # With a primary, the primary is obviously the reference; otherwise the reader must be told which it was.
    if member.name == snapshot.reference_member and not snapshot.has_primary:
        facts.append("reference")
    if facts:
        words.append(f"({', '.join(facts)})")
    if member.lag_ms is None or member.is_arbiter:
        words.append(condition(member))
    else:
        words.append(f"replication lag {lag_text(member)}")
        # Notes (an oplog lookup fallback, apply as the bottleneck) are worth the reader's eye; "N ms behind"
        # would only repeat the number, and consumers read the line as `... replication lag <N>ms`.
        notes = danger_words(member, trend) + [neutral(n.text) for n in member.notes if n.kind is not NoteKind.BEHIND]
        if notes:
            words.append(f"({'; '.join(notes)})")
    return "- " + " ".join(words)


def snapshot_lines(snapshot: Snapshot, *, last_known: bool = False, trends: SetView | None = None) -> list[str]:
    """The reference line for a set with no primary, one line per member (primary first), then what endangers
    the whole set: the majority commit point, flow control, a read the user may not make."""
    lines = []
    prefix = "Last known: " if last_known else ""
    if not snapshot.has_primary:
        if snapshot.reference_member:
            reference = markdown_name(snapshot.reference_member)
            lines.append(f"- {prefix}No primary: lag measured against the freshest member {reference}")
        else:
            lines.append(f"- {prefix}No primary and no healthy data-bearing member to measure lag against")
    lines.extend(
        member_line(m, snapshot, prefix, trends.trend_of(m.name) if trends is not None else None)
        for m in snapshot.members
    )
    lines += [f"- {prefix}{_capital(neutral(n.text))}" for n in snapshot.notes if n.kind in SET_DANGER]
    return lines


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def action_body(view: View, page_url: str = "") -> str:
    """The Markdown the consumer shows, within MAX_CHARS and MAX_LINES whatever the cluster: the verdict; one line
    per kind of problem (RED first, then the largest lag, each with its count, first names and since when); the
    sets that are not GREEN, worst first, each under a heading with its members in the replica-set wording (every
    GREEN set too while the cluster is small, else one line for them all); what was left out, counted; and where
    to see everything."""
    found = summary(view)
    problems = [f"- {text}" for _, text in found.lines]
    blocks, tail = _details(view)
    footer = [f"- All members: {_page_words(page_url)}"]
    return "\n".join(_fit(found.verdict, problems, blocks, tail, footer))


def _page_words(page_url: str) -> str:
    # An autolink: nothing inside <...> is read as Markdown (config.py refuses spaces, < and > in the address).
    return f"<{page_url}>" if page_url else "the status page at / of this exporter"


def _details(view: View) -> tuple[list[list[str]], list[str]]:
    """The sets as blocks of lines, worst first (a replica set's block is its members), and the line for the
    GREEN sets of a large cluster."""
    if not view.sharded:
        single = view.single
        # The failure itself is the summary's line; what follows it (the last success's age) stays here.
        block = [f"- {s}" for s in collection_problems(view)[1:]] if view.failure is not None else []
        if view.snapshot is not None:
            block += snapshot_lines(view.snapshot, last_known=view.current is None, trends=single)
        return ([block] if block else []), []
    ranked = sorted(view.sets, key=worst_set_order)
    large = len(view.sets) > FULL_LISTING_MAX_SETS
    shown = [s for s in ranked if not (large and s.status is Status.GREEN)]
    quiet = [s for s in ranked if s.status is Status.GREEN]
    blocks = [_set_block(view, each) for each in shown]
    return blocks, ([_green_summary(quiet)] if large and quiet else [])


def _set_block(view: View, each: SetView) -> list[str]:
    """`### shard07 (replica set shard07): RED for 8 min, since 03:12 UTC`, then its members: a heading, so it
    cannot be taken for a member line."""
    heading = f"### {set_label(each)}: {each.status.name}"
    if each.status is not Status.GREEN:
        since = since_words(each.status_since_s, view.published_wall_s)
        heading += f" {since}" if since else ""
    if each.address.draining:
        heading += " (draining: removeShard in progress)"
    lines = [heading, *(f"- {s}" for s in collection_problems(each))]
    if each.snapshot is not None:
        lines += snapshot_lines(each.snapshot, last_known=each.current is None, trends=each)
    return lines


COUNT_LINE_CHARS = 64  # room kept for "- 1234 more lines on the status page (567 more sets)"


def _fit(verdict: str, problems: list[str], blocks: list[list[str]], tail: list[str], footer: list[str]) -> list[str]:
    """The lines in order of importance, within MAX_LINES and MAX_CHARS: the verdict, the problem lines, then the
    sets' blocks in order while each fits whole (of the first, what fits rather than nothing), and always the GREEN
    line and the footer; what was left out is counted on a line of its own."""
    reserved = [*tail, *footer]
    lines = [verdict]
    chars = [len(verdict)]
    left_lines = left_sets = 0

    def fits(new: list[str]) -> bool:
        count = len(lines) + len(new) + len(reserved) + 1  # + the line that counts what was left out
        size = sum(chars) + sum(len(x) + 1 for x in (*new, *reserved)) + len(lines) + COUNT_LINE_CHARS
        return count <= MAX_LINES and size <= MAX_CHARS

    def add(new: list[str]) -> None:
        lines.extend(new)
        chars.extend(map(len, new))

    for line in problems:
        if fits([line]):
            add([line])
        else:
            left_lines += 1
    stopped = False  # once a set does not fit, the ones after it are left out too: the order is the message
    for index, block in enumerate(blocks):
        if not stopped and fits(block):
            add(block)
            continue
        stopped, shown = True, 0
        if index == 0:  # nothing of the worst set would be shown: show what fits of it
            while shown < len(block) and fits([block[shown]]):
                add([block[shown]])
                shown += 1
        left_lines += len(block) - shown
        left_sets += 0 if shown else 1
    add(tail)
    if left_lines:
        more = f"- {left_lines} more line{'s' if left_lines != 1 else ''} on the status page"
        add([more + (f" ({left_sets} more set{'s' if left_sets != 1 else ''})" if left_sets else "")])
    add(footer)
    return lines


def _green_summary(quiet: list[SetView]) -> str:
    """One line for every GREEN set of a large cluster: how many, and the worst lag among them."""
    worst = max(
        (
            (m.lag_ms, set_label(each), markdown_name(m.name))
            for each in quiet
            for m in each.current.members
            if m.lag_ms is not None
        ),
        default=None,
    )
    text = f"- {len(quiet)} set{'s' if len(quiet) != 1 else ''} GREEN"
    if worst is not None and worst[0] > 0:
        text += f", worst replication lag {worst[0]}ms ({worst[1]}, {worst[2]})"
    return text


def data_timestamp_ms(view: View) -> int:
    """When the data shown was collected: the snapshot's time (the newest of a cluster's sets), else the
    failure's, else 0."""
    if view.sharded:
        collected = [s.snapshot.collected_at_ms for s in view.sets if s.snapshot is not None]
        if collected:
            return max(collected)
        return view.map_failure.at_ms if view.map_failure is not None else 0
    if view.snapshot is not None:
        return view.snapshot.collected_at_ms
    if view.failure is not None:
        return view.failure.at_ms
    return 0


def document_key(view: View) -> tuple:
    """What the document shows that changes between polls: the poll, the colour, and the sentences that print an
    age. Two views with the same key give the same document, so it is rendered once per key (web/app.py)."""
    return changing_sentences(view)


def status_document(view: View, page_url: str = "") -> dict[str, Any]:
    """The document Zero Problem expects: status, timestamp and exactly one message, in every state. `page_url` is
    the status page's address (--web.external-url), named where the document says where to see everything."""
    return {
        SERVICE_ID: {
            "status": view.status.name,
            "timestamp": data_timestamp_ms(view),
            "messages": [
                {
                    "statusCode": "",
                    "statusBody": SERVICE_ID,
                    "actionCode": "",
                    "actionBody": action_body(view, page_url),
                }
            ],
        }
    }
