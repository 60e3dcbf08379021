# ratewarden decision service: HTTP on 8787, Envoy RLS gRPC on 8081.
#   docker build -t ratewarden .
#   docker run -p 8787:8787 -p 8081:8081 -v "$PWD/ratewarden.toml:/etc/ratewarden/ratewarden.toml:ro" ratewarden
# Configuration by environment (see docs/service.md): RATEWARDEN_POLICY, RATEWARDEN_STORAGE,
# RATEWARDEN_WORKERS, RATEWARDEN_ADMIN_TOKEN, RATEWARDEN_LOG_FORMAT, ...

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# the project itself (this checkout; its dependencies are bounded in pyproject.toml), with the
# service and Redis extras, into a prefix copied below
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --prefix=/install ".[service,redis]"

FROM python:3.12-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ratewarden
COPY --from=build /install /usr/local
COPY deploy/ratewarden.toml /etc/ratewarden/ratewarden.toml
ENV RATEWARDEN_POLICY=/etc/ratewarden/ratewarden.toml \
    RATEWARDEN_HOST=0.0.0.0 \
    RATEWARDEN_PORT=8787 \
    RATEWARDEN_GRPC_PORT=8081 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 8787 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request as u; p = os.environ.get('RATEWARDEN_PORT', '8787'); sys.exit(0 if u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=2).status == 200 else 1)"]
# SIGTERM drains the requests in flight (RATEWARDEN_GRACEFUL_TIMEOUT, 10 s); SIGHUP reloads the policy
STOPSIGNAL SIGTERM
ENTRYPOINT ["ratewarden", "serve"]
