# Rust builder for the project's Dockerfile (its RUST_IMAGE), standing in for
# rust:*-slim-bookworm: the host's rustup toolchain (rustup/ and cargo-bin/ in
# the build context, made by tests/deploy/compose-test.sh), gcc and libc for
# linking and the build scripts, and the host's extra CA certificates (ca/),
# which a TLS-intercepting proxy to the crate registry needs.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY rustup/ /usr/local/rustup/
COPY cargo-bin/ /usr/local/cargo/bin/
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version
