#!/bin/bash
# Container health check without curl: asks the node's admin endpoint over
# bash's /dev/tcp and succeeds only on an HTTP 200.
#
#   sm-healthcheck [PATH] [PORT]
#
# PATH defaults to /readyz (503 while draining or while Redis is unreachable).
# The admin address is the node's own, found as the node finds it:
# SIGNAL_MANAGER_ADMIN_HOST / SIGNAL_MANAGER_ADMIN_PORT, else the [admin]
# section of the configuration file (SM_HEALTHCHECK_CONFIG, default the
# image's /etc/signal-manager/config.toml), else 127.0.0.1:9090. A PORT
# argument beats all of them. A wildcard host (0.0.0.0, ::) is probed on
# loopback.
set -euo pipefail

path="${1:-/readyz}"
config="${SM_HEALTHCHECK_CONFIG:-/etc/signal-manager/config.toml}"

# admin_key KEY: the value of KEY in the [admin] section of $config, if any.
admin_key() {
  [ -r "$config" ] || return 0
  awk -v key="$1" '
    /^[[:space:]]*\[/ {
      section = $0
      gsub(/[[:space:]]|#.*/, "", section)
      next
    }
    section == "[admin]" && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      value = $0
      sub(/^[^=]*=[[:space:]]*/, "", value)
      sub(/[[:space:]]*(#.*)?$/, "", value)
      gsub(/^"|"$/, "", value)
      print value
      exit
    }
  ' "$config"
}

host="${SIGNAL_MANAGER_ADMIN_HOST:-$(admin_key host)}"
port="${2:-${SIGNAL_MANAGER_ADMIN_PORT:-$(admin_key port)}}"
host="${host:-127.0.0.1}"
port="${port:-9090}"
host="${host#[}"
host="${host%]}"
case "$host" in
  0.0.0.0) host=127.0.0.1 ;;
  ::) host=::1 ;;
esac

if ! exec 3<>"/dev/tcp/${host}/${port}"; then
  echo "admin ${path} on ${host}:${port}: cannot connect" >&2
  exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3<&-

case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "admin ${path} on ${host}:${port}: ${status:-no answer}" >&2
exit 1
