# Signal Manager container image.
#
#   docker build -t signal-manager-service:local .
#
# Stage "plan" reduces the Cargo workspace to a skeleton (manifests of the
# root package and of every member under crates/, the lock file, empty
# stubs); stage "build" compiles the dependencies from that skeleton, in a
# layer that is rebuilt only when a manifest or Cargo.lock changes, then
# compiles the release binary from the real sources. Stage "runtime" is
# debian:bookworm-slim with a non-root user, the binary, a default
# configuration and a curl-free health check.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS plan
COPY . /src
RUN sh /src/deploy/docker/skeleton.sh /src /skeleton

FROM ${RUST_IMAGE} AS build
WORKDIR /app

# 1. Dependencies only. The skeleton's files have the same content whenever
#    the manifests do, so this layer stays cached across source edits.
COPY --from=plan /skeleton/ ./
RUN cargo build --release --locked --bin signal-manager-service

# 2. The workspace itself. The real sources replace the stubs; touching them
#    makes them newer than the stubs' build, so cargo rebuilds every member
#    of the workspace whatever the timestamps in the build context.
COPY . .
RUN find . -path ./target -prune -o -type f -exec touch {} + \
 && cargo build --release --locked --bin signal-manager-service \
 && install -D -m 0755 target/release/signal-manager-service /out/signal-manager-service

FROM ${RUNTIME_IMAGE} AS runtime

# ca-certificates for https OTLP collectors; nothing else is added: the health
# check uses bash, which the slim image has, and preStop hooks use /bin/sleep.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 signal-manager \
 && useradd --system --uid 10001 --gid signal-manager \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin signal-manager

COPY --from=build /out/signal-manager-service /usr/local/bin/signal-manager-service
COPY deploy/docker/config.toml /etc/signal-manager/config.toml
COPY deploy/docker/healthcheck.sh /usr/local/bin/sm-healthcheck
RUN chmod 0755 /usr/local/bin/sm-healthcheck

# Numeric, so Kubernetes can check runAsNonRoot without looking the name up.
USER 10001:10001

# 8080: WebSocket signaling. 9090: admin HTTP (/healthz, /readyz, /metrics).
EXPOSE 8080 9090

HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/sm-healthcheck", "/readyz"]

# SIGTERM starts a drain; the process exits 0 within server.drain_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/signal-manager-service"]
CMD ["--config", "/etc/signal-manager/config.toml"]
