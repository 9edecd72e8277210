# Stand-in for the haproxy image of docker-compose.yml, made from Debian's
# HAProxy (2.6) because the deployment test reaches no registry. Like the
# official image it reads /usr/local/etc/haproxy/haproxy.cfg, runs in the
# foreground as the haproxy user and logs to stdout.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy
USER haproxy
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
