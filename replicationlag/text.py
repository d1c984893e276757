"""Text from outside, made harmless, and names in the order people expect.

`neutral(text, limit)` is the one function every string a server or a router wrote goes through before a reader
shows it (heartbeat and info messages, state names, set names, shard ids, error texts, tag values): in the Zero
Problem document, on the status page (which HTML-escapes on top) and in the logs. `natural_key` sorts names the way
people count (shard2 before shard10).

PURE, standard library only; imports nothing of ours.
"""

from __future__ import annotations

import re

# What CommonMark (and GFM's ~ and |) would read inside a line: escapes, code, emphasis, links, images, HTML and
# entities. An _ between letters or digits is no emphasis (docker's mongo_1:27017 stays as it is).
_MARKDOWN = re.compile(r"[\\`*\[\]<>!&~|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# What could start a Markdown block if the text ever began a line: a list item, a heading, an ordered item.
_BLOCK_START = re.compile(r"^(?:[-+]|#{1,6})(?=\s|$)")
_ORDERED_START = re.compile(r"^(\d{1,9})([.)])(?=\s|$)")  # escaped at its punctuation: a digit has no escape
# Controls and what str.splitlines() splits on (a line break would start a line of its own), and what reorders or
# hides characters: bidirectional overrides and isolates (U+202E turns "lag 0ms" around), zero-width characters
# (U+200B makes "db1:27017" and "db1\u200b:27017" look alike), the soft hyphen and the byte-order mark.
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
_IPV6_HOST_PORT = re.compile(r"\[[0-9A-Fa-f:.]+(?:%[0-9A-Za-z._~-]+)?\]:\d+")  # brackets that are no link
REPLACEMENT = "\ufffd"  # shown where an unsafe character was: visible, so two names that differ still look different
CUT = "…"

NAME_LIMIT = 160  # a member, set, shard or router name
MESSAGE_LIMIT = 300  # a server's sentence: a heartbeat or info message, an error text


def neutral(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """`text` as Markdown shows it literally, on one line, in at most `limit` characters.

    Line breaks, controls, bidirectional and zero-width characters become U+FFFD; what Markdown would read as
    emphasis, code, a link, an image, HTML or an entity is backslash-escaped, and so is a list or heading marker at
    its start; longer text is cut and ends with "…". host:port and [IPv6]:port come out byte for byte (consumers
    parse member lines). Apply it once, where the text comes in: escaping twice doubles the backslashes.
    """
    raw = str(text)
    cut = len(raw) > limit
    raw = raw[:limit]  # a 2 MB message is cut before any work is done on it
    raw = _UNSAFE.sub(REPLACEMENT, raw)
    if _IPV6_HOST_PORT.fullmatch(raw):
        shown = raw
    else:
        shown = _MARKDOWN.sub(lambda match: "\\" + match.group(0), raw)
        shown = _BLOCK_START.sub(lambda match: "\\" + match.group(0), shown)
        shown = _ORDERED_START.sub(lambda match: f"{match.group(1)}\\{match.group(2)}", shown)
    if cut or len(shown) > limit:
        shown = shown[: max(0, limit - len(CUT))]
        trailing = len(shown) - len(shown.rstrip("\\"))
        if trailing % 2:  # never leave half an escape: it would escape the cut mark
            shown = shown[:-1]
        shown += CUT
    return shown


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key for names with numbers in them: shard2 before shard10, db9b before db10a; ties in case order."""
    parts = _DIGITS.split(name.casefold())
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name)
