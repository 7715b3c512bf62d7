//! Prometheus metrics, served on `/metrics`. Every label value comes from a fixed set (operation
//! names, outcome and error-category constants), so label cardinality stays bounded.

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: &'static str,
}

/// Seconds, summed.
type SecondsCounter = Counter<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<CategoryLabels, Counter>,
    duration: Histogram,
    aws_calls: Family<CallLabels, Counter>,
    console_calls: Family<CallLabels, Counter>,
    aws_rate_limit_waits: Family<ServiceLabels, Counter>,
    aws_rate_limit_wait_seconds: Family<ServiceLabels, SecondsCounter>,
    console_rate_limit_waits: Counter,
    console_rate_limit_wait_seconds: SecondsCounter,
    leader: Gauge,
    apiserver_reachable: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ecs_defender_operator");
        let reconciles = Counter::default();
        let failures = Family::<CategoryLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        let aws_calls = Family::<CallLabels, Counter>::default();
        let console_calls = Family::<CallLabels, Counter>::default();
        let aws_rate_limit_waits = Family::<ServiceLabels, Counter>::default();
        let aws_rate_limit_wait_seconds = Family::<ServiceLabels, SecondsCounter>::default();
        let console_rate_limit_waits = Counter::default();
        let console_rate_limit_wait_seconds = SecondsCounter::default();
        let leader = Gauge::default();
        let apiserver_reachable = Gauge::default();
        registry.register(
            "apiserver_reachable",
            "1 while the Kubernetes API server answered the last probe (/readyz fails otherwise)",
            apiserver_reachable.clone(),
        );
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_failures", "Failed reconciles by error category", failures.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration", duration.clone());
        registry.register("aws_calls", "AWS API calls by operation and outcome", aws_calls.clone());
        registry.register(
            "console_calls",
            "Prisma Cloud Console API calls by operation and outcome",
            console_calls.clone(),
        );
        registry.register(
            "aws_rate_limit_waits",
            "AWS requests (retries included) that waited for their service's rate budget, by service",
            aws_rate_limit_waits.clone(),
        );
        registry.register(
            "aws_rate_limit_wait_seconds",
            "Seconds AWS requests spent waiting for their service's rate budget, by service",
            aws_rate_limit_wait_seconds.clone(),
        );
        registry.register(
            "console_rate_limit_waits",
            "Prisma Cloud Console requests that waited for their Console's rate budget",
            console_rate_limit_waits.clone(),
        );
        registry.register(
            "console_rate_limit_wait_seconds",
            "Seconds Prisma Cloud Console requests spent waiting for their Console's rate budget",
            console_rate_limit_wait_seconds.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controller (holds the leader Lease), 0 as a standby",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            aws_calls,
            console_calls,
            aws_rate_limit_waits,
            aws_rate_limit_wait_seconds,
            console_rate_limit_waits,
            console_rate_limit_wait_seconds,
            leader,
            apiserver_reachable,
        }
    }
}

impl Metrics {
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer { metrics: self, start: std::time::Instant::now() }
    }

    pub fn reconcile_failed(&self, category: &'static str) {
        self.failures.get_or_create(&CategoryLabels { category }).inc();
    }

    pub fn aws_call(&self, operation: &'static str, outcome: &'static str) {
        self.aws_calls.get_or_create(&CallLabels { operation, outcome }).inc();
    }

    pub fn console_call(&self, operation: &'static str, outcome: &'static str) {
        self.console_calls.get_or_create(&CallLabels { operation, outcome }).inc();
    }

    /// An AWS request of `service` waited `waited` for the rate budget (src/budget.rs).
    pub fn aws_rate_limit_wait(&self, service: &'static str, waited: Duration) {
        self.aws_rate_limit_waits.get_or_create(&ServiceLabels { service }).inc();
        self.aws_rate_limit_wait_seconds.get_or_create(&ServiceLabels { service }).inc_by(waited.as_secs_f64());
    }

    /// A Console request waited `waited` for its Console's rate budget (src/budget.rs).
    pub fn console_rate_limit_wait(&self, waited: Duration) {
        self.console_rate_limit_waits.inc();
        self.console_rate_limit_wait_seconds.inc_by(waited.as_secs_f64());
    }

    /// Leader election: whether this replica runs the controller (src/leader.rs).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn set_apiserver_reachable(&self, reachable: bool) {
        self.apiserver_reachable.set(i64::from(reachable));
    }

    pub fn apiserver_reachable(&self) -> bool {
        self.apiserver_reachable.get() == 1
    }

    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Observes the reconcile's duration when dropped, whatever way the reconcile ends.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.observe(self.start.elapsed().as_secs_f64());
    }
}
