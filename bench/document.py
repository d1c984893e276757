"""The Zero Problem document of a large outage, measured: how long it is and how many lines, and the text itself.

A 100-shard cluster (3 members each, a 3-member config server set, one mongos) is simulated in this process
(mongosim.ShardedCluster); the exporter is the service as exporter.py builds it (`build_service`), given the
router's URI and --web.external-url. A zone outage: member 2 of every shard goes DOWN, and 30 shards' member 1
lags (10 RED, 20 YELLOW). Two polls a minute apart (the simulated clock and the store's both move), so the
document says since when. Run:

    .venv/bin/python -m bench.document [--shards 100] [--lagging 30]

It prints the actionBody, its length in characters and its line count, then what the last poll logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import bridge
from mongosim import ManualClock, ShardedCluster
from replicationlag import service as service_module
from replicationlag.config import load_settings

NOW_MS = 1_723_763_174_512
EXTERNAL_URL = "https://lag.example.com/"


class Clock:
    """The store's monotonic and wall clocks, moved with the simulated cluster's."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Kept(logging.Handler):
    """Keeps the poller's log lines of the last poll."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()} {record.getMessage()}")


def zone_outage(shards: int, lagging: int, kept: Kept) -> dict:
    clock = ManualClock(NOW_MS)
    cluster = ShardedCluster(shards, clock=clock).start()
    try:
        argv = ["--mongodb.uri", cluster.uri, "--collect.interval", "60", "--collect.timeout", "8"]
        argv += ["--web.listen-address", "127.0.0.1:0", "--web.external-url", EXTERNAL_URL]
        monotonic = Clock()
        # The exporter's wall clock is the cluster's: a status date and since when a problem lasts agree.
        built = service_module.build_service(
            load_settings(argv, env={}), bridge, monotonic=monotonic, wall_ms=clock.now_ms
        )
        try:
            built.poll()
            for number in range(1, shards + 1):
                shard = cluster.shard(f"shard{number:02d}")
                shard.take_down(2)
                if number <= lagging:
                    shard.set_lag(1, 45_000 - number * 500 if number <= lagging // 3 else 6_000 + number * 300)
            for _ in range(2):
                clock.advance(60_000)
                monotonic.now += 60
                kept.lines.clear()
                built.poll()
            return bridge.status_document(built.store.view(), EXTERNAL_URL)[bridge.SERVICE_ID]
        finally:
            built.stop()
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--lagging", type=int, default=30)
    args = parser.parse_args()
    kept = Kept()
    poller_log = logging.getLogger("replicationlag.poller")
    poller_log.addHandler(kept)
    poller_log.setLevel(logging.INFO)
    poller_log.propagate = False
    document = zone_outage(args.shards, args.lagging, kept)
    body = document["messages"][0]["actionBody"]
    print(body)
    print(f"\n# status {document['status']}: {len(body)} characters, {len(body.splitlines())} lines")
    print(f"# the log of the last poll ({len(kept.lines)} lines):")
    print("\n".join(kept.lines))
    json.dumps(document)  # it is a JSON document: it must serialise
    return 0


if __name__ == "__main__":
    sys.exit(main())
