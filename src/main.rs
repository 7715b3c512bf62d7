//! The `ecs-defender-operator` binary: flags, logging, the HTTP endpoints and the controller.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clap::{Parser, ValueEnum};
use ecs_defender_operator::{controller, http, install_crypto_provider, metrics::Metrics};
use tracing_subscriber::{EnvFilter, prelude::*};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Reconciles EcsDefenderDeployment resources: Prisma Cloud Defenders on AWS ECS.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Watch only this namespace.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// AWS endpoint for resources that set no aws.endpointUrl (emulators, private endpoints).
    #[arg(long, env = "OPERATOR_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    /// Seconds between reconciles while a resource converges.
    #[arg(long, env = "REQUEUE_CONVERGING_SECONDS", default_value_t = 5)]
    requeue_converging_seconds: u64,
    /// Seconds between resyncs of a Ready resource.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds a change may go without progress before the resource is Stalled (a resource's
    /// spec.progressDeadlineSeconds overrides it).
    #[arg(long, env = "PROGRESS_DEADLINE_SECONDS", default_value_t = 900)]
    progress_deadline_seconds: u64,
    /// Watch Secrets' metadata so a Secret created or fixed after its resource takes effect in
    /// seconds (needs list/watch on Secrets).
    #[arg(long, env = "WATCH_SECRETS", default_value_t = true, action = clap::ArgAction::Set)]
    watch_secrets: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    install_crypto_provider();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
    let server = tokio::spawn(http::serve(listener, metrics.clone(), ready.clone(), async {
        let _ = stop_rx.await;
    }));
    let config = controller::Config {
        converging_requeue: Duration::from_secs(args.requeue_converging_seconds),
        steady_requeue: Duration::from_secs(args.resync_seconds),
        aws_endpoint_url: args.aws_endpoint_url,
        namespace: args.namespace,
        progress_deadline: Duration::from_secs(args.progress_deadline_seconds),
        watch_secrets: args.watch_secrets,
        ..Default::default()
    };
    // The controller returns on SIGINT/SIGTERM, after in-flight reconciles finish.
    let result = controller::run(client, config, metrics, ready).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    result
}
