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
                if s.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, if s.metrics.is_leader() { "ready: leader" } else { "ready: standby" })
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
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
