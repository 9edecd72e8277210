//! The Prometheus registry and every metric a node exports, named
//! `signal_manager_*` with units in the name. Label values come from closed
//! sets (message types, error codes, reasons): never a client id. Handles for
//! every label value are created up front so the hot path is one atomic add.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::protocol::{DisconnectReason, ErrorCode, MessageType};

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Where a routed signal went and what became of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteOutcome {
    /// Queued to a session on this node.
    LocalDelivered,
    /// Handed to the bus for another node.
    RemotePublished,
    /// Answered with an error code.
    Failed(ErrorCode),
}

/// All metrics of a node.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Authenticated sessions.
    pub sessions: Gauge,
    /// Connections whose socket is dormant (no WebSocket buffers held).
    pub dormant: Gauge,
    frames_received: [Counter; 9],
    frames_sent: [Counter; 9],
    errors: [Counter; ErrorCode::ALL.len()],
    disconnects: [Counter; DisconnectReason::ALL.len()],
    routed_local: Counter,
    routed_remote: Counter,
    route_failures: Family<Labels2, Counter>,
    auth_failures: Family<Labels, Counter>,
    /// Sessions closed with SLOW_CONSUMER.
    pub slow_consumer_disconnects: Counter,
    /// CONNECT received to CONNECT_ACK queued.
    pub connect_duration: Histogram,
    /// A signal received to handed off (queued locally or to the bus).
    pub route_duration: Histogram,
    /// Origin routing time to delivery on the target node.
    pub cross_node_delivery: Histogram,
    redis_command_duration: Family<Labels, Histogram>,
    /// The `PUBLISH` series of `redis_command_duration`, looked up once:
    /// the publisher records one per batch.
    redis_publish_duration: Histogram,
    /// Signals published to another node.
    pub cross_node_sent: Counter,
    /// Signals received from another node.
    pub cross_node_received: Counter,
    publish_failures: Family<Labels, Counter>,
    envelopes_refused: Family<Labels, Counter>,
    /// Round trip of the pub/sub probe through the backend.
    pub probe_rtt: Histogram,
    /// Presence records refreshed.
    pub presence_refreshes: Counter,
    /// Presence records that had to be re-created (backend lost them).
    pub presence_reregistrations: Counter,
    /// 1 while the cluster backend answers.
    pub redis_connected: Gauge,
    /// 1 while the node drains.
    pub draining: Gauge,
    /// The runtime's worker threads (see `runtime.rs` for how 0 resolves).
    pub worker_threads: Gauge,
    /// Trace spans dropped: the export queue was full or their export failed.
    pub spans_dropped: Counter,
    /// Cross-node signals published and not yet confirmed, bounced or answered.
    pub unconfirmed: Gauge,
    /// Cross-node signals answered because no node confirmed them in time.
    pub delivery_timeouts: Counter,
    /// Signals this node received too late to deliver (their origin answers them).
    pub signals_expired: Counter,
    /// Confirmation envelopes published to origin nodes.
    pub confirmations_sent: Counter,
    /// Sessions parked for resume right now.
    pub resumable: Gauge,
    resumes: Family<Labels, Counter>,
    /// Held signals answered PEER_NOT_FOUND because their session ended for good.
    pub held_answered: Counter,
    /// Peers-claim refusals, JWK Set fetches, admin API requests.
    pub access: crate::access_metrics::AccessMetrics,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 µs .. ~3.3 s
    exponential_buckets(0.000_05, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("signal_manager");
        let redis_command_duration: Family<Labels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(latency_buckets()));
        let redis_publish_duration = redis_command_duration
            .get_or_create(&[("command", "PUBLISH")])
            .clone();
        let m = Metrics {
            connections: Gauge::default(),
            sessions: Gauge::default(),
            dormant: Gauge::default(),
            frames_received: Default::default(),
            frames_sent: Default::default(),
            errors: Default::default(),
            disconnects: Default::default(),
            routed_local: Counter::default(),
            routed_remote: Counter::default(),
            route_failures: Family::default(),
            auth_failures: Family::default(),
            slow_consumer_disconnects: Counter::default(),
            connect_duration: Histogram::new(latency_buckets()),
            route_duration: Histogram::new(latency_buckets()),
            cross_node_delivery: Histogram::new(latency_buckets()),
            redis_command_duration,
            redis_publish_duration,
            cross_node_sent: Counter::default(),
            cross_node_received: Counter::default(),
            publish_failures: Family::default(),
            envelopes_refused: Family::default(),
            probe_rtt: Histogram::new(latency_buckets()),
            presence_refreshes: Counter::default(),
            presence_reregistrations: Counter::default(),
            redis_connected: Gauge::default(),
            draining: Gauge::default(),
            worker_threads: Gauge::default(),
            spans_dropped: Counter::default(),
            unconfirmed: Gauge::default(),
            delivery_timeouts: Counter::default(),
            signals_expired: Counter::default(),
            confirmations_sent: Counter::default(),
            resumable: Gauge::default(),
            resumes: Family::default(),
            held_answered: Counter::default(),
            access: crate::access_metrics::AccessMetrics::register(&mut r),
            registry: Registry::default(),
        };
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "sessions",
            "Authenticated sessions on this node",
            m.sessions.clone(),
        );
        r.register(
            "dormant_connections",
            "Connections of idle sessions holding no WebSocket buffers",
            m.dormant.clone(),
        );
        let received = Family::<Labels, Counter>::default();
        let sent = Family::<Labels, Counter>::default();
        for ty in MessageType::ALL {
            let l = [("message_type", ty.as_str())];
            received.get_or_create(&l).inc_by(0);
            sent.get_or_create(&l).inc_by(0);
        }
        let frames_received = MessageType::ALL.map(|ty| {
            received
                .get_or_create(&[("message_type", ty.as_str())])
                .clone()
        });
        let frames_sent =
            MessageType::ALL.map(|ty| sent.get_or_create(&[("message_type", ty.as_str())]).clone());
        r.register(
            "frames_received",
            "Protocol frames received, by message type",
            received,
        );
        r.register("frames_sent", "Protocol frames sent, by message type", sent);
        let errors_family = Family::<Labels, Counter>::default();
        let errors =
            ErrorCode::ALL.map(|c| errors_family.get_or_create(&[("code", c.as_str())]).clone());
        r.register("errors", "ERROR frames sent, by code", errors_family);
        let disc_family = Family::<Labels, Counter>::default();
        let disconnects = DisconnectReason::ALL
            .map(|d| disc_family.get_or_create(&[("reason", d.as_str())]).clone());
        r.register(
            "disconnects",
            "Sessions ended, by DISCONNECT reason",
            disc_family,
        );
        let routed = Family::<Labels2, Counter>::default();
        let routed_local = routed
            .get_or_create(&[("route", "local"), ("result", "delivered")])
            .clone();
        let routed_remote = routed
            .get_or_create(&[("route", "remote"), ("result", "published")])
            .clone();
        r.register(
            "signals_routed",
            "Signals routed, by route and result",
            routed.clone(),
        );
        r.register(
            "auth_failures",
            "Refused CONNECT tokens, by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "slow_consumer_disconnects",
            "Sessions closed because their outbound queue overflowed",
            m.slow_consumer_disconnects.clone(),
        );
        r.register(
            "connect_duration_seconds",
            "CONNECT received to CONNECT_ACK sent",
            m.connect_duration.clone(),
        );
        r.register(
            "route_duration_seconds",
            "Signal received to handed off to a local queue or the bus",
            m.route_duration.clone(),
        );
        r.register(
            "cross_node_delivery_seconds",
            "Origin node routing to delivery on the target node",
            m.cross_node_delivery.clone(),
        );
        r.register(
            "redis_command_duration_seconds",
            "Redis round trips, by command",
            m.redis_command_duration.clone(),
        );
        r.register(
            "cross_node_signals_sent",
            "Signals published to another node",
            m.cross_node_sent.clone(),
        );
        r.register(
            "cross_node_signals_received",
            "Signals received from another node",
            m.cross_node_received.clone(),
        );
        r.register(
            "publish_failures",
            "Bus publishes that reached no node, by reason",
            m.publish_failures.clone(),
        );
        r.register(
            "envelopes_refused",
            "Envelopes from the bus refused, by reason (malformed, invalid_id, forward_limit)",
            m.envelopes_refused.clone(),
        );
        r.register(
            "pubsub_probe_rtt_seconds",
            "Round trip of the node's own pub/sub probe",
            m.probe_rtt.clone(),
        );
        r.register(
            "presence_refreshes",
            "Presence records refreshed",
            m.presence_refreshes.clone(),
        );
        r.register(
            "presence_reregistrations",
            "Presence records re-created after the backend lost them",
            m.presence_reregistrations.clone(),
        );
        r.register(
            "redis_connected",
            "1 while the cluster backend answers",
            m.redis_connected.clone(),
        );
        r.register(
            "draining",
            "1 while the node drains for shutdown",
            m.draining.clone(),
        );
        r.register(
            "runtime_worker_threads",
            "Worker threads of the node's runtime",
            m.worker_threads.clone(),
        );
        r.register(
            "spans_dropped",
            "Trace spans dropped: export queue full or export to the collector failed",
            m.spans_dropped.clone(),
        );
        r.register(
            "unconfirmed_signals",
            "Cross-node signals published and not yet confirmed by their receiving node",
            m.unconfirmed.clone(),
        );
        r.register(
            "delivery_timeouts",
            "Cross-node signals answered because no node confirmed them in time",
            m.delivery_timeouts.clone(),
        );
        r.register(
            "signals_expired",
            "Signals received too late to deliver; their origin answers them",
            m.signals_expired.clone(),
        );
        r.register(
            "confirmations_sent",
            "Confirmation envelopes published to origin nodes",
            m.confirmations_sent.clone(),
        );
        r.register(
            "resumable_sessions",
            "Sessions that lost their socket and may resume",
            m.resumable.clone(),
        );
        r.register(
            "resumes",
            "Sessions resumed, by where they were held (local, remote)",
            m.resumes.clone(),
        );
        r.register(
            "held_signals_answered",
            "Held signals answered PEER_NOT_FOUND because their session ended for good",
            m.held_answered.clone(),
        );
        Metrics {
            registry: r,
            frames_received,
            frames_sent,
            errors,
            disconnects,
            routed_local,
            routed_remote,
            route_failures: routed,
            ..m
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts a frame received.
    pub fn frame_received(&self, ty: MessageType) {
        self.frames_received[ty.index()].inc();
    }

    /// Counts a frame sent, by its type byte.
    pub fn frame_sent(&self, type_byte: u8) {
        if let Some(ty) = MessageType::from_u8(type_byte) {
            self.frames_sent[ty.index()].inc();
        }
    }

    /// Counts an ERROR sent.
    pub fn error_sent(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// Counts a session ended.
    pub fn disconnected(&self, reason: DisconnectReason) {
        if let Some(i) = DisconnectReason::ALL.iter().position(|r| *r == reason) {
            self.disconnects[i].inc();
        }
        if reason == DisconnectReason::SlowConsumer {
            self.slow_consumer_disconnects.inc();
        }
    }

    /// Counts a routing outcome.
    pub fn routed(&self, remote: bool, outcome: RouteOutcome) {
        match outcome {
            RouteOutcome::LocalDelivered => {
                self.routed_local.inc();
            }
            RouteOutcome::RemotePublished => {
                self.routed_remote.inc();
            }
            RouteOutcome::Failed(code) => {
                let route = if remote { "remote" } else { "local" };
                self.route_failures
                    .get_or_create(&[("route", route), ("result", code.as_str())])
                    .inc();
            }
        };
    }

    /// Counts a refused token.
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a publish that reached nobody or failed.
    pub fn publish_failed(&self, reason: &'static str) {
        self.publish_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a resumed session (`local` or `remote`).
    pub fn resumed(&self, held: &'static str) {
        self.resumes.get_or_create(&[("where", held)]).inc();
    }

    /// Counts an envelope from the bus that was refused.
    pub fn envelope_refused(&self, reason: &'static str) {
        self.envelopes_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Records one PUBLISH pipeline's round trip (the publisher's, once
    /// per batch: no label lookup).
    pub fn redis_publish(&self, seconds: f64) {
        self.redis_publish_duration.observe(seconds);
    }

    /// Records one Redis round trip.
    pub fn redis_command(&self, command: &'static str, seconds: f64) {
        self.redis_command_duration
            .get_or_create(&[("command", command)])
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_with_units() {
        let m = Metrics::new();
        m.frame_received(MessageType::SignalOffer);
        m.error_sent(ErrorCode::PeerNotFound);
        m.routed(false, RouteOutcome::LocalDelivered);
        m.connect_duration.observe(0.001);
        let text = m.render();
        assert!(
            text.contains("signal_manager_frames_received_total{message_type=\"SIGNAL_OFFER\"} 1"),
            "{text}"
        );
        assert!(text.contains("signal_manager_errors_total{code=\"PEER_NOT_FOUND\"} 1"));
        assert!(text.contains(
            "signal_manager_signals_routed_total{route=\"local\",result=\"delivered\"} 1"
        ));
        assert!(text.contains("signal_manager_connect_duration_seconds_count 1"));
        assert!(text.contains("# TYPE signal_manager_sessions gauge"));
    }

    #[test]
    fn publish_round_trips_land_in_the_command_family() {
        let m = Metrics::new();
        m.redis_publish(0.001);
        m.redis_command("PUBLISH", 0.002);
        m.redis_command("GET", 0.001);
        let text = m.render();
        assert!(
            text.contains(
                "signal_manager_redis_command_duration_seconds_count{command=\"PUBLISH\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("signal_manager_redis_command_duration_seconds_count{command=\"GET\"} 1")
        );
    }
}
