#!/bin/bash
# One-shot `prepare` service of docker-compose.yml, run as root before anything else; idempotent.
#  1. The replica set's shared keyfile (internal authentication; it also switches on access control): 756 random
#     bytes in base64, generated once and kept in its volume, owned by the mongodb user (uid 999), mode 0400.
#  2. A private copy of the exporter's config file (it holds the monitoring password) for the exporter's user
#     (uid 10001 in the Dockerfile), mode 0400, so the exporter does not warn about a file readable by others.
# The paths and owners can be changed through the environment (the tests run it on temporary folders).
set -euo pipefail

keyfile="${KEYFILE:-/run/mongo-keyfile/keyfile}"
keyfile_owner="${KEYFILE_OWNER:-999:999}"
config_source="${CONFIG_SOURCE:-/docker/replicationlag.toml}"
config_copy="${CONFIG_COPY:-/run/exporter-config/replicationlag.toml}"
config_owner="${CONFIG_OWNER:-10001:10001}"

if [ ! -s "$keyfile" ]; then
  umask 077
  head -c 756 /dev/urandom | base64 -w0 > "$keyfile.new"
  mv "$keyfile.new" "$keyfile"
  echo "prepare: generated the replica set keyfile"
fi
chown "$keyfile_owner" "$keyfile"
chmod 0400 "$keyfile"

install -o "${config_owner%%:*}" -g "${config_owner##*:}" -m 0400 "$config_source" "$config_copy.new"
mv -f "$config_copy.new" "$config_copy"
echo "prepare: exporter config in place"
