"""A member's logical initial sync: how far it got at a given instant, and the `initialSyncStatus` it reports.

The member clones one database, `app`, holding one collection, `app.events`, of `total_bytes` bytes in documents
of 512 bytes, from its sync source at `bytes_per_s`. Progress is a pure function of the clock, so a test knows
the exact numbers: after `e` ms, `documentsCopied` = min(documents, e x bytes_per_s // (1000 x avgObjSize)) and
`approxTotalBytesCopied` = documentsCopied x avgObjSize (the server's own approximation, avgObjSize x documents
copied). `remainingInitialSyncEstimatedMillis` is the server's formula, computed in doubles as it does:
elapsed / copied x (total - copied), truncated, and absent while nothing is copied. When the last document is
copied the sync is done (the oplog-application phase takes no time here) and the member becomes SECONDARY.

Field sets per version, from mongod's InitialSyncer::_appendInitialSyncProgressMinimal_inlock and the manual:
4.4.3+ and 5.0 add `totalInitialSyncElapsedMillis`, `approxTotalDataSize`, `approxTotalBytesCopied`,
`remainingInitialSyncEstimatedMillis`, `databases.databasesToClone` and per collection `bytesToCopy` /
`approxBytesCopied` (SERVER-47863); 5.2+ starts the document with `method: "logical"`. 4.0 reports the older,
smaller document, and only when asked with `initialSync: 1`.

Imports `bson` and `.wire` (`.model` for type checking only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bson import Int64, Timestamp
from bson.datetime_ms import DatetimeMS

from .wire import append_number as number

if TYPE_CHECKING:
    from .model import Profile

DOC_BYTES = 512  # size of one cloned document
BATCH_BYTES = 16 * 1024 * 1024  # one cloner batch (a 16 MB getMore reply)
MAX_FAILED_ATTEMPTS = 10  # numInitialSyncAttempts
DATABASE, COLLECTION = "app", "app.events"


@dataclass(frozen=True)
class InitialSync:
    """One initial sync in progress: when it began, how much it copies, how fast, from whom."""

    start_ms: int
    total_bytes: int
    bytes_per_s: int
    source_id: int
    oplog_start_n: int  # ordinal of the sync source's last applied entry at the start (initialSyncOplogStart)

    def __post_init__(self) -> None:
        if self.total_bytes <= 0 or self.bytes_per_s <= 0:
            raise ValueError("an initial sync needs total_bytes > 0 and bytes_per_s > 0")

    @property
    def documents(self) -> int:
        return -(-self.total_bytes // DOC_BYTES)

    @property
    def avg_obj_size(self) -> int:
        return self.total_bytes // self.documents

    @property
    def done_ms(self) -> int:
        """The first instant every document is copied."""
        return self.start_ms + -(-(self.documents * self.avg_obj_size * 1000) // self.bytes_per_s)

    def documents_copied(self, now: int) -> int:
        elapsed = max(0, now - self.start_ms)
        return min(self.documents, elapsed * self.bytes_per_s // (1000 * self.avg_obj_size))

    def bytes_copied(self, now: int) -> int:
        return self.documents_copied(now) * self.avg_obj_size

    def remaining_ms(self, now: int) -> int | None:
        """mongod's estimate: elapsed / copied x (total - copied), in doubles, truncated; None before any copy."""
        copied = self.bytes_copied(now)
        if copied <= 0:
            return None
        return int(float(now - self.start_ms) / float(copied) * float(self.total_bytes - copied))

    def status_document(self, now: int, p: Profile, oplog_start: Timestamp) -> dict[str, Any]:
        """replSetGetStatus.initialSyncStatus as the member running it reports it at `now` (before done_ms: at
        done_ms the member is already SECONDARY and reports none)."""
        copied = self.bytes_copied(now)
        modern = p.at_least("4.4")
        doc: dict[str, Any] = {"method": "logical"} if p.at_least("6.0") else {}
        doc["failedInitialSyncAttempts"] = 0
        doc["maxFailedInitialSyncAttempts"] = MAX_FAILED_ATTEMPTS
        doc["initialSyncStart"] = DatetimeMS(self.start_ms)
        if modern:
            doc["totalInitialSyncElapsedMillis"] = number(now - self.start_ms)
        doc["initialSyncAttempts"] = []
        if modern:
            doc["approxTotalDataSize"] = number(self.total_bytes)
            doc["approxTotalBytesCopied"] = number(copied)
            remaining = self.remaining_ms(now)
            if remaining is not None:
                doc["remainingInitialSyncEstimatedMillis"] = number(remaining)
        else:
            doc["fetchedMissingDocs"] = 0
        doc["appliedOps"] = 0  # the oplog-application phase comes after cloning, and takes no time here
        doc["initialSyncOplogStart"] = oplog_start
        if modern:
            doc["totalTimeUnreachableMillis"] = Int64(0)
        batches = -(-copied // BATCH_BYTES)
        collection: dict[str, Any] = {
            "documentsToCopy": number(self.documents),
            "documentsCopied": number(self.documents_copied(now)),
            "indexes": 1,
            "fetchedBatches": batches,
        }
        if modern:
            collection.update({"bytesToCopy": number(self.total_bytes), "approxBytesCopied": number(copied)})
        start = DatetimeMS(self.start_ms)
        collection.update({"start": start, "receivedBatches": batches})
        database = {"collections": 1, "clonedCollections": 0, "start": start, COLLECTION: collection}
        databases: dict[str, Any] = {"databasesToClone": 1} if modern else {}
        databases.update({"databasesCloned": 0, DATABASE: database})
        doc["databases"] = databases
        return doc
