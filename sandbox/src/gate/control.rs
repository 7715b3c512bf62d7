//! The gate's control API (JSON over HTTP on its own port), for other processes such as the
//! benchmark or a person with curl:
//!
//! | route | does |
//! | --- | --- |
//! | `GET /calls[?service=ecs&operation=CreateService&mutating=true]` | the call log, oldest first |
//! | `GET /counts` | `{"ecs:CreateService": 3, ...}` |
//! | `POST /reset-log` | empties the call log |
//! | `GET /faults` | active faults |
//! | `POST /faults` | adds a fault or a list of faults (`{"service":"ecs","operation":"ListTasks","kind":"throttle","count":2}`) |
//! | `DELETE /faults` | clears all faults |
//! | `GET /rate-limits` | `{"ecs": {"perSecond": 20, "burst": 50}}` |
//! | `POST /rate-limits` | `{"service":"ecs","perSecond":20,"burst":50}` sets a service's limit |
//! | `DELETE /rate-limits[?service=ecs]` | removes one or all limits |
//! | `POST /credentials` | `{"accessKeyId":"AKIA...","secretAccessKey":"..."}`: another key SigV4 verification accepts |
//! | `GET /paging` | `{"pageSize": 2}` (`null`: AWS's page sizes) |
//! | `POST /paging` | `{"pageSize": 2}` sets the page size of every list call; `DELETE /paging` removes it |

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;

use super::{Call, Fault, RateLimit, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/calls", get(calls))
        .route("/counts", get(get_counts))
        .route("/reset-log", post(reset_log))
        .route("/faults", get(list_faults).post(add_faults).delete(clear_faults))
        .route("/rate-limits", get(list_limits).post(set_limit).delete(clear_limits))
        .route("/paging", get(get_paging).post(set_paging).delete(clear_paging))
        .route("/credentials", post(add_credentials))
        .with_state(shared)
}

#[derive(Deserialize)]
struct CallFilter {
    service: Option<String>,
    operation: Option<String>,
    mutating: Option<bool>,
}

async fn calls(State(sh): State<Arc<Shared>>, Query(f): Query<CallFilter>) -> Json<Vec<Call>> {
    let calls = sh.calls.lock().unwrap();
    Json(
        calls
            .calls()
            .filter(|c| f.service.as_deref().is_none_or(|s| s == c.service))
            .filter(|c| f.operation.as_deref().is_none_or(|o| o == c.operation))
            .filter(|c| f.mutating.is_none_or(|m| m == c.mutating))
            .cloned()
            .collect(),
    )
}

async fn get_counts(State(sh): State<Arc<Shared>>) -> Json<std::collections::BTreeMap<String, u64>> {
    Json(sh.calls.lock().unwrap().counts())
}

async fn reset_log(State(sh): State<Arc<Shared>>) -> StatusCode {
    sh.calls.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(sh): State<Arc<Shared>>) -> Json<Vec<Fault>> {
    Json(sh.control.list())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Fault),
    Many(Vec<Fault>),
}

async fn add_faults(State(sh): State<Arc<Shared>>, Json(body): Json<OneOrMany>) -> (StatusCode, Json<Vec<Fault>>) {
    let faults = match body {
        OneOrMany::One(f) => vec![f],
        OneOrMany::Many(v) => v,
    };
    for f in faults {
        sh.control.add(f);
    }
    (StatusCode::CREATED, Json(sh.control.list()))
}

async fn clear_faults(State(sh): State<Arc<Shared>>) -> StatusCode {
    sh.control.clear();
    StatusCode::NO_CONTENT
}

async fn list_limits(State(sh): State<Arc<Shared>>) -> Json<std::collections::BTreeMap<String, RateLimit>> {
    Json(sh.control.rate_limits())
}

#[derive(Deserialize)]
struct LimitBody {
    service: String,
    #[serde(flatten)]
    limit: RateLimit,
}

async fn set_limit(State(sh): State<Arc<Shared>>, Json(body): Json<LimitBody>) -> StatusCode {
    sh.control.set_rate_limit(&body.service, Some(body.limit));
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ServiceParam {
    service: Option<String>,
}

async fn clear_limits(State(sh): State<Arc<Shared>>, Query(q): Query<ServiceParam>) -> StatusCode {
    let services: Vec<String> = match q.service {
        Some(s) => vec![s],
        None => sh.control.rate_limits().into_keys().collect(),
    };
    for s in services {
        sh.control.set_rate_limit(&s, None);
    }
    StatusCode::NO_CONTENT
}

#[derive(serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Paging {
    page_size: Option<usize>,
}

async fn get_paging(State(sh): State<Arc<Shared>>) -> Json<Paging> {
    Json(Paging { page_size: sh.page_size() })
}

async fn set_paging(State(sh): State<Arc<Shared>>, Json(body): Json<Paging>) -> StatusCode {
    sh.set_page_size(body.page_size);
    StatusCode::NO_CONTENT
}

async fn clear_paging(State(sh): State<Arc<Shared>>) -> StatusCode {
    sh.set_page_size(None);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

async fn add_credentials(State(sh): State<Arc<Shared>>, Json(body): Json<Credentials>) -> StatusCode {
    sh.keys.lock().unwrap().insert(body.access_key_id, body.secret_access_key);
    StatusCode::NO_CONTENT
}
