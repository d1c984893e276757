"""A two-cloud sharded cluster with one cloud cut off, as on-call sees it: the Zero Problem document's actionBody
and the status page (issue 24). Two shards and the config servers, members 0 and 1 of each set tagged cloud aws
(ap-northeast-2), member 2 cloud gcp (asia-northeast3); then every gcp member is taken down.

    .venv/bin/python -m bench.topology [--page out.html]

Prints the document's actionBody after the outage; with --page, writes the status page for a browser to show.
Everything runs on the simulator (mongosim), in-process, on the cluster's own manual clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

import bridge  # noqa: E402
from mongosim import ManualClock, ShardedCluster  # noqa: E402
from replicationlag.config import load_settings  # noqa: E402
from replicationlag.service import build_service  # noqa: E402

NOW_MS = 1_765_000_000_000
CLOUDS = (
    {"cloud": "aws", "region": "ap-northeast-2"},
    {"cloud": "aws", "region": "ap-northeast-2"},
    {"cloud": "gcp", "region": "asia-northeast3"},
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path, help="write the status page here")
    args = parser.parse_args()
    clock = ManualClock(NOW_MS)
    cluster = ShardedCluster(2, clock=clock).start()
    try:
        sets = [cluster.shard("shard01"), cluster.shard("shard02"), cluster.config]
        for each in sets:
            for member, tags in enumerate(CLOUDS):
                each.set_tags(member, tags)
        cluster.shard("shard01").set_lag(1, 6_200)
        argv = ["--mongodb.uri", cluster.uri, "--collect.interval", "60", "--collect.timeout", "5"]
        argv += ["--web.listen-address", "127.0.0.1:0", "--topology.tags", "cloud,region"]
        argv += ["--web.external-url", "https://lag.example.com/"]
        monotonic = [1000.0]
        service = build_service(
            load_settings(argv, env={}), bridge, monotonic=lambda: monotonic[0], wall_ms=clock.now_ms
        )
        threading.Thread(target=service.server.run, daemon=True).start()
        try:
            service.poll()
            for each in sets:
                each.take_down(2)
            for _ in range(3):
                clock.advance(60_000)
                monotonic[0] += 60
                service.poll()
            document = bridge.status_document(service.store.view(), "https://lag.example.com/")
            body = document[bridge.SERVICE_ID]["messages"][0]["actionBody"]
            print(json.dumps({"status": document[bridge.SERVICE_ID]["status"]}))
            print(body)
            print(f"-- {len(body)} characters, {len(body.splitlines())} lines")
            if args.page:
                from replicationlag.web.page import render_status_page

                args.page.write_text(render_status_page(service.store.view(), document_path=bridge.PATH))
        finally:
            service.stop()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
