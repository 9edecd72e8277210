#!/bin/bash
# Container health check without curl: asks the node's admin endpoint over
# bash's /dev/tcp and succeeds only on an HTTP 200.
#
#   sm-healthcheck [PATH] [PORT]
#
# PATH defaults to /readyz (503 while draining or while Redis is unreachable),
# PORT to $SIGNAL_MANAGER_ADMIN_PORT or 9090.
set -euo pipefail

path="${1:-/readyz}"
port="${2:-${SIGNAL_MANAGER_ADMIN_PORT:-9090}}"

exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3<&-

case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "admin ${path} on port ${port}: ${status:-no answer}" >&2
exit 1
