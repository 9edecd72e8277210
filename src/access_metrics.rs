//! Metrics of access control and operator actions: signals refused by a
//! token's peers claim, JWK Set fetches and the keys they hold, and admin
//! API requests by outcome. Registered into the node's registry by
//! [`crate::metrics::Metrics::new`]; label values are closed sets.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels2 = [(&'static str, &'static str); 2];

/// Outcome of an admin API request, as its metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    /// 200.
    Ok,
    /// 404 for a client that is not online.
    NotFound,
    /// 400: malformed client id or request.
    BadRequest,
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 404: the API is off (no `admin.api_token`).
    Disabled,
    /// 503: the cluster backend could not be asked.
    Unavailable,
}

impl AdminOutcome {
    const ALL: [AdminOutcome; 6] = [
        AdminOutcome::Ok,
        AdminOutcome::NotFound,
        AdminOutcome::BadRequest,
        AdminOutcome::Unauthorized,
        AdminOutcome::Disabled,
        AdminOutcome::Unavailable,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            AdminOutcome::Ok => "ok",
            AdminOutcome::NotFound => "not_found",
            AdminOutcome::BadRequest => "bad_request",
            AdminOutcome::Unauthorized => "unauthorized",
            AdminOutcome::Disabled => "disabled",
            AdminOutcome::Unavailable => "unavailable",
        }
    }
}

/// The admin API endpoints, as their metric label.
pub const ADMIN_ENDPOINTS: [&str; 3] = ["client", "disconnect", "other"];

/// Access-control and admin metrics.
#[derive(Clone, Default)]
pub struct AccessMetrics {
    /// Signals refused with FORBIDDEN (peers claim).
    pub forbidden_signals: Counter,
    /// Successful JWK Set fetches.
    pub jwks_fetch_ok: Counter,
    /// Failed JWK Set fetches (network, status, size, timeout, parse).
    pub jwks_fetch_failed: Counter,
    /// Usable keys in the current JWK Set.
    pub jwks_keys: Gauge,
    admin_requests: Family<Labels2, Counter>,
}

impl AccessMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> AccessMetrics {
        let m = AccessMetrics::default();
        registry.register(
            "forbidden_signals",
            "Signals refused with FORBIDDEN because the token's peers claim does not allow the target",
            m.forbidden_signals.clone(),
        );
        let fetches = Family::<[(&'static str, &'static str); 1], Counter>::default();
        // One statement each: a family's guard lives until the end of its statement.
        let ok = fetches.get_or_create(&[("result", "ok")]).clone();
        let failed = fetches.get_or_create(&[("result", "failed")]).clone();
        registry.register("jwks_fetches", "JWK Set fetches, by result", fetches);
        registry.register(
            "jwks_keys",
            "Usable keys in the JWK Set in use",
            m.jwks_keys.clone(),
        );
        for endpoint in ADMIN_ENDPOINTS {
            for outcome in AdminOutcome::ALL {
                m.admin_requests
                    .get_or_create(&[("endpoint", endpoint), ("outcome", outcome.as_str())])
                    .inc_by(0);
            }
        }
        registry.register(
            "admin_requests",
            "Admin API requests (/v1/...), by endpoint and outcome",
            m.admin_requests.clone(),
        );
        AccessMetrics {
            jwks_fetch_ok: ok,
            jwks_fetch_failed: failed,
            ..m
        }
    }

    /// Counts an admin API request; `endpoint` is one of [`ADMIN_ENDPOINTS`].
    pub fn admin_request(&self, endpoint: &'static str, outcome: AdminOutcome) {
        self.admin_requests
            .get_or_create(&[("endpoint", endpoint), ("outcome", outcome.as_str())])
            .inc();
    }
}
