# syntax=docker/dockerfile:1
# The images of docker-compose.yml (BuildKit, the default builder since Docker 23):
# - target runtime (the last stage, the default): one image for every Python process of the stack
#   (blog, orders, orders-worker, stream, and libs/devservers' payment sandbox and SMTP sink); compose
#   picks the console script with `command:`. The builder resolves the committed uv.lock into a
#   virtualenv; the runtime copies only that venv onto a slim Python.
# - target kafka: the Apache Kafka broker, built only when that target is asked for.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9
# The release deploy/kafka/pom.xml pins (kafka.version) for the local stack and the tests.
ARG KAFKA_VERSION=4.1.1

# The official apache/kafka image plus the Prometheus JMX exporter java agent, at the version
# deploy/kafka/pom.xml pins (jmx_prometheus_javaagent), fetched from Maven Central when the image is
# built and verified against its SHA-256 (nothing is fetched when the container starts). Its rules file,
# deploy/kafka/jmx-exporter.yml, is mounted by compose; the agent is loaded by the broker's command line.
FROM apache/kafka:${KAFKA_VERSION} AS kafka
ADD --chmod=444 \
    --checksum=sha256:7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1 \
    https://repo1.maven.org/maven2/io/prometheus/jmx/jmx_prometheus_javaagent/1.0.1/jmx_prometheus_javaagent-1.0.1.jar \
    /opt/jmx-exporter/jmx_prometheus_javaagent.jar

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ARG PYTHON_VERSION
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode compiled at build time (fast start), real copies rather than links into the cache mount,
# and the system Python of this image only (the runtime stage has the same one at the same path).
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python${PYTHON_VERSION} \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Third-party dependencies first, from the lock and the package manifests only: this layer is reused
# until uv.lock or a pyproject.toml changes, not on every source edit.
COPY pyproject.toml uv.lock ./
COPY libs/asynccore/pyproject.toml libs/asynccore/
COPY libs/contracts/pyproject.toml libs/contracts/
COPY libs/crawler/pyproject.toml libs/crawler/
COPY libs/devservers/pyproject.toml libs/devservers/
COPY services/blog/pyproject.toml services/blog/
COPY services/orders/pyproject.toml services/orders/
COPY services/stream/pyproject.toml services/stream/
COPY loadtests/pyproject.toml loadtests/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package blog --package orders --package stream --package devservers

# Then the workspace's own packages, installed as real wheels (not editable links to /src) so the
# runtime stage needs nothing but the venv. loadtests is a workspace member but not a service.
COPY libs/asynccore libs/asynccore
COPY libs/contracts libs/contracts
COPY libs/crawler libs/crawler
COPY libs/devservers libs/devservers
COPY services/blog services/blog
COPY services/orders services/orders
COPY services/stream services/stream
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package blog --package orders --package stream --package devservers

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data
# Root-owned and read-only for the service user: the code cannot be rewritten at run time.
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER app
# /data (owned by the service user) holds the blog's SQLite file (BLOG_DB_PATH); compose mounts a
# named volume there, which starts with this ownership.
CMD ["blog"]
