#!/usr/bin/env python3
"""Assertions on rendered deployment files, used by scripts/validate-deploy.sh.

  check_rendered.py split RENDERED BUILTIN_OUT CRD_OUT
      Split a multi-document manifest: resources of custom resource
      definitions (ServiceMonitor) go to CRD_OUT, the rest to BUILTIN_OUT.
  check_rendered.py helm RENDERED [--image-config TOML] [--dockerfile FILE] [--replicas N]
                                  [--hpa] [--existing-secret NAME] [--no-secret]
                                  [--expect-kind KIND ...] [--no-pre-stop] [--jwks URL]
                                  [--turn SECRET] [--admin-api SECRET] [--redis-mode MODE]
                                  [--redis-tls ca|mtls|insecure] [--sentinel-password SECRET]
      Check a `helm template` output of the signal-manager chart: always
      the invariants (config keys, secrets, probes, drain timing, security
      context against the image), and with the options, that a feature the
      values turned on reaches the node.
  check_rendered.py compose CONFIG_JSON [--tracing] [--monitoring]
      Check `docker-compose config --format json` of docker-compose.yml.
  check_rendered.py metrics DASHBOARD_JSON PROMETHEUS_YML
      Check that the Grafana dashboard and Prometheus scrape config use the
      service's metric names and nodes.

Prints one line per failed assertion and exits 1 if any failed.
"""

import argparse
import base64
import json
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

import yaml

CRD_GROUPS = ("monitoring.coreos.com/",)

# Configuration keys a node accepts (docs: configuration contract), with the
# keys added with protocol version 1.1.
CONFIG_KEYS = {
    "server": {"host", "port", "max_connections", "heartbeat_interval", "connect_timeout",
               "drain_timeout", "rate_limit_per_second", "rate_limit_burst", "resume_window"},
    "auth": {"token_secret", "public_key_path", "issuer", "audience", "token_expiry", "leeway",
             "jwks_url", "jwks_refresh", "peers_claim", "require_peers_claim"},
    "cluster": {"redis_url", "node_id", "key_prefix", "presence_ttl", "delivery_timeout",
                "redis_mode", "redis_sentinel_master", "redis_sentinel_password",
                "redis_tls_ca_path", "redis_tls_cert_path", "redis_tls_key_path", "redis_tls_insecure"},
    "admin": {"host", "port", "api_token"},
    "logging": {"level", "format"},
    "telemetry": {"otlp_endpoint", "service_name", "sample_ratio"},
    "turn": {"urls", "stun_urls", "secret", "ttl"},
}
# Secret keys: never in the ConfigMap, always from a Secret.
SECRET_KEYS = {("auth", "token_secret"), ("cluster", "redis_url"), ("cluster", "redis_sentinel_password"),
               ("turn", "secret"), ("admin", "api_token")}
# At most one of these verifies tokens; a node on 0.0.0.0 needs one.
AUTH_SOURCES = ("token_secret", "public_key_path", "jwks_url")
ENV_PREFIX = "SIGNAL_MANAGER_"
DEFAULT_DRAIN_TIMEOUT = 10

# Metric families the service exports; histograms add _bucket/_sum/_count.
METRICS = {
    "connections": "gauge", "sessions": "gauge",
    "frames_received_total": "counter", "frames_sent_total": "counter",
    "signals_routed_total": "counter", "errors_total": "counter",
    "auth_failures_total": "counter", "disconnects_total": "counter",
    "slow_consumer_disconnects_total": "counter",
    "connect_duration_seconds": "histogram", "route_duration_seconds": "histogram",
    "cross_node_delivery_seconds": "histogram", "redis_command_duration_seconds": "histogram",
    "cross_node_signals_sent_total": "counter", "cross_node_signals_received_total": "counter",
    "publish_failures_total": "counter", "pubsub_probe_rtt_seconds": "histogram",
    "presence_refreshes_total": "counter", "presence_reregistrations_total": "counter",
    "redis_connected": "gauge", "draining": "gauge", "spans_dropped_total": "counter",
}
# What the dashboard must show.
DASHBOARD_REQUIRED = {
    "connections", "sessions", "signals_routed_total", "errors_total",
    "connect_duration_seconds", "route_duration_seconds", "cross_node_delivery_seconds",
    "redis_command_duration_seconds", "redis_connected", "publish_failures_total",
    "slow_consumer_disconnects_total", "auth_failures_total",
}
HISTOGRAM_QUANTILE_REQUIRED = {
    "connect_duration_seconds", "route_duration_seconds", "cross_node_delivery_seconds",
}


class Checker:
    def __init__(self):
        self.failures = []

    def check(self, cond, message):
        if not cond:
            self.failures.append(message)
        return cond

    def finish(self, what):
        for f in self.failures:
            print(f"  FAIL {what}: {f}")
        return 1 if self.failures else 0


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def is_crd_resource(doc):
    return str(doc.get("apiVersion", "")).startswith(CRD_GROUPS)


def cmd_split(args):
    docs = load_docs(args.rendered)
    builtin = [d for d in docs if not is_crd_resource(d)]
    crds = [d for d in docs if is_crd_resource(d)]
    with open(args.builtin_out, "w") as f:
        yaml.safe_dump_all(builtin, f, sort_keys=False)
    with open(args.crd_out, "w") as f:
        yaml.safe_dump_all(crds, f, sort_keys=False)
    return 0


def subset(small, big):
    return all(big.get(k) == v for k, v in (small or {}).items())


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def env_key(name):
    """SIGNAL_MANAGER_CLUSTER_REDIS_URL -> ("cluster", "redis_url"), as the node reads it."""
    section, _, key = name[len(ENV_PREFIX):].lower().partition("_")
    return section, key


def image_facts(config_path, dockerfile_path):
    """Ports and user of the container image, from its config.toml and Dockerfile."""
    facts = {"ws_port": 8080, "admin_port": 9090, "uid": 10001, "gid": 10001, "expose": None}
    if config_path:
        with open(config_path, "rb") as f:
            cfg = tomllib.load(f)
        facts["ws_port"] = cfg.get("server", {}).get("port", 8080)
        facts["admin_port"] = cfg.get("admin", {}).get("port", 9090)
    if dockerfile_path:
        with open(dockerfile_path) as f:
            lines = [line.strip() for line in f]
        runtime = lines[max(i for i, line in enumerate(lines) if line.upper().startswith("FROM ")):]
        users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
        if users:
            uid, _, gid = users[-1].partition(":")
            facts["uid"], facts["gid"] = int(uid), int(gid or uid)
        facts["expose"] = {int(p.split("/")[0]) for line in runtime if line.upper().startswith("EXPOSE ")
                           for p in line.split()[1:]}
    return facts


def file_in_volume(path, container, volumes):
    """True when PATH is a file of a read-only Secret or ConfigMap volume the container mounts."""
    for m in container.get("volumeMounts", []):
        base = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(base) or not m.get("readOnly"):
            continue
        source = volumes.get(m["name"], {})
        source = source.get("secret") or source.get("configMap")
        if source is None:
            continue
        items = source.get("items")
        return items is None or path[len(base):] in {i["path"] for i in items}
    return False


def cmd_helm(args):
    c = Checker()
    docs = load_docs(args.rendered)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    c.check(len(names) == len(docs), "two resources share a kind and name")

    for kind in args.expect_kind:
        c.check(by_kind(docs, kind), f"no {kind} rendered")

    # Every Deployment's selector selects its own pods.
    for d in by_kind(docs, "Deployment"):
        sel = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        c.check(subset(sel, labels), f"Deployment {d['metadata']['name']}: selector {sel} "
                                     f"does not match pod labels {labels}")

    nodes = [d for d in by_kind(docs, "Deployment")
             if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "signaling"]
    if not c.check(len(nodes) == 1, f"expected one signaling Deployment, found {len(nodes)}"):
        return c.finish("helm")
    dep = nodes[0]
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    container = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    env = {e["name"]: e for e in container.get("env", [])}

    # Other Deployments' pods must not be selected by the signaling selector.
    for other in by_kind(docs, "Deployment"):
        if other is not dep:
            c.check(not subset(dep["spec"]["selector"]["matchLabels"],
                               other["spec"]["template"]["metadata"]["labels"]),
                    f"signaling selector also matches pods of {other['metadata']['name']}")

    # Replicas / autoscaling.
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if args.hpa:
        c.check(len(hpas) == 1, "autoscaling on but no HorizontalPodAutoscaler")
        c.check("replicas" not in dep["spec"], "Deployment sets replicas although an HPA owns them")
        for h in hpas:
            c.check(h["apiVersion"] == "autoscaling/v2", "HPA is not autoscaling/v2")
            ref = h["spec"]["scaleTargetRef"]
            c.check(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"],
                    f"HPA targets {ref}, not the Deployment")
            c.check(h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"], "HPA minReplicas > maxReplicas")
    else:
        c.check(not hpas, "HorizontalPodAutoscaler rendered with autoscaling off")
        if args.replicas is not None:
            c.check(dep["spec"].get("replicas") == args.replicas,
                    f"replicas is {dep['spec'].get('replicas')}, expected {args.replicas}")

    # What the image needs (Dockerfile and its config.toml): the ports it
    # exposes and its config listens on, and the user it runs as.
    image = image_facts(args.image_config, args.dockerfile)
    c.check(ports.get("ws") == image["ws_port"] and ports.get("admin") == image["admin_port"],
            f"container ports are {ports}, the image's config listens on ws {image['ws_port']} "
            f"and admin {image['admin_port']}")
    if image["expose"] is not None:
        c.check({image["ws_port"], image["admin_port"]} <= image["expose"],
                f"the Dockerfile exposes {sorted(image['expose'])}, not the config's ports")

    # Probes: HTTP on the admin port, /healthz for liveness (a draining node
    # is alive), /readyz for readiness (a draining node leaves the endpoints).
    for name, path in (("readiness", "/readyz"), ("liveness", "/healthz")):
        probe = container.get(f"{name}Probe", {})
        get = probe.get("httpGet", {})
        c.check(get.get("path") == path, f"{name} probe path is {get.get('path')}, expected {path}")
        port = get.get("port")
        port = ports.get(port, port)
        c.check(port == image["admin_port"], f"{name} probe port is {get.get('port')}, not the admin port "
                                             f"{image['admin_port']}")
        c.check(get.get("scheme", "HTTP") == "HTTP", f"{name} probe scheme is {get.get('scheme')}")
        c.check(probe.get("timeoutSeconds", 1) <= probe.get("periodSeconds", 10),
                f"{name} probe timeout exceeds its period")

    # Configuration file.
    c.check(container.get("args") == ["--config", "/etc/signal-manager/config.toml"],
            f"container args are {container.get('args')}")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    secret_volumes = {n: v["secret"] for n, v in volumes.items() if "secret" in v}
    c.check("/etc/signal-manager/config.toml" in mounts, "config.toml is not mounted")
    config = None
    for cm in by_kind(docs, "ConfigMap"):
        if "config.toml" in cm.get("data", {}):
            try:
                config = tomllib.loads(cm["data"]["config.toml"])
            except tomllib.TOMLDecodeError as e:
                c.check(False, f"config.toml does not parse: {e}")
    if c.check(config is not None, "no ConfigMap with config.toml"):
        for section, keys in config.items():
            if c.check(section in CONFIG_KEYS, f"config.toml has unknown section [{section}]"):
                unknown = set(keys) - CONFIG_KEYS[section]
                c.check(not unknown, f"config.toml [{section}] has unknown keys {sorted(unknown)}")
        c.check(config.get("server", {}).get("host") == "0.0.0.0", "server.host is not 0.0.0.0")
        c.check(config.get("admin", {}).get("host") == "0.0.0.0", "admin.host is not 0.0.0.0")
        c.check(config.get("server", {}).get("port") == ports.get("ws"),
                f"server.port {config.get('server', {}).get('port')} is not the ws container port")
        c.check(config.get("admin", {}).get("port") == ports.get("admin"),
                f"admin.port {config.get('admin', {}).get('port')} is not the admin container port")
        ratio = config.get("telemetry", {}).get("sample_ratio")
        c.check(isinstance(ratio, float) and 0 <= ratio <= 1,
                f"telemetry.sample_ratio {ratio!r} is not a float in [0, 1]")
        for section, key in sorted(SECRET_KEYS):
            c.check(key not in config.get(section, {}), f"secret {section}.{key} written into the ConfigMap")
        auth = config.get("auth", {})
        for key in ("jwks_refresh",):
            if key in auth:
                c.check(isinstance(auth[key], int) and auth[key] > 0, f"auth.{key} {auth[key]!r} is not a positive integer")
        if "jwks_refresh" in auth:
            c.check("jwks_url" in auth, "auth.jwks_refresh written without auth.jwks_url")
        if "peers_claim" in auth:
            c.check(isinstance(auth["peers_claim"], str) and auth["peers_claim"],
                    f"auth.peers_claim {auth['peers_claim']!r} is not a claim name")
        if "require_peers_claim" in auth:
            c.check(isinstance(auth["require_peers_claim"], bool), "auth.require_peers_claim is not a boolean")
    config = config or {}

    # Every SIGNAL_MANAGER_* variable sets a key the node knows (a misspelt
    # one is only a warning at start-up, so the setting would be lost).
    env_keys = {}
    for name in env:
        if name.startswith(ENV_PREFIX):
            section, key = env_key(name)
            if c.check(key in CONFIG_KEYS.get(section, set()), f"environment variable {name} sets no known key"):
                env_keys[(section, key)] = env[name]
    for (section, key), e in env_keys.items():
        if (section, key) in SECRET_KEYS:
            c.check("secretKeyRef" in e.get("valueFrom", {}), f"{e['name']} does not come from a Secret")

    def configured(section, key):
        return key in config.get(section, {}) or (section, key) in env_keys

    # Exactly one way to verify tokens: two stop the node, none on 0.0.0.0 too.
    sources = [k for k in AUTH_SOURCES if configured("auth", k)]
    c.check(len(sources) == 1, f"tokens are verified with {sources or 'nothing'}; exactly one of "
                               f"{', '.join(AUTH_SOURCES)} is needed")
    # ICE servers: TURN URLs need the shared secret, which is useless without them.
    turn = config.get("turn", {})
    for key, schemes in (("urls", ("turn:", "turns:")), ("stun_urls", ("stun:", "stuns:"))):
        value = turn.get(key, [])
        c.check(isinstance(value, list) and all(isinstance(u, str) and u.startswith(schemes) for u in value),
                f"turn.{key} {value!r} is not a list of {'/'.join(schemes)} URLs")
    if "ttl" in turn:
        c.check(isinstance(turn["ttl"], int) and turn["ttl"] > 0, f"turn.ttl {turn['ttl']!r} is not a positive integer")
    c.check(bool(turn.get("urls")) == configured("turn", "secret"),
            f"turn.urls {turn.get('urls')!r} without the TURN secret, or the secret without URLs")
    if args.turn:
        c.check(turn.get("urls") and configured("turn", "secret"), "no TURN URLs with a secret reach the node")
        if args.turn != "chart":
            ref = env.get("SIGNAL_MANAGER_TURN_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
            c.check(ref.get("name") == args.turn, f"TURN secret comes from {ref.get('name')}, not {args.turn}")
    # Redis: the mode's requirements, from the rendered file and environment.
    cluster = config.get("cluster", {})
    mode = cluster.get("redis_mode", "standalone")
    c.check(mode in ("standalone", "sentinel", "cluster"), f"cluster.redis_mode {mode!r}")
    if mode != "standalone":
        c.check(configured("cluster", "redis_url"), f"redis_mode {mode} without cluster.redis_url")
    if mode == "sentinel":
        master = cluster.get("redis_sentinel_master")
        c.check(isinstance(master, str) and master, "sentinel mode without cluster.redis_sentinel_master")
    else:
        for key in ("redis_sentinel_master", "redis_sentinel_password"):
            c.check(not configured("cluster", key), f"cluster.{key} set in {mode} mode")
    c.check(configured("cluster", "redis_tls_cert_path") == configured("cluster", "redis_tls_key_path"),
            "a Redis client certificate without its key, or a key without its certificate")
    if "redis_tls_insecure" in cluster:
        c.check(isinstance(cluster["redis_tls_insecure"], bool), "cluster.redis_tls_insecure is not a boolean")
    if args.redis_mode:
        c.check(mode == args.redis_mode, f"redis mode is {mode}, expected {args.redis_mode}")
        c.check(configured("cluster", "redis_url"), "no Redis URL reaches the node")
    if args.redis_tls:
        want = {"ca": {"redis_tls_ca_path"},
                "mtls": {"redis_tls_ca_path", "redis_tls_cert_path", "redis_tls_key_path"},
                "insecure": {"redis_tls_insecure"}}[args.redis_tls]
        have = {k for k in ("redis_tls_ca_path", "redis_tls_cert_path", "redis_tls_key_path",
                            "redis_tls_insecure") if cluster.get(k)}
        c.check(have == want, f"Redis TLS settings are {sorted(have)}, expected {sorted(want)}")
    if args.sentinel_password:
        c.check(configured("cluster", "redis_sentinel_password"), "no Sentinel password reaches the node")
        if args.sentinel_password != "chart":
            ref = env.get("SIGNAL_MANAGER_CLUSTER_REDIS_SENTINEL_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {})
            c.check(ref.get("name") == args.sentinel_password,
                    f"Sentinel password comes from {ref.get('name')}, not {args.sentinel_password}")
    if args.admin_api:
        c.check(configured("admin", "api_token"), "no admin API token reaches the node")
        if args.admin_api != "chart":
            ref = env.get("SIGNAL_MANAGER_ADMIN_API_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
            c.check(ref.get("name") == args.admin_api,
                    f"admin API token comes from {ref.get('name')}, not {args.admin_api}")
    if args.jwks:
        c.check(config.get("auth", {}).get("jwks_url") == args.jwks,
                f"auth.jwks_url is {config.get('auth', {}).get('jwks_url')!r}, expected {args.jwks}")

    # Draining: grace period above preStop sleep + drain timeout.
    drain = (config or {}).get("server", {}).get("drain_timeout", DEFAULT_DRAIN_TIMEOUT)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = 0
    c.check(bool(pre_stop) != args.no_pre_stop,
            "no preStop hook: SIGTERM would arrive while the pod still gets new clients" if not pre_stop
            else "a preStop hook although preStopSleepSeconds is 0")
    if pre_stop:
        c.check(pre_stop[0] == "/bin/sleep" and len(pre_stop) == 2, f"preStop is {pre_stop}")
        sleep = int(pre_stop[-1])
    c.check(grace > drain, f"terminationGracePeriodSeconds {grace} <= drain timeout {drain}")
    c.check(grace > drain + sleep,
            f"terminationGracePeriodSeconds {grace} <= drain {drain} + preStop sleep {sleep}")

    # Pod wiring.
    c.check(spec.get("enableServiceLinks") is False, "enableServiceLinks is not false")
    node_id = env.get("SIGNAL_MANAGER_CLUSTER_NODE_ID", {})
    c.check(node_id.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
            "SIGNAL_MANAGER_CLUSTER_NODE_ID is not the pod name")
    # Every file the node is pointed at (public key, Redis CA, client
    # certificate and key) is in a read-only mounted volume that has it.
    paths = {f"{section}.{key}": value for section, keys in config.items() if isinstance(keys, dict)
             for key, value in keys.items() if key.endswith("_path")}
    paths.update({f"{s_}.{k}": e.get("value", "") for (s_, k), e in env_keys.items() if k.endswith("_path")})
    for key, path in paths.items():
        c.check(file_in_volume(path, container, volumes), f"{key} {path} is not a file of a read-only mounted volume")
    annotations = pod["metadata"].get("annotations", {})
    for a in ("checksum/config", "checksum/secret"):
        c.check(re.fullmatch(r"[0-9a-f]{64}", str(annotations.get(a, ""))), f"pod annotation {a} missing")

    # Security contexts: the image's user, nothing writable but emptyDirs.
    psc = spec.get("securityContext", {})
    csc = container.get("securityContext", {})

    def effective(key):
        return csc.get(key, psc.get(key))

    c.check(effective("runAsNonRoot") is True, "runAsNonRoot not set")
    c.check(effective("runAsUser") == image["uid"], f"runAsUser {effective('runAsUser')}, the image's user is {image['uid']}")
    c.check(effective("runAsGroup") == image["gid"], f"runAsGroup {effective('runAsGroup')}, the image's group is {image['gid']}")
    c.check(psc.get("fsGroup") == image["gid"], f"fsGroup {psc.get('fsGroup')}: mounted secrets (mode 0440) "
                                                f"would not be readable by group {image['gid']}")
    c.check(csc.get("readOnlyRootFilesystem") is True, "root filesystem is writable")
    c.check(csc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
    c.check(csc.get("privileged") is not True, "container is privileged")
    c.check("ALL" in csc.get("capabilities", {}).get("drop", []), "capabilities not dropped")
    c.check(not csc.get("capabilities", {}).get("add"), f"capabilities added: {csc.get('capabilities', {}).get('add')}")
    seccomp = csc.get("seccompProfile") or psc.get("seccompProfile") or {}
    c.check(seccomp.get("type") == "RuntimeDefault", "seccomp profile is not RuntimeDefault")
    c.check(spec.get("automountServiceAccountToken") is False, "a service account token is mounted")
    for m in container.get("volumeMounts", []):
        source = volumes.get(m["name"], {})
        if m.get("readOnly"):
            continue
        c.check("emptyDir" in source, f"{m['mountPath']} is writable but not an emptyDir")
        c.check("secret" not in source and "configMap" not in source,
                f"{m['mountPath']} mounts a Secret or ConfigMap writable")
    c.check(any(m["mountPath"] == "/tmp" and "emptyDir" in volumes.get(m["name"], {})
                for m in container.get("volumeMounts", [])), "/tmp is not a writable emptyDir")

    # Spread over hosts and zones.
    keys = {t["topologyKey"]: t for t in spec.get("topologySpreadConstraints", [])}
    for k in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
        if c.check(k in keys, f"no topology spread over {k}"):
            c.check(keys[k]["whenUnsatisfiable"] == "ScheduleAnyway", f"spread over {k} is not ScheduleAnyway")
            c.check(subset(keys[k]["labelSelector"]["matchLabels"], pod_labels),
                    f"spread over {k} does not select the pods")

    # Service.
    services = [s for s in by_kind(docs, "Service") if subset(s["spec"]["selector"], pod_labels)]
    if c.check(len(services) == 1, f"expected one Service selecting the nodes, found {len(services)}"):
        svc = services[0]
        svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
        c.check({"ws", "admin"} <= set(svc_ports), f"Service ports are {sorted(svc_ports)}")
        for p in svc_ports.values():
            c.check(p["targetPort"] in ports or p["targetPort"] in ports.values(),
                    f"Service port {p['name']} targets {p['targetPort']}, not a container port")
    else:
        svc = None

    # PodDisruptionBudget.
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        c.check(pdb["apiVersion"] == "policy/v1", "PDB is not policy/v1")
        c.check(subset(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PDB does not select the nodes")

    # ServiceMonitor (a CRD: not validated against Kubernetes schemas).
    for sm in by_kind(docs, "ServiceMonitor"):
        c.check(sm["apiVersion"] == "monitoring.coreos.com/v1", f"ServiceMonitor apiVersion {sm['apiVersion']}")
        sm_spec = sm.get("spec", {})
        allowed = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels",
                   "podTargetLabels", "sampleLimit"}
        c.check(set(sm_spec) <= allowed, f"ServiceMonitor spec has unexpected keys {sorted(set(sm_spec) - allowed)}")
        if svc is not None:
            c.check(subset(sm_spec.get("selector", {}).get("matchLabels"), svc["metadata"]["labels"]),
                    "ServiceMonitor selector does not match the Service labels")
        endpoints = sm_spec.get("endpoints", [])
        c.check(endpoints, "ServiceMonitor has no endpoints")
        for ep in endpoints:
            c.check(ep.get("port") == "admin", f"ServiceMonitor scrapes port {ep.get('port')}")
            c.check(ep.get("path") == "/metrics", f"ServiceMonitor path {ep.get('path')}")
            for d in ("interval", "scrapeTimeout"):
                if d in ep:
                    c.check(re.fullmatch(r"([0-9]+(ms|s|m|h))+", str(ep[d])), f"ServiceMonitor {d} {ep[d]!r}")

    # Ingress to the WebSocket port.
    for ing in by_kind(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                backend = p["backend"]["service"]
                c.check(svc is not None and backend["name"] == svc["metadata"]["name"],
                        f"Ingress backend {backend['name']} is not the Service")
                c.check(backend["port"].get("name") == "ws" or backend["port"].get("number") == 8080,
                        f"Ingress backend port {backend['port']} is not the WebSocket port")
        ann = ing["metadata"].get("annotations", {})
        if ing["spec"].get("ingressClassName") == "nginx":
            for a in ("nginx.ingress.kubernetes.io/proxy-read-timeout",
                      "nginx.ingress.kubernetes.io/proxy-send-timeout"):
                c.check(int(ann.get(a, "0")) >= 3600, f"Ingress {a} below an hour")

    # NetworkPolicy covers the nodes.
    nps = by_kind(docs, "NetworkPolicy")
    if nps:
        mine = [n for n in nps if subset(n["spec"]["podSelector"]["matchLabels"], pod_labels)]
        c.check(mine, "no NetworkPolicy selects the nodes")
        # The admin port (metrics, and the /v1/clients API with a token) is
        # open to named peers only, never to everyone.
        admin_rules = [r for n in mine for r in n["spec"].get("ingress", [])
                       if any(p.get("port") in ("admin", 9090) for p in r.get("ports", []))]
        c.check(admin_rules, "no NetworkPolicy rule for the admin port")
        for r in admin_rules:
            c.check(r.get("from"), "the admin port is open to every source")

    # Secrets.
    secrets = by_kind(docs, "Secret")
    for s in secrets:
        for k, v in (s.get("data") or {}).items():
            try:
                base64.b64decode(v, validate=True)
            except ValueError:
                c.check(False, f"Secret {s['metadata']['name']} key {k} is not base64")
    if args.no_secret:
        c.check(not secrets, f"a Secret is rendered: {[s['metadata']['name'] for s in secrets]}")
    if args.existing_secret:
        for s in secrets:
            keys_ = set((s.get("data") or {})) | set((s.get("stringData") or {}))
            c.check(not keys_ & {"token-secret", "public-key"},
                    f"Secret {s['metadata']['name']} holds auth material although existingSecret is set")
        ref = env.get("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if "SIGNAL_MANAGER_AUTH_PUBLIC_KEY_PATH" in env:
            ref = {"name": secret_volumes.get("public-key", {}).get("secretName")}
        c.check(ref.get("name") == args.existing_secret,
                f"token secret or public key comes from {ref.get('name')}, not {args.existing_secret}")
    elif not args.jwks:
        own = [s for s in secrets if "token-secret" in (s.get("data") or {})
               or "public-key" in (s.get("data") or {})]
        c.check(own, "no Secret holds the token secret or public key")
    # Every secretKeyRef to the chart's own Secret names a key it holds.
    own_keys = {s["metadata"]["name"]: set(s.get("data") or {}) for s in secrets}
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref.get("name") in own_keys:
            c.check(ref.get("key") in own_keys[ref["name"]],
                    f"{e['name']} reads key {ref.get('key')} that Secret {ref['name']} does not hold")

    return c.finish("helm")


def cmd_compose(args):
    c = Checker()
    with open(args.config) as f:
        cfg = json.load(f)
    c.check(cfg.get("name") == "signal-manager", f"project name is {cfg.get('name')}")
    services = cfg.get("services", {})
    expected = {"redis", "node1", "node2", "node3", "lb"}
    if args.tracing:
        expected.add("jaeger")
    if args.monitoring:
        expected |= {"prometheus", "grafana"}
    c.check(set(services) == expected, f"services are {sorted(services)}, expected {sorted(expected)}")

    node_ids = set()
    for i in (1, 2, 3):
        name = f"node{i}"
        svc = services.get(name)
        if not c.check(svc is not None, f"{name} missing"):
            continue
        env = svc.get("environment", {})
        node_ids.add(env.get("SIGNAL_MANAGER_CLUSTER_NODE_ID"))
        c.check(env.get("SIGNAL_MANAGER_CLUSTER_REDIS_URL") == "redis://redis:6379", f"{name} Redis URL")
        c.check(bool(env.get("SIGNAL_MANAGER_AUTH_TOKEN_SECRET")), f"{name} has no token secret")
        c.check(env.get("SIGNAL_MANAGER_TELEMETRY_OTLP_ENDPOINT") == "http://jaeger:4318", f"{name} OTLP endpoint")
        # One image, built once: node1 builds it, the others run it.
        c.check(("build" in svc) == (i == 1), f"{name}: build: belongs on node1 only")
        c.check(svc.get("image") == "signal-manager-service:local", f"{name} image {svc.get('image')}")
        c.check("jaeger" not in svc.get("depends_on", {}), f"{name} depends on the optional jaeger")
        test = svc.get("healthcheck", {}).get("test", [])
        c.check(any("/readyz" in t for t in test), f"{name} health check does not ask /readyz")
        dep = svc.get("depends_on", {}).get("redis", {})
        c.check(dep.get("condition") == "service_healthy", f"{name} does not wait for a healthy Redis")
        published = {(str(p.get("published")), p.get("target")) for p in svc.get("ports", [])}
        c.check((str(9090 + i), 9090) in published, f"{name} admin port not published as {9090 + i}")
        grace = svc.get("stop_grace_period", "10s")
        c.check(parse_seconds(grace) > DEFAULT_DRAIN_TIMEOUT, f"{name} stop_grace_period {grace} <= drain timeout")
    c.check(len(node_ids) == 3 and None not in node_ids, f"node ids are not distinct: {node_ids}")

    redis = services.get("redis", {})
    c.check(redis.get("healthcheck", {}).get("test", [])[-2:] == ["redis-cli", "ping"], "Redis health check")
    lb = services.get("lb", {})
    c.check(str(lb.get("image", "")).startswith("haproxy:"), "lb is not HAProxy")
    c.check(any(v.get("target") == "/usr/local/etc/haproxy/haproxy.cfg" for v in lb.get("volumes", [])),
            "lb does not mount haproxy.cfg")
    c.check(any(str(p.get("published")) == "8080" for p in lb.get("ports", [])), "lb not on host port 8080")
    if args.tracing:
        jaeger = services.get("jaeger", {})
        c.check(str(jaeger.get("environment", {}).get("COLLECTOR_OTLP_ENABLED")) == "true", "Jaeger OTLP off")
        c.check(any(str(p.get("published")) == "16686" for p in jaeger.get("ports", [])), "Jaeger UI not published")
    if args.monitoring:
        c.check(any(str(p.get("published")) == "3000" for p in services["grafana"].get("ports", [])),
                "Grafana not on 3000")
    return c.finish("compose")


def parse_seconds(duration):
    total = 0.0
    for value, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", str(duration)):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def cmd_metrics(args):
    c = Checker()
    with open(args.dashboard) as f:
        dash = json.load(f)
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t.get("expr", "") for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    c.check(exprs, "dashboard has no queries")
    used = set()
    for e in exprs:
        for m in re.findall(r"\bsignal_manager_([a-z0-9_]+)", e):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if c.check(base in METRICS, f"dashboard uses unknown metric signal_manager_{m}"):
                if m != base:
                    c.check(METRICS[base] == "histogram", f"signal_manager_{m}: {base} is not a histogram")
                elif METRICS[base] == "histogram":
                    c.check(False, f"signal_manager_{m} is a histogram; query _bucket, _sum or _count")
                used.add(base)
        for m in re.findall(r"rate\(\s*signal_manager_([a-z0-9_]+)", e):
            c.check(m.endswith(("_total", "_bucket", "_sum", "_count")), f"rate() over gauge signal_manager_{m}")
    missing = DASHBOARD_REQUIRED - used
    c.check(not missing, f"dashboard lacks {sorted(missing)}")
    for h in HISTOGRAM_QUANTILE_REQUIRED:
        for q in ("0.5", "0.99"):
            c.check(any(f"histogram_quantile({q}" in e and f"signal_manager_{h}_bucket" in e for e in exprs),
                    f"dashboard has no p{q[2:]} of {h}")

    with open(args.prometheus) as f:
        prom = yaml.safe_load(f)
    targets = {t for job in prom.get("scrape_configs", []) for sc in job.get("static_configs", [])
               for t in sc.get("targets", [])}
    c.check(targets == {"node1:9090", "node2:9090", "node3:9090"}, f"Prometheus targets {sorted(targets)}")
    return c.finish("metrics")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split")
    p.add_argument("rendered")
    p.add_argument("builtin_out")
    p.add_argument("crd_out")
    p.set_defaults(func=cmd_split)
    p = sub.add_parser("helm")
    p.add_argument("rendered")
    p.add_argument("--replicas", type=int)
    p.add_argument("--hpa", action="store_true")
    p.add_argument("--existing-secret")
    p.add_argument("--no-secret", action="store_true")
    p.add_argument("--expect-kind", action="append", default=[])
    p.add_argument("--image-config", metavar="TOML", help="the image's config.toml (deploy/docker/config.toml)")
    p.add_argument("--dockerfile", metavar="FILE", help="the image's Dockerfile")
    p.add_argument("--no-pre-stop", action="store_true", help="the values turn the preStop hook off")
    p.add_argument("--jwks", metavar="URL", help="tokens are verified with this JWK Set")
    p.add_argument("--redis-mode", choices=("standalone", "sentinel", "cluster"),
                   help="the node uses Redis in this mode")
    p.add_argument("--redis-tls", choices=("ca", "mtls", "insecure"),
                   help="Redis TLS: a CA file, CA plus client certificate and key, or insecure")
    p.add_argument("--sentinel-password", metavar="SECRET", help="the Sentinel password reaches the node, "
                                                             "from Secret SECRET (\"chart\": the chart's own)")
    p.add_argument("--admin-api", metavar="SECRET", help="the admin API token reaches the node, from "
                                                       "Secret SECRET (\"chart\": the chart's own)")
    p.add_argument("--turn", metavar="SECRET", help="TURN URLs and secret reach the node, the secret "
                                                  "from Secret SECRET (\"chart\": the chart's own)")
    p.set_defaults(func=cmd_helm)
    p = sub.add_parser("compose")
    p.add_argument("config")
    p.add_argument("--tracing", action="store_true")
    p.add_argument("--monitoring", action="store_true")
    p.set_defaults(func=cmd_compose)
    p = sub.add_parser("metrics")
    p.add_argument("dashboard")
    p.add_argument("prometheus")
    p.set_defaults(func=cmd_metrics)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
