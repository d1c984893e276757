"""The words people read, in one place: what the Zero Problem document, the status page, the log and the engine's
notes say the same way (durations today; the shared sentences of the document and the page as they move here).

PURE: no I/O, no clock. Imports `model` only.
"""

from __future__ import annotations


def duration_words(ms: int) -> str:
    """A duration as people say it: `45 s`, `12 min`, `5 h 12 min`, `3 d 4 h`."""
    seconds = max(0, ms) // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
