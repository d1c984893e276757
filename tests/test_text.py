"""text.neutral: the one function every string from a server or a router goes through before a reader shows it;
text.natural_key: names in the order people count."""

from __future__ import annotations

import pytest

from replicationlag.text import natural_key, neutral

HOSTILE = [
    # (what a server said, what a reader is shown)
    (
        "Error connecting\n- Primary fake:1 replication lag 0ms",
        "Error connecting\ufffd- Primary fake:1 replication lag 0ms",
    ),
    ("rs0\r\n### shard99 (replica set x): GREEN", "rs0\ufffd\ufffd### shard99 (replica set x): GREEN"),
    ("**bold**", r"\*\*bold\*\*"),
    ("__bold__", r"\_\_bold\_\_"),
    ("[link](http://x)", r"\[link\](http://x)"),
    ("![img](http://x/i.png)", r"\!\[img\](http://x/i.png)"),
    ("<script>alert(1)</script>", r"\<script\>alert(1)\</script\>"),
    ("`code`", r"\`code\`"),
    ("a &amp; b", r"a \&amp; b"),
    ("lag 0ms\u202e sm00054", "lag 0ms\ufffd sm00054"),  # a right-to-left override would show "45000ms"
    ("db1\u200b:27017", "db1\ufffd:27017"),  # zero-width: would look like db1:27017
    ("x\u2066y\u2069\ufeff\u00ad", "x\ufffdy\ufffd\ufffd\ufffd"),
    ("# heading", r"\# heading"),
    ("- item", r"\- item"),
    ("+ item", r"\+ item"),
    ("1. item", r"1\. item"),
    ("3) item", r"3\) item"),
    ("~~gone~~ | cell", r"\~\~gone\~\~ \| cell"),
]


@pytest.mark.parametrize(("said", "shown"), HOSTILE)
def test_what_a_server_says_is_shown_literally_on_one_line(said, shown):
    assert neutral(said) == shown
    assert len(neutral(said).splitlines()) == 1


@pytest.mark.parametrize(
    "name",
    [
        "db1:27017",
        "db-1.example.net:27017",
        "mongo_1:27017",
        "10.0.0.13:27017",
        "[::1]:27017",
        "[fe80::1%eth0]:27017",
        "[2001:db8::7]:27018",
        "db1:27017#3",
    ],
)
def test_host_and_port_come_out_byte_for_byte(name):
    assert neutral(name) == name


def test_a_2_mb_message_is_cut_to_its_limit_and_says_so():
    shown = neutral("x" * 2_000_000, 300)
    assert len(shown) == 300
    assert shown.endswith("…")


def test_escapes_count_in_the_limit_and_a_cut_never_leaves_half_an_escape():
    for size in range(1, 40):
        shown = neutral("*" * 100, size)
        assert len(shown) <= size
        body = shown.removesuffix("…")
        assert body == "\\*" * (len(body) // 2)  # every star keeps its backslash: no half escape before the cut


def test_text_within_the_limit_is_not_cut():
    assert neutral("a" * 300, 300) == "a" * 300


def test_names_sort_as_people_count():
    names = ["shard10", "shard2", "shard1", "Shard3", "config", "shard02b", "shard02a"]
    assert sorted(names, key=natural_key) == ["config", "shard1", "shard2", "shard02a", "shard02b", "Shard3", "shard10"]
