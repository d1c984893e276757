"""The soak of bench/soak.py, short: the exporter under random faults and continuous scrapes does not grow. The
limits are counts and a ratio the script reports (RSS growth after warm-up under 5 %, no more threads, no more
descriptors, no scrape failing or timing out), not timings. bench/SOAK.md has the 10-minute figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from service_util import ROOT

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

# Every kind of fault in the warm-up, then random ones. Polls every 0.5 s: as many polls as 60 s at the soak's
# default 1 s, which is what can leak (a client, a thread, a connection per poll or per fault).
SOAK_S, INTERVAL_S, TIMEOUT_S = 30, 0.5, 0.3


@pytest.mark.timeout(SOAK_S * 6)  # the run itself is bounded at SOAK_S * 4
def test_a_short_soak_under_random_faults_and_scrapes_grows_neither_memory_threads_nor_descriptors():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            *("--seconds", str(SOAK_S), "--interval", str(INTERVAL_S), "--timeout", str(TIMEOUT_S), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=SOAK_S * 4,
        cwd=ROOT,
        check=False,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    start, end = report["start"], report["end"]
    assert report["rss_growth_pct"] < 5, report
    assert end["threads"] <= start["threads"], report
    assert end["fds"] <= start["fds"], report
    assert report["scrape_errors"] == [], report
    assert set(report["faults_injected"]) == set(report["faults_known"]), report  # every kind was injected
    assert report["limits"]["clean_exit"], report
    assert result.returncode == 0, report
