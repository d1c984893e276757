"""The fault matrix (issue 7): exporter.py as a user runs it, real pymongo over TCP to a simulated set, one fault
per row. While the fault lasts, the status document, /liveness, /metrics and the log say what it is, each poll
ends within --collect.timeout, and every endpoint answers (a client timeout fails a hung answer); once the fault
clears, the exporter is GREEN again by itself, at the latest on the second poll that starts after the clear.
Every row runs with a password in the URI and --log.level debug, and the password is in no log line and no
answer.

Each row: a set (three data members and an arbiter, a monitoring user), the exporter polling every half second, the
fault injected (or present from the start), then cleared. The timing figures (how fast, how far under 100 ms)
are measured by bench/, not here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from pymongo.errors import ExecutionTimeout
from service_util import Exporter, Look, uri_with_credentials

from mongosim import ReplicaSet
from replicationlag.mongo.driver import classify
from replicationlag.poller import WATCHDOG_GRACE_S

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

INTERVAL_S = 0.5  # short, so that the whole matrix runs in about a minute; the product's default is 60 s
TIMEOUT_S = 0.3
# The poll's deadline is the exporter's own report, checked against the product's own limit: the poller's
# watchdog gives up on a poll at its deadline plus WATCHDOG_GRACE_S, so a poll that reports less was ended by the
# driver, as it must be. pymongo's server selection looks at its deadline only between waits of up to 0.5 s
# (MIN_HEARTBEAT_INTERVAL), and on 2 shared cores other work ate the rest of the former fixed 0.6 s grace.
DEADLINE_GRACE_S = WATCHDOG_GRACE_S
SEEN_WITHIN_S = 12.0  # a bound for waits: a fault's effect shows within a few polls (heartbeats take up to 2.5 s)
USER, PASSWORD = "monitor", "fault-Pa55:w@rd/%é"
WRONG_PASSWORD = "not-the-Pa55:word"
MONITOR_ROLES = ("clusterMonitor", "read@local")


def spellings(password: str) -> set[str]:
    return {password, quote(password, safe=""), quote_plus(password)}


@dataclass
class Case:
    """A running row: the set, the exporter, the names of its members, and what the row's steps leave behind."""

    rs: ReplicaSet
    names: list[str]
    exporter: Exporter | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    churn: threading.Thread | None = None

    def churn_every(self, period_s: float, step: Callable[[int], None]) -> None:
        """Call step(0), step(1), ... every period_s on a thread of its own, until end_churn()."""

        def run() -> None:
            n = 0
            while not self.stop.wait(period_s):
                step(n)
                n += 1

        self.churn = threading.Thread(target=run, name="fault-churn", daemon=True)
        self.churn.start()

    def end_churn(self) -> None:
        self.stop.set()
        if self.churn is not None:
            self.churn.join(5)
            assert not self.churn.is_alive()


@dataclass(frozen=True)
class Row:
    id: str
    inject: Callable[[Case], None]
    clear: Callable[[Case], None]
    shows: Callable[[Case, Look], bool]  # this look shows the fault (the fault's first poll is done)
    liveness: int | None = 200  # /liveness while the fault lasts; None: it depends on the poll (checked by `during`)
    kind: str | None = None  # the failure kind of the polls while the fault lasts
    logged: str = ""  # a log line while the fault lasts contains this
    during: Callable[[Case, Look], None] | None = None  # more checks on every look while the fault lasts
    at_start: bool = False  # the fault is there before the exporter starts
    uri: Callable[[ReplicaSet], str] = lambda rs: uri_with_credentials(rs.uri, USER, PASSWORD)
    users: tuple[tuple[str, str, tuple[str, ...]], ...] = ((USER, PASSWORD, MONITOR_ROLES),)
    recovers: bool = True


# --- what the rows expect to see ---------------------------------------------------------------------------------


def member_line(look: Look, name: str) -> str:
    members = ("- Primary ", "- Secondary ", "- Arbiter ", "- Last known: ")  # not the summary's lines
    lines = [line for line in look.action_body.splitlines() if line.startswith(members) and f" {name} " in f"{line} "]
    assert len(lines) == 1, look.action_body
    return lines[0]


def member_is_down(case: Case, look: Look, index: int) -> bool:
    """The set answered and shows member `index` down: RED, its line says DOWN, health 0, no lag series."""
    name = case.names[index]
    if look.status != "RED" or look.liveness_status != 200 or f"{name} DOWN" not in look.action_body:
        return False
    metrics = look.metrics
    assert metrics.value("mongodb_replication_member_health", member=name) == 0
    assert metrics.value("mongodb_replication_member_state", member=name) == 8
    assert metrics.value("mongodb_replication_lag_seconds", member=name) is None  # a gap, never a fake number
    assert metrics.value("mongodb_replication_up") == 1
    return True


def has_no_primary(case: Case, look: Look) -> bool:
    if look.status != "RED" or "No primary: lag measured against the freshest member" not in look.action_body:
        return False
    assert look.liveness_status == 200  # the cluster's problem, not the exporter's
    assert look.metrics.value("mongodb_replication_primary_present") == 0
    assert [s["reference"] for s in look.metrics.series("mongodb_replication_reference_info")] == ["freshest"]
    return True


def collection_fails(*words: str) -> Callable[[Case, Look], bool]:
    def shows(case: Case, look: Look) -> bool:
        body = look.action_body
        if look.liveness_status != 503 or not all(w in body for w in words):
            return False
        assert body.splitlines()[1].startswith("- RED: collection failed ("), body
        assert all(w in " ".join(look.liveness["reasons"]) for w in words), look.liveness
        assert look.metrics.value("mongodb_replication_up") == 0
        assert look.metrics.series("mongodb_replication_lag_seconds") == []  # failed data is not exported as now
        return True

    return shows


def primary_down(case: Case) -> None:
    # no_primary() first: mongosim's take_down() of the primary itself can wait forever on a held hello
    # (asyncio.wait_for in Python 3.11 swallows the cancel when the hello was just woken).
    case.rs.no_primary()
    case.rs.take_down(0)


def primary_back(case: Case) -> None:
    case.rs.bring_up(0)
    case.rs.elect(0)


def all_down(case: Case) -> None:
    case.rs.no_primary()
    for index in range(4):
        case.rs.take_down(index)


def all_back(case: Case) -> None:
    for index in range(4):
        case.rs.bring_up(index)
    case.rs.elect(0)


def primary_hung_shows(case: Case, look: Look) -> bool:
    """Polls that reach the hung primary end at the deadline (kind timeout: RED in the document, /liveness still
    200 with fresh data, so a few seconds of hang get nobody restarted); once the driver's heartbeat gives up on
    it, a secondary answers: RED, no primary, the old primary DOWN."""
    if look.liveness.get("last_failure_kind") == "timeout":
        case.notes["timeouts seen"] = True
        assert look.liveness_status == 200, look.liveness
        assert look.status == "RED", look.action_body
        assert f"did not finish within its {TIMEOUT_S:g} s deadline" in look.action_body
    return has_no_primary(case, look) and f"{case.names[0]} DOWN" in look.action_body


def grant_cluster_monitor(case: Case) -> None:
    case.rs.add_user(USER, PASSWORD, MONITOR_ROLES)
    # A real mongod applies a grant to open sessions at once; mongosim's sessions keep the roles they logged in
    # with, so its members restart (the same version) to drop them.
    case.rs.set_version("7.0")


def elect_in_turn(case: Case) -> None:
    """Elections between members 0 and 1 every 5 ms: a poll takes a few ms (status, config, oplog lookups), so
    most polls see the primary change under them."""
    case.rs.set_lag(2, 1_500)  # a lagging member, so that each poll also looks up the primary's oplog
    case.churn_every(0.005, lambda n: case.rs.elect(1 - n % 2))


def every_poll_is_green_with_one_primary(case: Case, look: Look) -> None:
    assert look.liveness_status == 200, look.liveness  # no poll failed
    assert look.status == "GREEN", look.action_body
    states = look.metrics.by_member("mongodb_replication_member_state")
    primaries = [member for member, state in states.items() if state == 1]
    assert len(primaries) == 1, states
    lagged = [s["member"] for s in look.metrics.series("mongodb_replication_lag_seconds")]
    assert len(lagged) == len(set(lagged)), lagged  # an election never gives a member a second series
    assert primaries[0] not in lagged
    assert look.metrics.value("mongodb_replication_lag_seconds", member=case.names[2]) == pytest.approx(1.5, abs=0.01)


def after_elections(case: Case) -> None:
    case.end_churn()
    case.rs.elect(0)


def flap(case: Case) -> None:
    """Member 2 goes down for 0.75 s and comes back for 0.75 s, again and again, across the polls."""
    case.churn_every(0.75, lambda n: case.rs.take_down(2) if n % 2 == 0 else case.rs.bring_up(2))


def every_poll_follows_the_flapping_member(case: Case, look: Look) -> None:
    """Each endpoint on its own agrees with itself about member 2 (a poll may land between two of the reads)."""
    assert look.liveness_status == 200, look.liveness  # the member's problem, never a failed poll
    name = case.names[2]
    metrics = look.metrics
    health = metrics.value("mongodb_replication_member_health", member=name)
    lag = metrics.value("mongodb_replication_lag_seconds", member=name)
    if health == 1:
        assert lag is not None
    else:
        assert (metrics.value("mongodb_replication_status"), lag) == (2, None)
    line = member_line(look, name)
    assert ("DOWN" in line) == ("replication lag" not in line), line
    assert "DOWN" not in line or look.status == "RED", look.action_body
    case.notes.setdefault("statuses", set()).add(look.status)


def flapped_both_ways(case: Case, look: Look) -> bool:
    return case.notes.get("statuses", set()) >= {"GREEN", "RED"} and look.polls >= case.notes["polls at inject"] + 4


def after_flapping(case: Case) -> None:
    case.end_churn()
    case.rs.bring_up(2)


def polls_since_inject(count: int) -> Callable[[Case, Look], bool]:
    return lambda case, look: look.polls >= case.notes["polls at inject"] + count


def dns_shows(case: Case, look: Look) -> bool:
    if not collection_fails("no usable member of the replica set", "no-such-host.invalid:27017")(case, look):
        return False
    assert look.liveness["last_failure_kind"] == "unreachable"
    return look.polls >= 2  # and it keeps trying


def nothing(case: Case) -> None:
    pass


ROWS = [
    Row(
        "one secondary down",
        inject=lambda case: case.rs.take_down(2),
        clear=lambda case: case.rs.bring_up(2),
        shows=lambda case, look: member_is_down(case, look, 2),
        logged="is RED: ",
    ),
    Row(
        "the primary down",
        inject=primary_down,
        clear=primary_back,
        shows=lambda case, look: has_no_primary(case, look) and member_is_down(case, look, 0),
        logged="is RED: no primary",
    ),
    Row(
        "all members down",
        inject=all_down,
        clear=all_back,
        shows=collection_fails(f"no usable member of the replica set within {TIMEOUT_S:g} s", "Connection refused"),
        liveness=503,
        kind="unreachable",
        logged="collection failed (unreachable): no usable member",
    ),
    Row(
        "no primary (all secondaries)",
        inject=lambda case: case.rs.no_primary(),
        clear=lambda case: case.rs.elect(0),
        shows=has_no_primary,
        logged="is RED: no primary",
    ),
    Row(
        "an election mid-poll",
        inject=elect_in_turn,
        clear=after_elections,
        shows=polls_since_inject(4),
        during=every_poll_is_green_with_one_primary,
    ),
    Row(
        "a member hung after accept",
        inject=lambda case: case.rs.hang(2, "after_accept"),
        clear=lambda case: case.rs.hang(2, None),
        shows=lambda case, look: member_is_down(case, look, 2),
        logged="is RED: ",
    ),
    Row(
        "a member hung before accept",
        inject=lambda case: case.rs.hang(2, "before_accept"),
        clear=lambda case: case.rs.hang(2, None),
        shows=lambda case, look: member_is_down(case, look, 2),
        logged="is RED: ",
    ),
    Row(
        "the primary hung",
        inject=lambda case: case.rs.hang(0, "after_accept"),
        clear=lambda case: case.rs.hang(0, None),
        shows=primary_hung_shows,
        liveness=None,
        kind="timeout",
        logged=f"collection failed (timeout): the poll did not finish within its {TIMEOUT_S:g} s deadline",
    ),
    Row(
        "wrong password",
        inject=nothing,  # the URI's password was never the user's
        clear=lambda case: case.rs.add_user(USER, WRONG_PASSWORD, MONITOR_ROLES),  # the user now has that one
        shows=collection_fails("authentication failed: check the user name, password and authSource"),
        liveness=503,
        kind="auth",
        logged="collection failed (auth)",
        at_start=True,
        uri=lambda rs: uri_with_credentials(rs.uri, USER, WRONG_PASSWORD),
    ),
    Row(
        "user without clusterMonitor",
        inject=nothing,
        clear=grant_cluster_monitor,
        shows=collection_fails("the user needs the clusterMonitor role"),
        liveness=503,
        kind="unauthorized",
        logged="collection failed (unauthorized)",
        at_start=True,
        users=((USER, PASSWORD, ("read@local",)),),
    ),
    Row(
        "not a replica set",
        inject=lambda case: case.rs.set_topology("standalone"),
        clear=lambda case: case.rs.set_topology("replset"),
        shows=collection_fails("not a replica set", "runs without --replSet"),
        liveness=503,
        kind="not_replica_set",
        logged="collection failed (not_replica_set)",
    ),
    Row(
        "not yet initialised",
        inject=lambda case: case.rs.set_topology("uninitialized"),
        clear=lambda case: case.rs.set_topology("replset"),
        shows=collection_fails("not initialised yet", "rs.initiate()"),
        liveness=503,
        kind="not_replica_set",
        logged="collection failed (not_replica_set)",
    ),
    Row(
        # Nothing to clear: a name that resolves again is a DNS fix the test cannot make. It keeps trying.
        "a URI whose host does not resolve",
        inject=nothing,
        clear=nothing,
        shows=dns_shows,
        liveness=503,
        kind="unreachable",
        logged=f"collection failed (unreachable): no usable member of the replica set within {TIMEOUT_S:g} s: no-such",
        at_start=True,
        uri=lambda rs: f"mongodb://{USER}:{quote(PASSWORD, safe='')}@no-such-host.invalid:27017/?replicaSet=rs0",
        recovers=False,
    ),
    Row(
        "a member flapping every 1.5 s",
        inject=flap,
        clear=after_flapping,
        shows=flapped_both_ways,
        during=every_poll_follows_the_flapping_member,
    ),
]


@pytest.fixture
def case(start_set: Callable[..., ReplicaSet], request: pytest.FixtureRequest) -> Iterator[Case]:
    row: Row = request.param
    rs = start_set(3, arbiter=True, users=row.users)
    made = Case(rs, [m.name for m in rs.members])
    yield made
    made.end_churn()
    if made.exporter is not None:
        made.exporter.kill()


def start_exporter(case: Case, uri: str) -> Exporter:
    case.exporter = Exporter(
        "--mongodb.uri",
        uri,
        "--collect.interval",
        f"{INTERVAL_S:g}",
        "--collect.timeout",
        f"{TIMEOUT_S:g}",
        "--log.level",
        "debug",
    )
    return case.exporter


def check_every_answer(look: Look) -> None:
    """What holds in every state: one message whose actionBody is the verdict (its colour first, under 120
    characters) over a Markdown list, within 3 000 characters and 30 lines; a reported poll duration within the
    deadline, and /liveness saying why when it fails."""
    document = look.document
    assert document["status"] in ("GREEN", "YELLOW", "RED")
    assert len(document["messages"]) == 1
    verdict, *lines = look.action_body.splitlines()
    assert verdict.startswith(f"{document['status']}: ") and len(verdict) < 120, look.action_body
    assert lines and all(line.startswith(("- ", "### ")) for line in lines), look.action_body
    assert len(look.action_body) <= 3_000 and len(lines) < 30, look.action_body
    assert (look.liveness_status == 503) == bool(look.liveness.get("reasons")), look.liveness
    reported = look.reported_poll_s
    # /metrics is read after /liveness: a poll liveness counted has its duration there (a poll may also end in
    # between, so a duration with no poll counted yet is possible).
    assert look.polls == 0 or reported is not None, (look.polls, reported)
    assert reported is None or reported < TIMEOUT_S + DEADLINE_GRACE_S, f"a poll reported {reported} s"
    assert "<html" in look.page.lower()


def is_green(case: Case | None, look: Look) -> bool:
    return look.status == "GREEN" and look.liveness_status == 200 and look.metrics.value("mongodb_replication_up") == 1


def recover(case: Case, exporter: Exporter, row: Row) -> None:
    """Clear the fault; GREEN again by the second poll that starts after the clear (the poll in flight at the
    clear may still fail), without a restart, and the log says so if the fault had made it say otherwise."""
    before = exporter.look()
    polls_before = before.polls
    log_mark = len(exporter.lines())
    row.clear(case)
    recovered, _ = exporter.wait_for(lambda look: is_green(case, look), SEEN_WITHIN_S, "GREEN after the clear")
    check_every_answer(recovered)
    assert recovered.polls <= polls_before + 3, (
        f"GREEN only at poll {recovered.polls}, cleared after poll {polls_before}\n{exporter.log_text}"
    )
    if before.status != "GREEN":
        exporter.wait_for(lambda look: exporter.logged("is GREEN", log_mark), SEEN_WITHIN_S, "'is GREEN' logged")


def check_no_password_anywhere(exporter: Exporter) -> None:
    seen = exporter.log_text + "\n".join(exporter.transcript)
    for secret in spellings(PASSWORD) | spellings(WRONG_PASSWORD):
        assert secret not in seen, f"the password leaked as {secret!r}"
    assert f"{USER}:***@" in exporter.log_text  # the startup line shows the URI, redacted


@pytest.mark.parametrize("case", ROWS, ids=[row.id for row in ROWS], indirect=True)
def test_fault_row(case: Case, request: pytest.FixtureRequest) -> None:
    row: Row = request.node.callspec.params["case"]
    exporter = start_exporter(case, row.uri(case.rs))
    if not row.at_start:
        exporter.wait_for(lambda look: is_green(case, look), SEEN_WITHIN_S, "GREEN before the fault")
    case.notes["polls at inject"] = exporter.look().polls
    log_mark = len(exporter.lines())
    failures_before = exporter.look().failures(row.kind) if row.kind else 0.0
    row.inject(case)

    def fault_shows(look: Look) -> bool:
        check_every_answer(look)
        # The first poll to end after the injection may have started before it: the fault's polls come after.
        if row.during is not None and look.polls >= case.notes["polls at inject"] + 2:
            row.during(case, look)
        return row.shows(case, look)

    # Wait for the fault's first poll, then watch one more poll: the state holds, it is not a one-off.
    shown, _ = exporter.wait_for(fault_shows, SEEN_WITHIN_S, f"the fault '{row.id}' to show")
    exporter.wait_for(lambda look: look.polls > shown.polls and fault_shows(look), SEEN_WITHIN_S, "a second poll")
    last = exporter.look()
    if row.liveness is not None:
        assert last.liveness_status == row.liveness, last.liveness
    if row.kind is not None:
        assert last.failures(row.kind) > failures_before
        assert row.kind != "timeout" or case.notes.get("timeouts seen"), "no poll was seen failing at its deadline"
    if row.logged:
        assert exporter.logged(row.logged, log_mark), exporter.log_text
    if row.kind is None:
        assert not exporter.logged("collection failed", log_mark), exporter.log_text  # no poll failed
    if row.recovers:
        recover(case, exporter, row)
    assert "Traceback" not in exporter.log_text
    assert exporter.stop() == 0
    check_no_password_anywhere(exporter)


# --- rows that are a sequence of changes, each checked on the poll after it ---------------------------------------


@pytest.fixture
def running(start_set: Callable[..., ReplicaSet]) -> Iterator[Case]:
    """A GREEN set and exporter, for the rows made of several steps."""
    rs = start_set(3, arbiter=True, users=[(USER, PASSWORD, MONITOR_ROLES)])
    made = Case(rs, [m.name for m in rs.members])
    exporter = start_exporter(made, uri_with_credentials(rs.uri, USER, PASSWORD))
    exporter.wait_for(lambda look: is_green(made, look), SEEN_WITHIN_S, "GREEN at start")
    yield made
    exporter.kill()


def after_the_next_polls(exporter: Exporter, condition: Callable[[Look], bool], what: str) -> Look:
    """The first look, from the second poll after now on (the one in flight may predate the change), for which
    `condition` holds; each look on the way must be GREEN and answered within the client timeout."""
    start = exporter.look().polls

    def check(look: Look) -> bool:
        check_every_answer(look)
        assert is_green(None, look), look.action_body
        return look.polls >= start + 2 and condition(look)

    return exporter.wait_for(check, SEEN_WITHIN_S, what)[0]


def test_the_set_s_config_changing_between_polls_is_followed(running: Case) -> None:
    rs, exporter = running.rs, running.exporter
    assert exporter is not None
    log_mark = len(exporter.lines())

    added = rs.add_member(hidden=True, delay_secs=3600)  # a new config version: the config is read again
    look = after_the_next_polls(exporter, lambda look: added in look.action_body, "the added member")
    assert "(hidden, delayed 3600s) replication lag 0ms (raw 3600000ms)" in member_line(look, added)
    assert look.metrics.value("mongodb_replication_member_delay_seconds", member=added) == 3600
    assert look.metrics.value("mongodb_replication_lag_seconds", member=added) == 0  # judged on its effective lag
    [info] = [s for s in look.metrics.series("mongodb_replication_member_info") if s["member"] == added]
    assert info["hidden"] == "true"

    old_name = running.names[2]
    new_name = f"localhost:{old_name.rsplit(':', 1)[1]}"
    rs.rename(2, new_name)
    look = after_the_next_polls(exporter, lambda look: new_name in look.action_body, "the renamed member")
    assert old_name not in look.action_body
    members = look.metrics.by_member("mongodb_replication_member_state")
    assert new_name in members and old_name not in members  # the old name's series are gone, not left stale

    rs.remove_member(added)
    look = after_the_next_polls(exporter, lambda look: added not in look.action_body, "the member removed")
    assert added not in look.metrics.by_member("mongodb_replication_member_state")
    assert len(look.action_body.splitlines()) == 6  # the verdict, four members, where to see everything

    assert not exporter.logged("collection failed", log_mark), exporter.log_text
    assert not exporter.logged("replSetGetConfig failed", log_mark), exporter.log_text
    assert exporter.stop() == 0
    check_no_password_anywhere(exporter)


def test_a_rolling_upgrade_from_7_0_to_8_0_stays_green_and_ends_with_the_8_0_fields(running: Case) -> None:
    rs, exporter, names = running.rs, running.exporter, running.names
    assert exporter is not None
    log_mark = len(exporter.lines())
    rs.set_lag(2, 1_500)
    look = after_the_next_polls(exporter, lambda look: "lag 1500ms" in member_line(look, names[2]), "1500 ms")
    assert look.metrics.series("mongodb_replication_written_lag_seconds") == []  # 7.0 has no written optimes

    # Secondaries first (each restarts and drops its connections), then the primary steps down to an upgraded
    # member and is upgraded itself, then the arbiter: the order of MongoDB's upgrade procedure.
    for step in (lambda: rs.set_version("8.0", 1), lambda: rs.set_version("8.0", 2), lambda: rs.elect(1)):
        step()
        after_the_next_polls(exporter, lambda look: True, "a poll after the step")
    after_the_next_polls(exporter, lambda look: f"\n- Primary {names[1]} " in look.action_body, "new primary")
    rs.set_version("8.0", 0)
    rs.set_version("8.0", 3)
    rs.set_lag(2, 1_500, written_ms=200)
    look = after_the_next_polls(
        exporter,
        lambda look: look.metrics.value("mongodb_replication_written_lag_seconds", member=names[2]) is not None,
        "the 8.0 written lag",
    )
    assert look.metrics.value("mongodb_replication_written_lag_seconds", member=names[2]) == 0.2
    assert look.metrics.value("mongodb_replication_lag_seconds", member=names[2]) == 1.5  # applied is the lag

    assert not exporter.logged("collection failed", log_mark), exporter.log_text
    assert exporter.stop() == 0
    check_no_password_anywhere(exporter)


def test_a_deadline_the_driver_enforces_itself_is_a_timeout_not_an_error() -> None:
    """What the primary-hung row met: a retry with too little of the deadline left, refused by pymongo itself."""
    error = ExecutionTimeout("operation would exceed time limit, remaining timeout:0.00100 <= RTT:0.00200", 50)
    kind, message = classify(error, TIMEOUT_S, str)
    assert (kind, message) == ("timeout", f"the poll did not finish within its {TIMEOUT_S:g} s deadline")
