# extauthz-server image: the package and its runtime dependencies, nothing else.
#
#   docker build -t extauthz-server .
#   docker run --read-only -p 9191:9191 -p 8181:8181 \
#     -v "$PWD/examples/config.yaml:/etc/extauthz/config.yaml:ro" \
#     -e EXTAUTHZ_CLIENT_SECRET=... extauthz-server
#
# The builder turns the project and every dependency into wheels; the runtime stage
# installs those wheels offline, so it carries no build tools, no source tree and no pip
# cache. At run time nothing is written to the file system (no bytecode, no temp files),
# so the container runs with a read-only root (`--read-only`, readOnlyRootFilesystem).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY extauthz_server ./extauthz_server
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels extauthz-server \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin extauthz
# A numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /etc/extauthz
# 9191: gRPC Check and grpc.health.v1 (h2c); 8181: /healthz, /readyz, /metrics;
# 8282: /backchannel-logout when server.logout_listen is set (examples/config.yaml does).
EXPOSE 9191 8181 8282
# The slim image has no curl; /healthz is liveness (the process answers), not readiness.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8181/healthz', timeout=2)"]
ENTRYPOINT ["extauthz-server"]
CMD ["--config", "/etc/extauthz/config.yaml"]
