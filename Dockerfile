# syntax=docker/dockerfile:1
# One image for the webrelease operator and its shard pods (docs/design.md "Interfaces"): `webrelease operator` runs the
# control plane, `webrelease shard` (what the operator puts in the Job) runs one shard.
#
# Runs as UID/GID 65532 (non-root, numeric, no passwd entry needed), with a read-only root filesystem:
# the only writable path it needs is /tmp (an emptyDir in the chart). Bytecode is compiled at build time.
#
# Base image: pinned to an exact Python patch release. A release build pins the digest as well by
# passing --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> (docs/install.md).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: build the wheel, install it with its dependencies into a self-contained venv ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY copier/ copier/
COPY operator/ operator/
# The operator and sql extras: one image serves the control plane and the data plane.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/webrelease \
    && /opt/webrelease/bin/pip install --no-cache-dir --compile "$(ls /wheels/webrelease-*.whl)[operator,sql]" \
    && /opt/webrelease/bin/pip uninstall --yes pip \
    && /opt/webrelease/bin/webrelease --help > /dev/null

# ---- final: the base image plus the venv; no compilers, no pip caches, no sources ---------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="webrelease" \
      org.opencontainers.image.description="Release a web build to every customer's own S3 site (operator and shard pods)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/webrelease/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
COPY --from=builder /opt/webrelease /opt/webrelease
WORKDIR /tmp
USER 65532:65532
ENTRYPOINT ["webrelease"]
CMD ["--help"]
