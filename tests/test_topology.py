"""Where members live (issue 24): tags read from the replica-set config and kept bounded, the grouping keys from
--topology.tags / TOPOLOGY_TAGS / the config file, and the two families Prometheus scrapes: member_tag (a tag per
series, to join on set and member) and member_ping_seconds (a round trip as the answering member sees it)."""

from __future__ import annotations

import pytest
from test_replset import load
from view_factory import make_store

from replicationlag.config import ConfigError, load_settings
from replicationlag.metrics import build_registry
from replicationlag.model import MAX_TAG_CHARS, MAX_TAGS_PER_MEMBER
from replicationlag.replset import build_snapshot
from replicationlag.words import location, location_keys

STATUS = "replSetGetStatus-7.0-primary-edge-cases.json"
TAGGED = "replSetGetConfig-7.0-two-clouds-tags.json"
URI = "mongodb://db0:27017/?replicaSet=rs0"


def tagged_snapshot():
    return build_snapshot(load(STATUS), load(TAGGED)["config"])


def by_name(snapshot, host: str):
    return next(m for m in snapshot.members if m.name.startswith(host))


def test_each_members_tags_are_read_from_the_config_sorted_by_key():
    snap = tagged_snapshot()

    assert by_name(snap, "db0").tags == (
        ("cloud", "aws"),
        ("nodeType", "ELECTABLE"),
        ("region", "ap-northeast-2"),
        ("zone", "apne2-az1"),
    )
    assert by_name(snap, "db1").tag("region") == "ap-northeast-2"
    assert by_name(snap, "db4").tags == ()  # tags: {}
    assert by_name(snap, "arb").tags == ()  # no tags field at all


def test_tag_values_from_the_server_lose_line_breaks_and_invisible_characters_and_are_cut():
    db2 = by_name(tagged_snapshot(), "db2")

    assert db2.tag("note") == "line oneline two hidden"  # \n, U+202E and U+200B dropped
    assert db2.tag("long") == "x" * MAX_TAG_CHARS
    assert db2.tag("count") is None  # not a string: no tag


def test_a_member_keeps_at_most_eight_tags():
    db3 = by_name(tagged_snapshot(), "db3")

    assert len(db3.tags) == MAX_TAGS_PER_MEMBER == 8
    assert [key for key, _ in db3.tags] == ["a", "b", "c", "cloud", "d", "e", "f", "region"]  # the first 8 by key


def test_every_tag_is_one_series_to_join_on_set_and_member_and_a_member_without_tags_has_none():
    registry = build_registry(make_store(tagged_snapshot())[0])
    samples = [s for f in registry.collect() for s in f.samples if s.name == "mongodb_replication_member_tag"]

    labels = {(s.labels["member"], s.labels["key"], s.labels["value"]) for s in samples}
    assert ("db2.example.net:27017", "cloud", "gcp") in labels
    assert ("db0.example.net:27017", "region", "ap-northeast-2") in labels
    assert not {member for member, _, _ in labels} & {"db4.example.net:27017", "arb.example.net:27017"}
    assert {s.value for s in samples} == {1.0}
    assert {s.labels["set"] for s in samples} == {"rs0"}
    assert len(samples) == 4 + 3 + 5 + 8  # db0, db1, db2 (cloud, long, note, region, zone), db3


def test_a_round_trip_is_exported_per_member_with_the_member_that_measured_it():
    snap = tagged_snapshot()
    registry = build_registry(make_store(snap)[0])
    samples = {
        s.labels["member"]: s for f in registry.collect() for s in f.samples if s.name.endswith("member_ping_seconds")
    }

    assert samples["db2.example.net:27017"].value == 0.003  # pingMs 3
    assert {s.labels["observer"] for s in samples.values()} == {snap.answered_by} == {"db0.example.net:27017"}
    assert snap.answered_by not in samples  # the observer has no round trip to itself


def test_a_member_that_leaves_takes_its_tags_and_round_trip_with_it():
    store, _ = make_store(tagged_snapshot())
    registry = build_registry(store)
    status = load(STATUS)
    status["members"] = [m for m in status["members"] if not m["name"].startswith("db2")]
    store.publish(build_snapshot(status, load(TAGGED)["config"]), 0.1)

    members = {s.labels["member"] for f in registry.collect() for s in f.samples if "tag" in s.name or "ping" in s.name}
    assert "db2.example.net:27017" not in members
    assert "db3.example.net:27017" in members


def test_members_are_grouped_by_the_first_common_location_key_they_carry_unless_told():
    snap = tagged_snapshot()
    view = make_store(snap)[0].view()

    assert location_keys(view) == ("cloud",)
    assert location(by_name(snap, "db2"), ("cloud",)) == "cloud gcp"
    assert (
        location(by_name(snap, "db2"), ("cloud", "region", "zone")) == "cloud gcp (asia-northeast3, asia-northeast3-a)"
    )
    assert location(by_name(snap, "db4"), ("cloud",)) == ""


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, ()),
        (["--topology.tags", "cloud,region"], {}, ("cloud", "region")),
        ([], {"TOPOLOGY_TAGS": "provider, region"}, ("provider", "region")),
        (["--topology.tags", "zone"], {"TOPOLOGY_TAGS": "cloud"}, ("zone",)),  # the flag wins
    ],
)
def test_the_grouping_keys_come_from_the_flag_or_the_environment(argv, env, expected):
    settings = load_settings(["--mongodb.uri", URI, *argv], env=env)

    assert settings.topology_tags == expected


def test_the_grouping_keys_can_come_from_the_config_file(tmp_path):
    path = tmp_path / "replicationlag.toml"
    path.write_text(f'[infra.clusterKeeper]\nuri = "{URI}"\ntopology_tags = ["provider", "availabilityZone"]\n')
    path.chmod(0o600)

    assert load_settings(["--config.file", str(path)], env={}).topology_tags == ("provider", "availabilityZone")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cloud,,region", "tag keys are 1-64"),
        ("cloud region", "tag keys are 1-64"),
        ("a,b,c,d", "at most 3"),
        ("cloud,cloud", "at most 3 different"),
    ],
)
def test_grouping_keys_that_no_tag_can_have_are_refused_naming_the_setting(value, message):
    with pytest.raises(ConfigError, match=f"--topology.tags: .*{message}"):
        load_settings(["--mongodb.uri", URI, "--topology.tags", value], env={})


def test_a_member_that_is_not_healthy_has_no_round_trip():
    """A DOWN member's pingMs is what the observer last measured before it went away: not a round trip now."""
    snap = tagged_snapshot()
    down = next(m for m in snap.members if not m.healthy)
    registry = build_registry(make_store(snap)[0])
    pinged = {s.labels["member"] for f in registry.collect() for s in f.samples if s.name.endswith("ping_seconds")}
    assert down.ping_ms is not None and down.name not in pinged
