//! State shared by every reconcile: the Kubernetes client, the AWS and Console client pools,
//! metrics, the Event recorder and the operator's settings. Its own module so the controller and
//! the pipeline both use it without importing each other.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Client, runtime::events::Recorder};

use crate::{
    access::AccessRules,
    aws::AwsPool,
    budget::{AwsRateLimits, DEFAULT_CONSOLE_RATE_LIMIT, RateLimit},
    metrics::Metrics,
    prisma::ConsolePool,
    reconcile::{
        glance::{ConsoleGlances, Memos},
        ownership::Ownership,
        wake::Wakeups,
    },
};

/// Operator settings (flags / environment).
#[derive(Clone, Debug)]
pub struct Config {
    /// Requeue while converging.
    pub converging_requeue: Duration,
    /// Resync of a Ready resource.
    pub steady_requeue: Duration,
    /// Re-check of a Stalled resource (a Secret may appear, an AMI may become visible).
    pub stalled_requeue: Duration,
    /// Longest backoff after transient failures.
    pub max_backoff: Duration,
    /// Longest wait between looks while a resource waits without progress (the waits double
    /// from `converging_requeue`).
    pub max_wait: Duration,
    /// Full passes (anything beyond a quiet look) running at once; 0: unbounded.
    pub concurrency: u16,
    /// A full observation of a Ready resource at least this often; resyncs in between glance at
    /// the cheap reads only (src/reconcile/glance.rs).
    pub deep_resync: Duration,
    /// An AWS endpoint for resources that set none (emulators, private endpoints).
    pub aws_endpoint_url: Option<String>,
    /// Watch one namespace only.
    pub namespace: Option<String>,
    /// Reconcile only resources matching this label selector (sharding: several operator
    /// deployments split one management cluster's resources).
    pub selector: Option<String>,
    /// Name in Events.
    pub reporter: String,
    /// How long a wait may go without progress before a resource is `Stalled` (a resource's
    /// `spec.progressDeadlineSeconds` overrides it).
    pub progress_deadline: Duration,
    /// Watch Secrets' metadata so a Secret created or fixed after its resource takes effect at
    /// once (needs list/watch on Secrets); off: it is noticed at the stalled requeue.
    pub watch_secrets: bool,
    /// Where requests may go and whose AWS identity resources may use (src/access.rs). The
    /// default allows nothing beyond https Consoles, AWS's own endpoints and own credentials.
    pub access: AccessRules,
    /// Each AWS target's rate budget per service (src/budget.rs).
    pub aws_rate_limits: AwsRateLimits,
    /// Each Console's rate budget; `None`: unlimited.
    pub console_rate_limit: Option<RateLimit>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            converging_requeue: Duration::from_secs(1),
            steady_requeue: Duration::from_secs(300),
            stalled_requeue: Duration::from_secs(300),
            max_backoff: Duration::from_secs(300),
            max_wait: Duration::from_secs(60),
            concurrency: 64,
            deep_resync: Duration::from_secs(24 * 3600),
            aws_endpoint_url: None,
            namespace: None,
            selector: None,
            reporter: "ecs-defender-operator".into(),
            progress_deadline: Duration::from_secs(15 * 60),
            watch_secrets: true,
            access: AccessRules::default(),
            aws_rate_limits: AwsRateLimits::default(),
            console_rate_limit: Some(DEFAULT_CONSOLE_RATE_LIMIT),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub aws: AwsPool,
    pub consoles: ConsolePool,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub config: Config,
    /// Consecutive failures per resource, for exponential backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Who owns which AWS names among the resources (judged before observe), and the re-queue of
    /// losers when an owner goes.
    pub ownership: Ownership,
    /// The last full pass of each resource, for quiet reconciles (src/reconcile/glance.rs).
    pub memos: Memos,
    /// Full passes running at once (`Config::concurrency`); quiet looks take no permit.
    pub full_passes: tokio::sync::Semaphore,
    /// The Console's answers shared by the glances of every resource using it.
    pub console_glances: Arc<ConsoleGlances>,
    /// Resources waiting for Defenders, woken when their Console lists a change (wake.rs).
    pub wakeups: Arc<Wakeups>,
}
