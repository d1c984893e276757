"""The exporter's version: `--version`, the `mongodb_replication_exporter_build_info` metric and the package
(pyproject.toml reads it from here). Imports nothing."""

VERSION = "0.2.0"
