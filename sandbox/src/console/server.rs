//! (IO) The HTTP(S) edge: the accept loop, TLS, and a front door that every request passes before
//! the axum router: path prefix and API version, faults, authentication, `?project=`, and the
//! request log. The router then only sees `/{endpoint}`.

use std::{convert::Infallible, sync::Arc};

use axum::{
    Extension, Json, Router,
    body::{Body, Bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderValue, Method, Request, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use chrono::{SecondsFormat, Utc};
use hyper::{body::Incoming, service::Service as _};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{Notify, watch},
};
use tokio_rustls::TlsAcceptor;

use super::{
    CENTRAL_CONSOLE, ConsoleRequest, ConsoleVariant, Fault, Shared,
    auth::{Credentials, parse_authorization},
    defenders::{build_summary, parse_defender_query, select_defenders},
    lock,
    task_definition::{build_task_definition, parse_options},
};
use crate::console::bundle::{ProxyOpt, with_fresh_key};

/// The response header with the number of matching items on list endpoints.
const TOTAL_COUNT: &str = "Total-Count";
/// Endpoints that need no credentials: the health check and logging in itself.
const PING: &str = "_ping";
const AUTHENTICATE: &str = "authenticate";

/// What the front door decided to do with a request.
enum Outcome {
    Respond(Response),
    /// Close the connection without answering.
    Drop,
}

/// What handlers learn from the front door.
#[derive(Clone)]
struct RequestContext {
    project: String,
    credentials: Credentials,
}

/// `{"err": msg}` with `status`: the Console's error shape (reference §4).
fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"err": msg.into()}))).into_response()
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

/// `/api/<version>/<endpoint>` under the prefix, with `<version>` `v1` or `vNN.NN`
/// ([inferred] every version routes to the same handlers).
fn parse_api_path<'a>(prefix: &str, path: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix(prefix)?.strip_prefix("/api/")?;
    let (version, endpoint) = rest.split_once('/')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let valid = version
        .strip_prefix('v')
        .is_some_and(|v| v == "1" || v.split_once('.').is_some_and(|(major, minor)| digits(major) && digits(minor)));
    let endpoint = endpoint.trim_end_matches('/');
    (valid && !endpoint.is_empty()).then_some((version, endpoint))
}

/// Runs one request through the front door and the router, and logs it.
async fn handle(shared: &Shared, router: &TowerToHyperService<Router>, req: Request<Incoming>) -> Outcome {
    let credentials = parse_authorization(req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let mut entry = ConsoleRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        endpoint: String::new(),
        api_version: String::new(),
        query: req.uri().query().map(String::from),
        auth: credentials.kind(),
        status: None,
        faults: Vec::new(),
        at: Utc::now(),
    };
    let outcome = front_door(shared, router, req, credentials, &mut entry).await;
    if let Outcome::Respond(resp) = &outcome {
        entry.status = Some(resp.status().as_u16());
    }
    shared.log(entry);
    outcome
}

async fn front_door(
    shared: &Shared,
    router: &TowerToHyperService<Router>,
    req: Request<Incoming>,
    credentials: Credentials,
    entry: &mut ConsoleRequest,
) -> Outcome {
    let path = req.uri().path().to_string();
    let Some((version, endpoint)) = parse_api_path(&shared.prefix, &path) else {
        return Outcome::Respond(err(StatusCode::NOT_FOUND, format!("no such endpoint {path}")));
    };
    entry.api_version = version.to_string();
    entry.endpoint = endpoint.to_string();
    shared.upgrade_if_due(false);

    // Faults come first: rate limiting and broken networks happen before the Console looks at
    // who is calling.
    for fault in shared.faults.take(endpoint) {
        entry.faults.push(fault.clone());
        match fault {
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::ExpireTokens => shared.expire_tokens(),
            Fault::DropConnection => return Outcome::Drop,
            Fault::ServerError => {
                return Outcome::Respond(err(StatusCode::INTERNAL_SERVER_ERROR, "internal server error (injected)"));
            }
            Fault::TooManyRequests { retry_after } => {
                let mut resp = err(StatusCode::TOO_MANY_REQUESTS, "too many requests (injected)");
                if let Some(secs) = retry_after {
                    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return Outcome::Respond(resp);
            }
        }
    }

    let public = endpoint == PING || endpoint == AUTHENTICATE;
    if !public && let Err(msg) = check_credentials(shared, &credentials) {
        return Outcome::Respond(err(StatusCode::UNAUTHORIZED, msg));
    }

    // `?project=` applies to everything but authentication [S4]. [inferred] An unknown project
    // (or any but the Central Console when Projects are off) is a 400, "bad parameters".
    let requested = query_pairs(req.uri().query()).into_iter().rev().find(|(k, _)| k == "project").map(|(_, v)| v);
    let project = match requested.filter(|p| !p.is_empty()) {
        Some(p) if !public && !endpoint.starts_with(AUTHENTICATE) && !shared.known_project(&p) => {
            return Outcome::Respond(err(StatusCode::BAD_REQUEST, format!("project {p} does not exist")));
        }
        Some(p) if !public && !endpoint.starts_with(AUTHENTICATE) => p,
        _ => CENTRAL_CONSOLE.to_string(),
    };

    let (mut parts, body) = req.into_parts();
    let inner = match parts.uri.query() {
        Some(q) => format!("/{endpoint}?{q}"),
        None => format!("/{endpoint}"),
    };
    parts.uri = match inner.parse::<Uri>() {
        Ok(uri) => uri,
        Err(_) => return Outcome::Respond(err(StatusCode::BAD_REQUEST, "malformed path")),
    };
    parts.extensions.insert(RequestContext { project, credentials });
    match router.call(Request::from_parts(parts, body)).await {
        Ok(resp) => Outcome::Respond(resp),
        Err(never) => match never {},
    }
}

/// Checks the `Authorization` of a non-public call. [inferred] error texts (not seen).
fn check_credentials(shared: &Shared, credentials: &Credentials) -> Result<(), &'static str> {
    match credentials {
        Credentials::None => Err("authorization required"),
        Credentials::Malformed => Err("malformed authorization header"),
        Credentials::Bearer(token) => shared.check_token(token).map_err(|e| e.message()),
        Credentials::Basic { username, password } => {
            if shared.credentials_ok(username, password) {
                Ok(())
            } else {
                Err("invalid credentials")
            }
        }
    }
}

fn build_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_ping", get(|| async { StatusCode::OK }))
        .route("/authenticate", post(authenticate))
        .route("/authenticate/renew", get(renew))
        .route("/version", get(version))
        .route("/settings/certs", get(settings_certs))
        .route("/certs/ca.pem", get(ca_pem))
        .route("/defenders", get(list_defenders))
        .route("/defenders/names", get(defender_names))
        .route("/defenders/summary", get(defender_summary))
        .route("/defenders/image-name", get(image_name))
        .route("/defenders/install-bundle", get(install_bundle))
        .route("/defenders/ecs-task.json", post(ecs_task))
        .route("/defenders/{hostname}", delete(delete_defender))
        .fallback(|uri: Uri| async move { err(StatusCode::NOT_FOUND, format!("no such endpoint {}", uri.path())) })
        .method_not_allowed_fallback(|method: Method| async move {
            err(StatusCode::METHOD_NOT_ALLOWED, format!("method {method} not allowed"))
        })
        .with_state(shared)
}

type Shr = State<Arc<Shared>>;

/// `POST /authenticate` with `{"username", "password"}` (keys case-insensitive, as Go decodes).
async fn authenticate(State(shared): Shr, body: Bytes) -> Response {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
        return err(StatusCode::BAD_REQUEST, "invalid authentication request body");
    };
    let get =
        |name: &str| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_str()).unwrap_or("");
    let (username, password) = (get("username"), get("password"));
    // [inferred] Exchanging a Prisma (CSPM) JWT in `token` is not simulated: it fails like bad credentials.
    if username.is_empty() || !shared.credentials_ok(username, password) {
        return err(StatusCode::UNAUTHORIZED, "invalid credentials");
    }
    Json(json!({"token": shared.issue_token(username)})).into_response()
}

/// `GET /authenticate/renew`: a fresh token for an unexpired bearer token (the front door has
/// checked it). [inferred] Basic credentials cannot renew; the old token stays valid until it expires.
async fn renew(State(shared): Shr, Extension(ctx): Extension<RequestContext>) -> Response {
    match ctx.credentials {
        Credentials::Bearer(_) => Json(json!({"token": shared.issue_token(&shared.cfg.username)})).into_response(),
        _ => err(StatusCode::UNAUTHORIZED, "renew requires a bearer token"),
    }
}

async fn version(State(shared): Shr) -> Json<String> {
    Json(shared.version())
}

async fn settings_certs(State(shared): Shr) -> Json<Value> {
    let mut v = json!({
        "caExpiration": shared.ca_expiration.to_rfc3339_opts(SecondsFormat::Millis, true),
        "consoleSAN": shared.cfg.sans,
        "defenderOldCAExpiration": "0001-01-01T00:00:00Z",
    });
    if shared.cfg.variant == ConsoleVariant::UnknownFields {
        v["consoleCustomCerts"] = json!({"enabled": false});
    }
    Json(v)
}

/// `GET /certs/ca.pem` (a supported v1 endpoint): the CA, when this Console serves TLS.
async fn ca_pem(State(shared): Shr) -> Response {
    match &shared.ca_pem {
        Some(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem.clone()).into_response(),
        None => err(StatusCode::NOT_FOUND, "this console serves no TLS certificate"),
    }
}

async fn image_name(State(shared): Shr) -> Json<String> {
    Json(shared.image_name())
}

/// `GET /defenders/install-bundle?consoleaddr=..&defenderType=..`. [inferred] Without
/// `consoleaddr` the first SAN is used; one that is not a SAN is a 400.
async fn install_bundle(
    State(shared): Shr,
    Extension(ctx): Extension<RequestContext>,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = query_pairs(q.as_deref());
    let addr = pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case("consoleaddr")).map(|(_, v)| v.as_str());
    let addr = match addr.filter(|a| !a.is_empty()) {
        None => shared.cfg.sans[0].clone(),
        Some(a) if shared.is_san(a) => a.to_string(),
        Some(a) => return err(StatusCode::BAD_REQUEST, format!("{a} is not a console SAN")),
    };
    Json(json!({
        "installBundle": shared.install_bundle(&ctx.project, &ProxyOpt::default()),
        "wsAddress": shared.ws_address(&addr),
    }))
    .into_response()
}

/// `POST /defenders/ecs-task.json`. [inferred] A missing `consoleAddr` is a 400 like one that
/// is not a SAN: the Console cannot tell Defenders where to connect.
async fn ecs_task(State(shared): Shr, Extension(ctx): Extension<RequestContext>, body: Bytes) -> Response {
    let opts = match parse_options(&body) {
        Ok(o) => o,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let addr = match opts.console_addr.as_deref().filter(|a| !a.is_empty()) {
        None => return err(StatusCode::BAD_REQUEST, "consoleAddr is required"),
        Some(a) if !shared.is_san(a) => {
            return err(StatusCode::BAD_REQUEST, format!("console address {a} is not one of the console SANs"));
        }
        Some(a) => a,
    };
    shared.upgrade_if_due(true);
    let mut bundle = shared.install_bundle(&ctx.project, &opts.proxy);
    if shared.cfg.variant == ConsoleVariant::FreshBundle {
        bundle = with_fresh_key(&bundle, &uuid::Uuid::new_v4().to_string());
    }
    let mut td = build_task_definition(&opts, &shared.image_name(), &bundle, &shared.ws_address(addr));
    if shared.cfg.variant == ConsoleVariant::UnknownFields {
        // Valid in RegisterTaskDefinition, unknown to a client that models only what it saw.
        if let Some(c) = td.get_mut("containerDefinitions").and_then(|c| c.get_mut(0)) {
            c["ulimits"] = json!([{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}]);
            c["systemControls"] = json!([]);
        }
    }
    Json(td).into_response()
}

/// The page of Defenders a `GET /defenders[/names]` query selects, each rendered by `render`,
/// with the `Total-Count` header.
fn page_of_defenders(
    shared: &Shared,
    ctx: &RequestContext,
    q: Option<String>,
    render: impl Fn(&crate::console::Defender, &super::defenders::Rendering) -> Value,
) -> Response {
    let query = match parse_defender_query(&query_pairs(q.as_deref()), shared.max_page_size()) {
        Ok(q) => q,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let all = lock(&shared.defenders);
    let rendering = shared.rendering();
    let (page, total) = select_defenders(&all, &ctx.project, &query, rendering.now);
    with_total(total, Value::Array(page.iter().map(|d| render(d, &rendering)).collect()))
}

fn with_total(total: usize, body: Value) -> Response {
    ([(TOTAL_COUNT, total.to_string())], Json(body)).into_response()
}

async fn list_defenders(
    State(shared): Shr,
    Extension(ctx): Extension<RequestContext>,
    RawQuery(q): RawQuery,
) -> Response {
    page_of_defenders(&shared, &ctx, q, |d, r| d.render(r))
}

/// `GET /defenders/names`: the hostnames, with the same parameters as `GET /defenders`.
async fn defender_names(
    State(shared): Shr,
    Extension(ctx): Extension<RequestContext>,
    RawQuery(q): RawQuery,
) -> Response {
    page_of_defenders(&shared, &ctx, q, |d, _| json!(d.hostname))
}

async fn defender_summary(State(shared): Shr, Extension(ctx): Extension<RequestContext>) -> Json<Value> {
    let all = lock(&shared.defenders);
    Json(build_summary(all.iter().filter(|d| d.project == ctx.project)))
}

/// `DELETE /defenders/{hostname}`: removes the record, `200` with an empty body.
/// [inferred] A Defender that is still connected reconnects at once, so its record comes back
/// (with a new `lastModified`); an unknown hostname is a 404.
async fn delete_defender(
    State(shared): Shr,
    Extension(ctx): Extension<RequestContext>,
    Path(hostname): Path<String>,
) -> Response {
    let mut all = lock(&shared.defenders);
    let Some(i) = all.iter().position(|d| d.hostname == hostname && d.project == ctx.project) else {
        return err(StatusCode::NOT_FOUND, format!("defender {hostname} not found"));
    };
    let removed = all.remove(i);
    if removed.connected {
        all.push(super::Defender { last_modified: Utc::now(), ..removed });
    }
    StatusCode::OK.into_response()
}

/// Accepts connections until the last [`super::ConsoleSim`] handle drops.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<()>,
) {
    let router = TowerToHyperService::new(build_router(shared.clone()));
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors and the like: back off a little instead of spinning.
                Err(_) => { tokio::time::sleep(std::time::Duration::from_millis(50)).await; continue; }
            },
            _ = stop.changed() => return,
        };
        let (shared, router, tls, mut stop) = (shared.clone(), router.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(tcp, shared, router, stop).await,
                Some(acceptor) => {
                    let tls_stream = tokio::select! {
                        s = acceptor.accept(tcp) => s,
                        _ = stop.changed() => return,
                    };
                    // A failed handshake (a client that does not trust the CA) just ends the connection.
                    if let Ok(s) = tls_stream {
                        serve_connection(s, shared, router, stop).await;
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1 or HTTP/2 on one connection. Dropping the connection future closes the socket,
/// which is how a dropped-connection fault leaves the client without a response.
async fn serve_connection<I>(
    io: I,
    shared: Arc<Shared>,
    router: TowerToHyperService<Router>,
    mut stop: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = kill.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (shared, router, kill) = (shared.clone(), router.clone(), kill.clone());
            async move {
                match handle(&shared, &router, req).await {
                    Outcome::Respond(resp) => Ok::<Response<Body>, Infallible>(resp),
                    Outcome::Drop => {
                        kill.notify_one();
                        std::future::pending().await
                    }
                }
            }
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_route_v1_and_versioned_alike() {
        assert_eq!(parse_api_path("", "/api/v1/defenders"), Some(("v1", "defenders")));
        assert_eq!(parse_api_path("", "/api/v34.03/defenders/names/"), Some(("v34.03", "defenders/names")));
        assert_eq!(parse_api_path("/t1", "/t1/api/v1/_ping"), Some(("v1", "_ping")));
        assert_eq!(parse_api_path("/t1", "/api/v1/_ping"), None, "prefix required");
        assert_eq!(parse_api_path("", "/api/v2/_ping"), None);
        assert_eq!(parse_api_path("", "/api/v34/_ping"), None);
        assert_eq!(parse_api_path("", "/api/v34.x/_ping"), None);
        assert_eq!(parse_api_path("", "/api/v1/"), None);
        assert_eq!(parse_api_path("", "/other"), None);
    }
}
