//! The `ecs-defender-operator` binary: flags, logging, the HTTP endpoints and the controller.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clap::{Parser, ValueEnum};
use ecs_defender_operator::{
    access, budget, controller, http, install_crypto_provider, leader, metrics::Metrics, telemetry,
};
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Reconciles EcsDefenderDeployment resources: Prisma Cloud Defenders on AWS ECS.
/// `off` parses to `None`. (An alias: clap takes a field spelled `Option<T>` as an optional flag
/// whose parser yields `T`.)
type MaybeLimit = Option<budget::RateLimit>;

#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format (the level comes from RUST_LOG, default info; the AWS SDK and HTTP crates stay
    /// at info unless RUST_LOG names them).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Watch only this namespace.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile only EcsDefenderDeployments whose labels match this selector (for example
    /// `shard=a`, `team in (x,y)`): several deployments of the operator, each with its own
    /// selector and Lease, split the resources of one cluster.
    #[arg(long, env = "RESOURCE_SELECTOR")]
    selector: Option<String>,
    /// AWS endpoint for resources that set no aws.endpointUrl (emulators, private endpoints).
    #[arg(long, env = "OPERATOR_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    /// Seconds before the next look while a resource converges; a wait without progress doubles
    /// it up to --max-wait-seconds.
    #[arg(long, env = "REQUEUE_CONVERGING_SECONDS", default_value_t = 1)]
    requeue_converging_seconds: u64,
    /// Longest wait between looks while a resource waits without progress.
    #[arg(long, env = "MAX_WAIT_SECONDS", default_value_t = 60)]
    max_wait_seconds: u64,
    /// Reconciles past their quiet look (full passes, teardowns) that run at once (0: no bound).
    /// Each holds what it read and is about to write; the bound keeps memory flat when thousands
    /// of resources start together. Quiet looks are not bounded: their batched reads are shared.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 64)]
    max_concurrent_reconciles: u16,
    /// Seconds between resyncs of a Ready resource (each one a glance: one DescribeServices per
    /// resource plus batched reads; drift in them is repaired within one resync).
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds between full observations of a Ready resource (what a glance does not read: a
    /// deregistered revision, the execution role's policy, the install bundle's secret).
    #[arg(long, env = "DEEP_RESYNC_SECONDS", default_value_t = 86400)]
    deep_resync_seconds: u64,
    /// Seconds a change may go without progress before the resource is Stalled (a resource's
    /// spec.progressDeadlineSeconds overrides it).
    #[arg(long, env = "PROGRESS_DEADLINE_SECONDS", default_value_t = 900)]
    progress_deadline_seconds: u64,
    /// Watch Secrets' metadata so a Secret created or fixed after its resource takes effect in
    /// seconds (needs list/watch on Secrets).
    #[arg(long, env = "WATCH_SECRETS", default_value_t = true, action = clap::ArgAction::Set)]
    watch_secrets: bool,
    /// Rate budget per AWS account/region (credentials target) and service, every request and
    /// retry included: comma-separated SERVICE=RATE/BURST (requests per second / bucket size) or
    /// SERVICE=off, changing the defaults of the services named (ecs, autoscaling, ec2, ssm,
    /// secretsmanager, iam, sts), e.g. `ecs=20/40,autoscaling=10/20`.
    #[arg(long = "aws-rate-limits", env = "AWS_RATE_LIMITS", default_value = "", value_parser = parse_aws_rate_limits)]
    aws_rate_limits: budget::AwsRateLimits,
    /// Rate budget per Prisma Cloud Console (URL): RATE/BURST, or off.
    #[arg(long, env = "CONSOLE_RATE_LIMIT", default_value = "2/20", value_parser = budget::parse_optional_limit)]
    console_rate_limit: MaybeLimit,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    leader_election: LeaderElectionArgs,
}

fn parse_aws_rate_limits(s: &str) -> Result<budget::AwsRateLimits, String> {
    s.parse()
}

/// The installer's rules on where requests go and whose AWS identity a resource may use
/// (src/access.rs). Every default is the safe one.
#[derive(clap::Args, Debug)]
struct AccessArgs {
    /// Allow plain-http Console URLs (test worlds, the demo): credentials then cross the network
    /// in clear text.
    #[arg(long, env = "ALLOW_INSECURE_CONSOLE", default_value_t = false, action = clap::ArgAction::Set)]
    allow_insecure_console: bool,
    /// Honour spec.aws.endpointUrl (emulators, private endpoints); off: AWS's own endpoints only.
    #[arg(long, env = "ALLOW_CUSTOM_AWS_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set)]
    allow_custom_aws_endpoints: bool,
    /// Namespaces whose resources may use the operator's own AWS credentials (comma-separated;
    /// `*` for all). Default: the operator's own namespace (POD_NAMESPACE).
    #[arg(long, env = "DEFAULT_CREDENTIALS_NAMESPACES", value_delimiter = ',')]
    default_credentials_namespaces: Vec<String>,
    /// Role ARN patterns (`*` wildcard, comma-separated) that resources in other namespaces may
    /// assume with the operator's own credentials.
    #[arg(long, env = "ALLOWED_ROLE_ARNS", value_delimiter = ',')]
    allowed_role_arns: Vec<String>,
    /// Use Console credential Secrets that do not name their Console (no `url`/`allowedUrls`
    /// key) for any Console URL: a migration aid, off by default.
    #[arg(long, env = "ALLOW_UNBOUND_CONSOLE_CREDENTIALS", default_value_t = false, action = clap::ArgAction::Set)]
    allow_unbound_console_credentials: bool,
}

impl AccessArgs {
    fn rules(&self) -> access::AccessRules {
        let mut namespaces: Vec<String> = self
            .default_credentials_namespaces
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if namespaces.is_empty()
            && let Some(own) = std::env::var("POD_NAMESPACE").ok().filter(|v| !v.is_empty())
        {
            namespaces.push(own);
        }
        access::AccessRules {
            allow_insecure_console: self.allow_insecure_console,
            allow_custom_aws_endpoints: self.allow_custom_aws_endpoints,
            default_credentials_namespaces: namespaces,
            allowed_role_arns: self
                .allowed_role_arns
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            allow_unbound_console_credentials: self.allow_unbound_console_credentials,
        }
    }
}

/// Leader election (src/leader.rs): with several replicas, only the Lease holder reconciles.
#[derive(clap::Args, Debug)]
struct LeaderElectionArgs {
    /// Campaign for a Lease and reconcile only while holding it. Off: reconcile at once (one
    /// replica only, e.g. on a laptop).
    #[arg(long = "leader-elect", env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    enabled: bool,
    /// The Lease's name.
    #[arg(long = "leader-elect-lease-name", env = "LEADER_ELECT_LEASE_NAME", default_value = "ecs-defender-operator")]
    lease_name: String,
    /// The Lease's namespace. Default: POD_NAMESPACE, else the kubeconfig's namespace.
    #[arg(long = "leader-elect-namespace", env = "LEADER_ELECT_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease stays valid after a renewal: the longest a crashed leader delays a takeover.
    #[arg(long = "leader-elect-lease-duration", env = "LEADER_ELECT_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds before expiry the leader renews; also the clock skew between nodes tolerated.
    #[arg(long = "leader-elect-renew-grace", env = "LEADER_ELECT_RENEW_GRACE_SECONDS", default_value_t = 5)]
    renew_grace_seconds: u64,
    /// This replica's identity in the Lease. Default: POD_NAME, else the host name and a random suffix.
    #[arg(long = "leader-elect-identity", env = "LEADER_ELECT_IDENTITY")]
    identity: Option<String>,
}

impl LeaderElectionArgs {
    fn config(&self, client: &kube::Client) -> Option<leader::Config> {
        if !self.enabled {
            return None;
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let identity = self.identity.clone().or_else(|| env("POD_NAME")).unwrap_or_else(|| {
            let host = env("HOSTNAME").unwrap_or_else(|| "ecs-defender-operator".into());
            format!("{host}-{:08x}", rand::random::<u32>())
        });
        Some(leader::Config {
            lease_name: self.lease_name.clone(),
            namespace: self
                .lease_namespace
                .clone()
                .or_else(|| env("POD_NAMESPACE"))
                .unwrap_or_else(|| client.default_namespace().to_string()),
            identity,
            lease_duration: Duration::from_secs(self.lease_duration_seconds),
            renew_grace: Duration::from_secs(self.renew_grace_seconds),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    install_crypto_provider();
    // RUST_LOG as given, but the AWS SDK and the HTTP stack stay at info unless it names them:
    // their debug and trace output carries credentials (src/telemetry.rs).
    let filter = telemetry::log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let registry = tracing_subscriber::registry().with(filter);
    match args.log_format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json()).init(),
    }

    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let probe = tokio::spawn(http::probe_apiserver(client.clone(), metrics.clone(), Duration::from_secs(5)));
    let server = tokio::spawn(http::serve(listener, metrics.clone(), ready.clone(), async {
        let _ = stop_rx.await;
    }));
    let config = controller::Config {
        converging_requeue: Duration::from_secs(args.requeue_converging_seconds),
        steady_requeue: Duration::from_secs(args.resync_seconds),
        max_wait: Duration::from_secs(args.max_wait_seconds),
        concurrency: args.max_concurrent_reconciles,
        deep_resync: Duration::from_secs(args.deep_resync_seconds),
        aws_endpoint_url: args.aws_endpoint_url,
        namespace: args.namespace,
        selector: args.selector.filter(|s| !s.trim().is_empty()),
        progress_deadline: Duration::from_secs(args.progress_deadline_seconds),
        watch_secrets: args.watch_secrets,
        access: args.access.rules(),
        aws_rate_limits: args.aws_rate_limits,
        console_rate_limit: args.console_rate_limit,
        ..Default::default()
    };
    tracing::info!(
        aws = %config.aws_rate_limits,
        console = %config.console_rate_limit.map_or("off".to_string(), |l| l.to_string()),
        "rate budgets (requests per second / burst)"
    );
    // The controller returns on SIGINT/SIGTERM, after in-flight reconciles finish.
    // --- leader election hook (src/leader.rs): only the Lease holder runs the controller; it is
    // dropped at once when the Lease is lost and started afresh when won again. ---
    let result = match args.leader_election.config(&client) {
        Some(election) => {
            // The controller's own readiness flag is not the process's: a standby is ready too.
            let controller_ready = Arc::new(AtomicBool::new(false));
            leader::run(client.clone(), election, metrics.clone(), ready, || {
                controller::run(client.clone(), config.clone(), metrics.clone(), controller_ready.clone())
            })
            .await
        }
        None => {
            metrics.set_leader(true);
            controller::run(client, config, metrics, ready).await
        }
    };
    // --- end of the leader election hook ---
    probe.abort();
    let _ = stop_tx.send(());
    let _ = server.await;
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    result
}
