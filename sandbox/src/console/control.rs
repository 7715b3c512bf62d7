//! (IO) The Console simulator's control API: plain JSON over HTTP on its own 127.0.0.1 port
//! ([`super::ConsoleSim::control_url`]; `sandbox up` writes it as `PRISMA_CONSOLE_CONTROL_URL`),
//! so tests in other processes and scripts can do what the Rust API does:
//!
//! | route | does |
//! | --- | --- |
//! | `GET /faults` | the armed fault rules |
//! | `POST /faults` | adds a rule or a list: `{"endpoint":"defenders","fault":"serverError","remaining":3,"rate":0.5}`; faults `"serverError"`, `"dropConnection"`, `"expireTokens"`, `{"tooManyRequests":{"retryAfter":2}}`, `{"delayMs":400}`; no `endpoint`: every route |
//! | `DELETE /faults` | clears every rule |
//! | `GET`, `PUT /page-size` | `{"maxPageSize": 2}`: the largest `limit` the Defender list honours |
//! | `GET`, `PUT /version` | `{"version": "34.04.100"}`: a Console upgrade (image and bundle follow) |
//! | `POST /expire-tokens` | every token issued so far is expired |
//! | `GET /requests[?endpoint=defenders]` | the request log (method, endpoint, query, status, faults) |
//! | `GET /defenders` | every Defender record, as the Console lists them, with its project |

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch};

use super::{FaultRule, Shared, lock};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/faults", get(list_faults).post(add_faults).delete(clear_faults))
        .route("/page-size", get(get_page_size).put(set_page_size))
        .route("/version", get(get_version).put(set_version))
        .route("/expire-tokens", post(expire_tokens))
        .route("/requests", get(requests))
        .route("/defenders", get(defenders))
        .with_state(shared)
}

/// Serves until the Console's last handle drops.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let _ = axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}

type Shr = State<Arc<Shared>>;

async fn list_faults(State(sh): Shr) -> Json<Vec<FaultRule>> {
    Json(sh.faults.pending())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(FaultRule),
    Many(Vec<FaultRule>),
}

async fn add_faults(State(sh): Shr, Json(body): Json<OneOrMany>) -> (StatusCode, Json<Vec<FaultRule>>) {
    let rules = match body {
        OneOrMany::One(r) => vec![r],
        OneOrMany::Many(v) => v,
    };
    for mut r in rules {
        r.endpoint = r.endpoint.map(|e| e.trim_matches('/').to_string());
        r.rate = r.rate.map(|p| p.clamp(0.0, 1.0));
        sh.faults.inject(r);
    }
    (StatusCode::CREATED, Json(sh.faults.pending()))
}

async fn clear_faults(State(sh): Shr) -> StatusCode {
    sh.faults.clear();
    StatusCode::NO_CONTENT
}

async fn get_page_size(State(sh): Shr) -> Json<Value> {
    Json(json!({"maxPageSize": sh.max_page_size()}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageSize {
    max_page_size: usize,
}

async fn set_page_size(State(sh): Shr, Json(body): Json<PageSize>) -> StatusCode {
    sh.max_page_size.store(body.max_page_size.max(1), std::sync::atomic::Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn get_version(State(sh): Shr) -> Json<Value> {
    Json(json!({"version": sh.version()}))
}

#[derive(Deserialize)]
struct Version {
    version: String,
}

async fn set_version(State(sh): Shr, Json(body): Json<Version>) -> StatusCode {
    if body.version.is_empty() {
        return StatusCode::BAD_REQUEST;
    }
    sh.set_version(&body.version);
    StatusCode::NO_CONTENT
}

async fn expire_tokens(State(sh): Shr) -> StatusCode {
    sh.expire_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct RequestFilter {
    endpoint: Option<String>,
}

async fn requests(State(sh): Shr, Query(f): Query<RequestFilter>) -> Json<Vec<Value>> {
    let log = lock(&sh.requests);
    Json(
        log.iter()
            .filter(|r| f.endpoint.as_deref().is_none_or(|e| e == r.endpoint))
            .map(|r| {
                json!({
                    "method": r.method, "path": r.path, "endpoint": r.endpoint, "query": r.query,
                    "status": r.status, "faults": r.faults, "at": r.at,
                })
            })
            .collect(),
    )
}

async fn defenders(State(sh): Shr) -> Json<Vec<Value>> {
    let rendering = sh.rendering();
    Json(
        lock(&sh.defenders)
            .iter()
            .map(|d| {
                let mut v = d.render(&rendering);
                v["project"] = json!(d.project);
                v
            })
            .collect(),
    )
}
