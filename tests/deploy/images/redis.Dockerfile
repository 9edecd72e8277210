# Stand-in for the redis:7 image of docker-compose.yml, made from Debian's
# redis-server (7.0) because the deployment test reaches no registry. Like the
# official image it runs redis-server as the redis user.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/*
USER redis
WORKDIR /var/lib/redis
CMD ["redis-server"]
