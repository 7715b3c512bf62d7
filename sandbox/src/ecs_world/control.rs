//! (IO) The ECS world's control API (JSON over HTTP on its own 127.0.0.1 port), for tests in other
//! processes and for people with curl:
//!
//! | route | does |
//! | --- | --- |
//! | `GET /faults` | `{"<cluster>": {"cannotPullImage": true, "agentDisconnected": false}}` |
//! | `PUT /faults/{cluster}` | sets a cluster's faults (`{"cannotPullImage": true}`; absent fields are off) |
//! | `DELETE /faults/{cluster}`, `DELETE /faults` | clears one cluster's, or every, fault |
//! | `GET /events?region=&cluster=&service=` | service events (newest first) the world produced |

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, put},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::faults::{ClusterFaults, WorldState};

pub(crate) fn router(state: WorldState) -> Router {
    Router::new()
        .route("/faults", get(list_faults).delete(clear_faults))
        .route("/faults/{cluster}", put(set_faults).delete(clear_cluster))
        .route("/events", get(events))
        .with_state(state)
}

/// Serves the control API; returns its URL and the server task.
pub(crate) async fn serve(state: WorldState) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    Ok((url, task))
}

async fn list_faults(State(s): State<WorldState>) -> Json<Value> {
    Json(json!(s.all_faults()))
}

async fn set_faults(
    State(s): State<WorldState>,
    Path(cluster): Path<String>,
    Json(faults): Json<ClusterFaults>,
) -> StatusCode {
    s.set_faults(&cluster, faults);
    StatusCode::NO_CONTENT
}

async fn clear_cluster(State(s): State<WorldState>, Path(cluster): Path<String>) -> StatusCode {
    s.set_faults(&cluster, ClusterFaults::default());
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(s): State<WorldState>) -> StatusCode {
    s.clear_faults();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct EventFilter {
    region: Option<String>,
    cluster: Option<String>,
    service: Option<String>,
}

async fn events(State(s): State<WorldState>, Query(f): Query<EventFilter>) -> Json<Value> {
    let out: Vec<Value> = s
        .all_events()
        .into_iter()
        .filter(|((r, c, svc), _)| {
            f.region.as_deref().is_none_or(|x| x == r)
                && f.cluster.as_deref().is_none_or(|x| x == c)
                && f.service.as_deref().is_none_or(|x| x == svc)
        })
        .map(|((region, cluster, service), events)| {
            json!({"region": region, "cluster": cluster, "service": service, "events": events})
        })
        .collect();
    Json(Value::Array(out))
}
