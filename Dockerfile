# syntax=docker/dockerfile:1
#
# mstc-cloud-worker: the queue-to-Job handler.
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t mstc/mstc-cloud-worker:0.1.0 .
#
# Two stages: the builder turns the project into a wheel and installs it, with its
# dependencies, into a virtualenv; the final image gets only that virtualenv on a slim
# Python, so no compiler, pip cache or source tree ships. Both stages use the same base
# image, so the virtualenv's interpreter path stays valid.

ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Only what the wheel is built from (see .dockerignore).
COPY pyproject.toml README.md LICENSE ./
COPY handler ./handler
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="mstc-cloud-worker" \
      org.opencontainers.image.description="Consumes work requests from RabbitMQ, runs each as a Kubernetes Job, replies with a CloudEvent." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# A named account for tools that look the user up; the chart runs as this UID too.
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin worker
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz.
ENTRYPOINT ["cloud-worker"]
CMD ["consume"]
