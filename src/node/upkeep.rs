//! Background upkeep of a node: its liveness record, batched presence
//! refreshes (one round trip per tick for every local session, re-creating
//! records a restarted backend lost), and a probe through its own bus channel
//! that proves the subscription delivers. Readiness is derived from both.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Node;
use crate::bus::{BusError, Envelope, MessageBus};
use crate::metrics::Metrics;
use crate::presence::{Location, PresenceRegistry};
use crate::telemetry::ErrorChain;

/// How often a node probes its own channel.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes that may go unanswered before the subscription counts as broken.
const PROBE_MISSES: u32 = 3;

/// Backend health as last observed.
pub(super) struct Health {
    presence_ok: AtomicBool,
    upkeep_now: tokio::sync::Notify,
    started: Instant,
    last_echo_ms: AtomicU64,
    pending: Mutex<Option<(u64, Instant)>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            presence_ok: AtomicBool::new(false),
            upkeep_now: tokio::sync::Notify::new(),
            started: Instant::now(),
            last_echo_ms: AtomicU64::new(u64::MAX),
            pending: Mutex::new(None),
        }
    }
}

impl Health {
    /// Whether presence answers and the bus delivered a recent probe.
    pub(super) fn is_healthy(&self) -> bool {
        self.presence_ok.load(Ordering::Acquire) && self.bus_ok()
    }

    fn bus_ok(&self) -> bool {
        let last = self.last_echo_ms.load(Ordering::Acquire);
        if last == u64::MAX {
            return false;
        }
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(last) <= (PROBE_INTERVAL * PROBE_MISSES).as_millis() as u64
    }

    /// Asks the upkeep task for a round now (presence may have been lost).
    pub(super) fn upkeep_now(&self) {
        self.upkeep_now.notify_one();
    }

    fn set_presence_ok(&self, ok: bool, metrics: &Metrics) {
        self.presence_ok.store(ok, Ordering::Release);
        metrics.redis_connected.set(i64::from(self.is_healthy()));
    }

    fn probe_sent(&self, nonce: u64) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some((nonce, Instant::now()));
    }

    /// Records a probe that came back through the bus.
    pub(super) fn probe_echoed(&self, nonce: u64, metrics: &Metrics) {
        let pending = *self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((expected, sent)) = pending {
            if expected == nonce {
                metrics.probe_rtt.observe(sent.elapsed().as_secs_f64());
                let now = self.started.elapsed().as_millis() as u64;
                self.last_echo_ms.store(now, Ordering::Release);
                metrics.redis_connected.set(i64::from(self.is_healthy()));
            }
        }
    }
}

/// Aborts the node's background tasks when dropped.
pub(crate) struct Background {
    tasks: Vec<JoinHandle<()>>,
    /// The bus holds the node's sink weakly; this keeps it alive while the
    /// node runs.
    _sink: Arc<dyn crate::bus::EnvelopeSink>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Subscribes to the node's channel and starts the upkeep tasks. The
/// first presence round trip happens before this returns.
pub(super) async fn start(node: &Arc<Node>) -> Result<Background, BusError> {
    let sink: Arc<dyn crate::bus::EnvelopeSink> =
        Arc::new(super::inbox::NodeSink(Arc::downgrade(node)));
    node.bus.subscribe(&node.id, Arc::clone(&sink)).await?;
    let _ = node.upkeep_once().await;
    let upkeep = Arc::clone(node);
    let mut tasks = vec![tokio::spawn(async move { upkeep.run_upkeep().await })];
    let probes = Arc::clone(node);
    tasks.push(tokio::spawn(async move { probes.run_probes().await }));
    let flusher = Arc::clone(node);
    tasks.push(tokio::spawn(
        async move { flusher.run_confirmations().await },
    ));
    let sweeper = Arc::clone(node);
    tasks.push(tokio::spawn(async move { sweeper.run_sweeper().await }));
    let trim = Arc::clone(node);
    tasks.push(tokio::spawn(async move { trim.run_trim().await }));
    Ok(Background { tasks, _sink: sink })
}

impl Node {
    /// Removes this node's liveness record (end of a clean shutdown).
    /// Leaves the bus at the end of a drain: once the subscription is gone
    /// (and what reached it handled, forwards included), publishes to this
    /// node reach no subscriber and their senders' nodes ask presence where
    /// the client is now. Then waits (bounded) until every publish queued
    /// so far, the forwards among them, was answered by the backend.
    pub(crate) async fn leave_bus(&self) {
        self.bus.leave().await;
        let (done, flushed) = tokio::sync::oneshot::channel();
        let last = Envelope::Probe { nonce: 0 };
        self.bus.publish(
            &self.id,
            last.encode(),
            Some(Box::new(move |_| {
                let _ = done.send(());
            })),
        );
        if tokio::time::timeout(Duration::from_secs(2), flushed)
            .await
            .is_err()
        {
            tracing::warn!("publishes not all answered before exit");
        }
    }

    pub(crate) async fn leave_cluster(&self) {
        if let Err(error) = self.presence.remove_node(&self.id).await {
            tracing::warn!(error = %ErrorChain(&error), "could not remove the node record; it expires on its own");
        }
    }

    async fn run_upkeep(self: Arc<Self>) {
        let ttl = self.settings.presence_ttl();
        let healthy_tick = (ttl / 3).max(Duration::from_secs(1));
        loop {
            let ok = self.upkeep_once().await;
            let tick = if ok {
                healthy_tick
            } else {
                Duration::from_secs(1)
            };
            // The probes ask for a round at once when the bus comes back
            // (the backend may have restarted empty).
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.health.upkeep_now.notified() => {}
            }
        }
    }

    /// One round: node record, then every local presence record in one batch.
    async fn upkeep_once(&self) -> bool {
        let result = async {
            self.presence.keep_node_alive(&self.id).await?;
            let entries: Vec<_> = self
                .hub
                .snapshot()
                .into_iter()
                .map(|(client, handle)| {
                    let at = Location {
                        node_id: self.id.clone(),
                        session_id: handle.session_id,
                    };
                    (client, at)
                })
                .collect();
            if entries.is_empty() {
                return Ok(0);
            }
            let created = self.presence.refresh(&entries).await?;
            self.metrics.presence_refreshes.inc_by(entries.len() as u64);
            self.metrics.presence_reregistrations.inc_by(created as u64);
            Ok::<usize, crate::presence::PresenceError>(created)
        }
        .await;
        match result {
            Ok(created) => {
                if created > 0 {
                    tracing::info!(created, "re-created presence records the backend had lost");
                }
                self.health.set_presence_ok(true, &self.metrics);
                true
            }
            Err(error) => {
                if self.health.presence_ok.load(Ordering::Acquire) {
                    tracing::warn!(error = %ErrorChain(&error), "presence backend unavailable");
                }
                self.health.set_presence_ok(false, &self.metrics);
                false
            }
        }
    }

    async fn run_probes(self: Arc<Self>) {
        let mut nonce = 0u64;
        let mut interval = tokio::time::interval(PROBE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_ok = false;
        let mut misses = 0u32;
        loop {
            interval.tick().await;
            let ok = self.health.bus_ok();
            if ok && !was_ok {
                self.health.upkeep_now.notify_one();
            }
            if ok {
                misses = 0;
            } else {
                misses += 1;
                if misses % PROBE_MISSES == 0 {
                    // No echo for a while: the subscription may have died
                    // silently. Re-create it.
                    self.bus.resubscribe();
                }
            }
            was_ok = ok;
            nonce = nonce.wrapping_add(1);
            self.health.probe_sent(nonce);
            let probe = Envelope::Probe { nonce };
            self.bus.publish(&self.id, probe.encode(), None);
            self.metrics
                .redis_connected
                .set(i64::from(self.health.is_healthy()));
        }
    }
}
