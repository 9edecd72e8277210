# Signal Manager container image.
#
#   docker build -t signal-manager-service:local .
#
# Stage "build" compiles a release binary; the dependency layer is cached
# apart from the sources, so editing code recompiles only this crate. Stage
# "runtime" is debian:bookworm-slim with a non-root user, the binary, a
# default configuration and a curl-free health check.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /app

# 1. Dependencies only: a skeleton crate with the real manifest and lock file.
COPY deploy/docker/skeleton.sh /usr/local/bin/skeleton
COPY Cargo.toml Cargo.lock ./
RUN sh /usr/local/bin/skeleton Cargo.toml \
 && cargo build --release --locked \
 && rm -rf src

# 2. The crate itself. Forget the skeleton's own artefacts so cargo rebuilds
#    the crate from the real sources whatever their timestamps.
COPY . .
RUN rm -f Cargo.toml.orig \
 && rm -rf target/release/.fingerprint/signal-manager-service-* \
           target/release/deps/signal_manager_service-* \
           target/release/deps/libsignal_manager_service-* \
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
