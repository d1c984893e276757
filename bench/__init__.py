"""Benchmarks against the peer (issue 8): run with `./run bench`. Not part of the test suite."""
