"""The contracts every module shares: why a poll failed, what lag is measured against, the kinds of facts the
engine hands its readers (enums), and how old data may be before it is stale.

PURE and imports nothing of ours. Adding a failure kind is one edit here: its liveness meaning travels with it,
metrics zero-initialise every kind, and /liveness judges every kind by that meaning (tests/test_kinds.py).
"""

from __future__ import annotations

from enum import StrEnum

# Data older than 3 minutes is stale: RED in the document, 503 on /liveness. The user's rule; `config` refuses a
# poll interval that could not keep a healthy set's data younger than this.
FRESHNESS_LIMIT_S = 180


class FailureKind(StrEnum):
    """Why a poll produced no snapshot. The value is what readers show (`kind="auth"` in metrics and JSON).

    `stops_collecting`: the exporter cannot do its job now (no connection, refused credentials, not a replica
    set), so /liveness is 503 at once. The other kinds (a missed deadline, an odd answer) are RED in the
    document, but /liveness waits for the data to go stale: a primary that hangs for a few seconds must not get
    the exporter restarted.
    """

    stops_collecting: bool

    def __new__(cls, value: str, stops_collecting: bool) -> FailureKind:
        kind = str.__new__(cls, value)
        kind._value_ = value
        kind.stops_collecting = stops_collecting
        return kind

    AUTH = "auth", True  # wrong user name, password or authSource (code 18)
    UNAUTHORIZED = "unauthorized", True  # logged in, but a role is missing (code 13)
    NOT_REPLICA_SET = "not_replica_set", True  # a standalone, an uninitialised set, a mongos, another set
    TIMEOUT = "timeout", False  # the poll did not finish within its deadline
    UNREACHABLE = "unreachable", True  # no member could be reached
    ERROR = "error", False  # anything else the server or the driver said


class Reference(StrEnum):
    """What a set's lag is measured against (docs/domain.md §4)."""

    PRIMARY = "primary"
    FRESHEST = "freshest"  # no primary: the healthy data-bearing member with the newest optime
    NONE = ""  # no member to measure against


class NoteKind(StrEnum):
    """The kinds of facts the engine states about a member or a set. Readers choose by kind, never by words."""

    # Why a member is not GREEN.
    BEHIND = "behind"  # values: lag_ms, reference, reference_member, delay_ms
    DOWN = "down"  # not healthy; values: message
    NO_HEALTH = "no_health"
    NO_STATE = "no_state"
    STATE = "state"  # a non-data state such as RECOVERING; values: state, message
    NO_OPTIME = "no_optime"
    NO_COMPARABLE_TIME = "no_comparable_time"
    # Facts beside the lag that do not change a colour.
    APPLY_BOTTLENECK = "apply_bottleneck"  # 8.0: written far less behind than applied; values: written_lag_ms
    OPLOG_FALLBACK = "oplog_fallback"  # the exact measure could not be used; values: problem, source
    HEADROOM_LOW = "headroom_low"  # values: headroom_ms, window_ms, source
    INITIAL_SYNC = "initial_sync"  # values: progress, remaining_ms
    DANGER_UNREAD = "danger_unread"  # the oplog window (or initial sync) could not be read; values: why
    # Facts about the whole set.
    SEVERAL_PRIMARIES = "several_primaries"  # values: count, chosen
    CONFIG_UNREADABLE = "config_unreadable"
    DUPLICATE_NAME = "duplicate_name"  # members report one name; values: name, shown_as
    NO_DATE = "no_date"
    MAJORITY_COMMIT_LAG = "majority_commit_lag"  # values: lag_ms
    FLOW_CONTROL_ENGAGED = "flow_control_engaged"  # values: target_rate
    PRIVILEGE_MISSING = "privilege_missing"  # a read was refused; the text says what to grant


class SetRole(StrEnum):
    """What a replica set is to the cluster the exporter watches (docs/domain.md §11)."""

    REPLICA_SET = "replica_set"  # the URI named a replica set: the cluster is that one set
    SHARD = "shard"  # a shard of a sharded cluster
    CONFIG = "config"  # the config server set (from 8.0 it may hold data too: a config shard)
