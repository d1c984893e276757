# replicationlag exporter image: `docker build -t replicationlag:0.2.0 .`, the version of replicationlag/version.py,
# which the Kubernetes manifests ask for (docker-compose.yml builds it for you).
# Two stages: the first installs the pinned requirements from wheels only (no compiler, no build tools) into a
# virtual environment; the final image gets that environment, our modules and the simulator package for `--demo`
# (.dockerignore is an allow-list), runs as an unprivileged user and is checked with /-/healthy (200 while the
# process serves: an unreachable cluster is no reason to restart it; /liveness is Zero Problem's). It runs with a read-only root filesystem and no capabilities (as the Kubernetes
# manifests of deploy/kubernetes ask); tests/test_ops_image.py builds it and runs it so, where an engine can start.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY constraints.txt requirements.txt /tmp/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: --no-compile -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="replicationlag" \
      org.opencontainers.image.description="MongoDB replica-set replication lag in exact milliseconds, for Zero Problem and Prometheus"
# A fixed uid: docker/prepare.sh hands the exporter its config file as 10001, mode 0400.
RUN groupadd --system --gid 10001 replicationlag \
 && useradd --system --uid 10001 --gid replicationlag --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin replicationlag
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY exporter.py bridge.py ./
COPY replicationlag/ ./replicationlag/
COPY mongosim/ ./mongosim/
USER 10001:10001
EXPOSE 9218
# urlopen raises on an error status or no answer within 4 s, and python then exits 1: unhealthy. No curl in the
# image. With TLS on (--web.config.file), run the container with HEALTHCHECK_URL=https://127.0.0.1:9218/-/healthy
# (and list /-/healthy in basic_auth_excluded_paths when users are required); this local check skips certificate
# verification (it talks to its own container's loopback). Another port: HEALTHCHECK_URL too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request as r; r.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:9218/-/healthy'), timeout=4, context=ssl._create_unverified_context())"]
# Exec form: python is PID 1 (or tini's child with `init: true`) and gets SIGTERM itself; the exporter stops
# cleanly on it within 2 s.
ENTRYPOINT ["python", "exporter.py"]
CMD ["--config.file", "/etc/replicationlag/replicationlag.toml"]
