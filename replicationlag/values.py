"""Values as pymongo hands them over, read by their shape so that the pure core needs no third-party package:
finite numbers BSON can carry, text, and BSON dates (datetime, or bson.DatetimeMS) in ms since the epoch.

PURE: imports nothing of ours and no third-party package.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import UTC, datetime
from typing import Any

# Timestamps and dates pymongo may hand over; naive datetimes are UTC (pymongo's default codec options).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_INT64_MAX = 2**63 - 1


def as_number(value: Any) -> int | float | None:
    """A finite int or float that BSON can carry (Int64 is an int); bools, strings and the rest are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and abs(value) > _INT64_MAX:
        return None
    return value


def as_int(value: Any) -> int | None:
    found = as_number(value)
    return None if found is None else int(found)


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def bson_ms(value: Any) -> int | None:
    """Milliseconds since the epoch of a BSON date, or None when `value` is no date."""
    if isinstance(value, datetime):
        epoch = _EPOCH if value.utcoffset() is not None else _EPOCH_NAIVE
        delta = value - epoch
        # Integer arithmetic: BSON dates are whole ms, and float seconds would round some of them.
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if callable(getattr(value, "as_datetime", None)) and not isinstance(value, bool):
        # bson.DatetimeMS, which pymongo returns for dates a datetime cannot hold (DATETIME_AUTO).
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def date_ms(value: Any) -> int | None:
    """A BSON date after the epoch, in ms (an oplog entry's `wall`, a status `date`). Down members report the
    epoch (or earlier): that is no date."""
    ms = bson_ms(value)
    return ms if ms is not None and ms > 0 else None


def clean_text(value: Any, limit: int) -> str:
    """A server's string as data: control and format characters (line breaks, bidirectional marks, zero-width
    characters) dropped and cut to `limit` characters; "" for anything that is not a string."""
    if not isinstance(value, str):
        return ""
    kept = "".join(c for c in value[: limit * 4] if unicodedata.category(c) not in {"Cc", "Cf", "Zl", "Zp"})
    return kept[:limit]
