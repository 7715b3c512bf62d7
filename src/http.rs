//! The operator's own HTTP endpoints: `/metrics` (Prometheus), `/healthz` (alive), `/readyz`
//! (watching resources, or campaigning for the leader Lease). `/readyz` answers 200 for the leader
//! and for a standby alike (a rolling update and a PodDisruptionBudget need standbys Ready, see
//! src/leader.rs); its body says which: `ready: leader` or `ready: standby`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(|State(s): State<AppState>| async move { s.metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                if !s.ready.load(Ordering::SeqCst) {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                } else if !s.metrics.apiserver_reachable() {
                    // Watching nothing: say so, rather than look healthy while blind.
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready: the Kubernetes API server does not answer")
                } else {
                    (StatusCode::OK, if s.metrics.is_leader() { "ready: leader" } else { "ready: standby" })
                }
            }),
        )
        .with_state(AppState { metrics, ready })
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready)).with_graceful_shutdown(shutdown).await
}

/// Asks the API server for its version every `every` (2 s timeout) and records whether it
/// answered, for `/readyz` and the `apiserver_reachable` gauge. Runs until dropped.
pub async fn probe_apiserver(client: kube::Client, metrics: Arc<Metrics>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let answered = tokio::time::timeout(std::time::Duration::from_secs(2), client.apiserver_version())
            .await
            .is_ok_and(|r| r.is_ok());
        if answered != metrics.apiserver_reachable() {
            if answered {
                tracing::info!("the Kubernetes API server answers again");
            } else {
                tracing::warn!("the Kubernetes API server does not answer; /readyz fails until it does");
            }
        }
        metrics.set_apiserver_reachable(answered);
    }
}
