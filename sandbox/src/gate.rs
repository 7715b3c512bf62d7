//! The AWS gate: an HTTP proxy in front of moto that the operator and the tests use as their AWS
//! endpoint (`AWS_ENDPOINT_URL`). It
//!
//! - records every call (service, operation, key parameters, outcome, time) for tests and the benchmark;
//! - adds the AWS behaviour moto lacks (../shared/reference/moto-and-aws.md, "Where moto differs"):
//!   ECS service rules and DAEMON presentation ([`ecs`]), Auto Scaling rules ([`autoscaling`]),
//!   answering refusals with AWS's own codes in each protocol's format ([`protocol`]);
//! - injects faults and emulates request-rate limits ([`faults`]).
//!
//! A small JSON control API on a second port serves the same to other processes:
//! `GET /calls`, `GET /counts`, `POST /reset-log`, `GET|POST|DELETE /faults`,
//! `GET|POST|DELETE /rate-limits`.
//!
//! State moto lacks (client tokens, DRAINING services, deployments) lives here, keyed by
//! account/region/cluster/service; it is lost with the gate.

mod autoscaling;
pub mod changes;
mod control;
mod ec2;
mod ecs;
pub mod faults;
pub mod iam_policy;
mod paging;
pub mod protocol;
mod sigv4;
mod upstream;
mod xml;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, task::JoinSet};

pub use self::{
    changes::{Change, ChangeListener},
    faults::{Fault, FaultKind, RateLimit},
};
use self::{
    faults::{FaultSet, RateLimiter},
    protocol::Identified,
    upstream::Upstream,
};
use crate::moto::ACCOUNT_ID;

/// How to start a gate.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// moto's base URL (`http://127.0.0.1:PORT`).
    pub upstream: String,
    /// Port of the AWS endpoint; `None` picks a free one.
    pub port: Option<u16>,
    /// Port of the control API; `None` picks a free one.
    pub control_port: Option<u16>,
    /// Shortest time a deleted service stays DRAINING, even when it has no tasks left (AWS takes a
    /// few seconds; this keeps the "re-created right after deletion" race reproducible).
    pub draining_min: Duration,
    /// Request-rate limits per service (`"ecs"`, `"autoscaling"`, ...), from the start.
    pub rate_limits: BTreeMap<String, RateLimit>,
    /// Calls kept in the log (the oldest are dropped beyond it; counts stay exact).
    pub max_log: usize,
    /// How long a deleted Auto Scaling group stays `Delete in progress` (AWS: minutes).
    pub asg_delete_delay: Duration,
    /// How long after a failed instance launch the group tries again (AWS backs off from ~10 s).
    pub launch_retry: Duration,
    /// Instance warm-up of an instance refresh that names none (AWS: the group's, 300 s by default).
    pub refresh_warmup: Duration,
    /// Period of the gate's Auto Scaling loop (refreshes, retries, slow deletes).
    pub fleet_tick: Duration,
    /// Verify SigV4 signatures (AWS always does; off only for tests of the gate itself).
    pub verify_signatures: bool,
    /// Access keys the gate accepts, `(access key id, secret)`: the sandbox's own by default. More
    /// at run time with [`Gate::add_credentials`] or `POST /credentials`; STS answers add theirs.
    pub credentials: Vec<(String, String)>,
    /// IAM instance profiles (each with a role of the same name) that exist in moto's default account
    /// from the start, as the guide's prerequisites leave an account (`ecsInstanceRole`): launches
    /// with any other profile fail, as on AWS.
    pub instance_profiles: Vec<String>,
    /// Small pages for every list call, so paging code runs in tests (`None`: AWS's page sizes).
    /// Also settable at run time (`POST /paging`).
    pub page_size: Option<usize>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            upstream: String::new(),
            port: None,
            control_port: None,
            draining_min: Duration::from_secs(1),
            rate_limits: BTreeMap::new(),
            max_log: 200_000,
            asg_delete_delay: Duration::from_secs(3),
            launch_retry: Duration::from_secs(10),
            refresh_warmup: Duration::from_secs(2),
            fleet_tick: Duration::from_millis(250),
            page_size: None,
            verify_signatures: true,
            instance_profiles: vec!["ecsInstanceRole".to_string()],
            credentials: vec![(crate::moto::ACCESS_KEY_ID.to_string(), crate::moto::SECRET_ACCESS_KEY.to_string())],
        }
    }
}

impl GateConfig {
    pub fn new(upstream: &str) -> GateConfig {
        GateConfig { upstream: upstream.to_string(), ..GateConfig::default() }
    }
}

/// One call through the gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// Service signing name: `ecs`, `autoscaling`, `ec2`, `ssm`, `iam`, `sts` (`moto` for `/moto-api`).
    pub service: String,
    pub operation: String,
    /// Key parameters (cluster, service, ASG and launch template names, ...).
    pub params: BTreeMap<String, String>,
    /// HTTP status answered; 0 when the connection was dropped.
    pub status: u16,
    /// AWS error code of an error answer (`ThrottlingException`, `AlreadyExists`, ...).
    pub error_code: Option<String>,
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// Whether the operation changes state (not Describe/List/Get).
    pub mutating: bool,
    pub region: String,
    /// The answer never reached the caller (it went away mid-call, or a `dropResponse` fault), though
    /// the call reached moto and did its work.
    #[serde(default)]
    pub answer_lost: bool,
}

impl Call {
    /// `"ecs:CreateService"`, the key of [`Gate::counts`].
    pub fn key(&self) -> String {
        format!("{}:{}", self.service, self.operation)
    }
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let dt: chrono::DateTime<chrono::Utc> = (*t).into();
        s.serialize_str(&dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        let dt = chrono::DateTime::parse_from_rfc3339(&s).map_err(D::Error::custom)?;
        Ok(dt.with_timezone(&chrono::Utc).into())
    }
}

/// Adds and clears faults of a running gate.
#[derive(Clone)]
pub struct FaultControl {
    faults: Arc<Mutex<FaultSet>>,
    limiter: Arc<Mutex<RateLimiter>>,
}

impl FaultControl {
    pub fn add(&self, fault: Fault) {
        self.faults.lock().unwrap().add(fault);
    }

    pub fn clear(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// The active faults (counted ones disappear when used up).
    pub fn list(&self) -> Vec<Fault> {
        self.faults.lock().unwrap().list()
    }

    /// Sets (or with `None` removes) the request-rate limit of a service.
    pub fn set_rate_limit(&self, service: &str, limit: Option<RateLimit>) {
        self.limiter.lock().unwrap().set(service, limit);
    }

    pub fn rate_limits(&self) -> BTreeMap<String, RateLimit> {
        self.limiter.lock().unwrap().limits()
    }
}

/// State shared by the proxy's connections.
/// The events of a service, newest first, as (message, seconds since the epoch).
pub trait ServiceEvents: Send + Sync {
    fn events(&self, region: &str, cluster: &str, service: &str) -> Vec<(String, f64)>;
}

pub(crate) struct Shared {
    cfg: GateConfig,
    upstream: Upstream,
    calls: Mutex<CallLog>,
    control: FaultControl,
    ecs: Mutex<ecs::Overlay>,
    /// The Auto Scaling groups the gate launches for.
    fleet: Mutex<autoscaling::Fleet>,
    /// Launch template versions' user data and deleted versions.
    templates: Mutex<ec2::Templates>,
    /// Per region: architecture of the ECS-optimized AMIs moto's SSM names (cached).
    ami_architectures: Mutex<std::collections::HashMap<String, std::collections::HashMap<String, String>>>,
    /// Access keys accepted by SigV4 verification: id -> secret.
    keys: Mutex<std::collections::HashMap<String, String>>,
    /// Identity policies enforced per access key (actions only; see [`iam_policy`]).
    policies: Mutex<std::collections::HashMap<String, iam_policy::IdentityPolicy>>,
    /// The page size of list calls; 0: AWS's own.
    page_size: std::sync::atomic::AtomicUsize,
    /// Where service events come from (the ECS world places tasks, so it knows why one could not
    /// be placed); set once the world runs.
    service_events: Mutex<Option<Arc<dyn ServiceEvents>>>,
    /// Held across check-then-forward of the ruled mutations, so two concurrent calls cannot both
    /// pass a check (two CreateService of one name, for instance).
    rules_lock: tokio::sync::Mutex<()>,
}

/// One request being handled.
pub(crate) struct Ctx {
    method: http::Method,
    path_and_query: String,
    headers: http::HeaderMap,
    body: Bytes,
    id: Identified,
    account: String,
}

pub(crate) type Reply = Response<Full<Bytes>>;

impl Shared {
    pub(crate) fn page_size(&self) -> Option<usize> {
        Some(self.page_size.load(std::sync::atomic::Ordering::Relaxed)).filter(|n| *n > 0)
    }

    pub(crate) fn set_page_size(&self, size: Option<usize>) {
        self.page_size.store(size.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// Forwards the request to moto, with `body` replacing the original one if given.
    async fn forward(&self, ctx: &Ctx, body: Option<Bytes>) -> Result<upstream::Raw> {
        self.upstream
            .send(&ctx.method, &ctx.path_and_query, &ctx.headers, body.unwrap_or_else(|| ctx.body.clone()))
            .await
    }

    fn side(&self, ctx: &Ctx) -> upstream::Side<'_> {
        self.upstream.side(&ctx.headers)
    }

    fn record(&self, ctx: &Ctx, status: u16, error_code: Option<String>) {
        self.record_call(ctx, status, error_code, false);
    }

    fn record_call(&self, ctx: &Ctx, status: u16, error_code: Option<String>, answer_lost: bool) {
        let call = Call {
            answer_lost,
            service: ctx.id.service.clone(),
            operation: ctx.id.operation.clone(),
            params: protocol::key_params(&ctx.id),
            status,
            error_code,
            at: SystemTime::now(),
            mutating: protocol::is_mutating(&ctx.id.operation),
            region: ctx.id.region.clone(),
        };
        self.calls.lock().unwrap().push(call, self.cfg.max_log);
    }
}

/// The call log (bounded) and the exact number of calls per `service:Operation` since the last reset.
#[derive(Default)]
pub(crate) struct CallLog {
    calls: std::collections::VecDeque<Call>,
    counts: BTreeMap<String, u64>,
}

impl CallLog {
    fn push(&mut self, call: Call, max: usize) {
        *self.counts.entry(call.key()).or_insert(0) += 1;
        self.calls.push_back(call);
        while self.calls.len() > max.max(1) {
            self.calls.pop_front();
        }
    }

    pub(crate) fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.iter()
    }

    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.clone()
    }

    pub(crate) fn clear(&mut self) {
        self.calls.clear();
        self.counts.clear();
    }
}

/// The connection is dropped without an answer (the `Drop` fault).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

/// A running gate; its servers stop when it is dropped.
pub struct Gate {
    shared: Arc<Shared>,
    addr: SocketAddr,
    control_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Gate {
    pub async fn start(cfg: GateConfig) -> Result<Gate> {
        let upstream = Upstream::new(&cfg.upstream)?;
        keep_tasks_running(&upstream).await;
        create_instance_profiles(&upstream, &cfg.instance_profiles).await;
        let mut limiter = RateLimiter::default();
        for (service, limit) in &cfg.rate_limits {
            limiter.set(service, Some(*limit));
        }
        let control =
            FaultControl { faults: Arc::new(Mutex::new(FaultSet::default())), limiter: Arc::new(Mutex::new(limiter)) };
        let listener = TcpListener::bind(("127.0.0.1", cfg.port.unwrap_or(0))).await.context("binding the gate")?;
        let control_listener = TcpListener::bind(("127.0.0.1", cfg.control_port.unwrap_or(0)))
            .await
            .context("binding the gate's control API")?;
        let addr = listener.local_addr()?;
        let control_addr = control_listener.local_addr()?;
        let page_size = std::sync::atomic::AtomicUsize::new(cfg.page_size.unwrap_or(0));
        let keys = cfg.credentials.iter().cloned().collect();
        let fleet_tick = cfg.fleet_tick;
        let shared = Arc::new(Shared {
            cfg,
            upstream,
            calls: Mutex::new(CallLog::default()),
            control,
            ecs: Mutex::new(ecs::Overlay::default()),
            fleet: Mutex::new(autoscaling::Fleet::default()),
            templates: Mutex::new(ec2::Templates::default()),
            ami_architectures: Mutex::new(Default::default()),
            page_size,
            keys: Mutex::new(keys),
            policies: Mutex::new(Default::default()),
            service_events: Mutex::new(None),
            rules_lock: tokio::sync::Mutex::new(()),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(autoscaling::launch::run(Arc::downgrade(&shared), fleet_tick));
        let sh = shared.clone();
        tasks.spawn(serve(listener, move || {
            let sh = sh.clone();
            hyper::service::service_fn(move |req| handle(sh.clone(), req))
        }));
        let router = control::router(shared.clone());
        tasks.spawn(serve(control_listener, move || hyper_util::service::TowerToHyperService::new(router.clone())));
        tracing::info!(%addr, %control_addr, "AWS gate started");
        Ok(Gate { shared, addr, control_addr, tasks })
    }

    /// The AWS endpoint (`AWS_ENDPOINT_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The control API's base URL (`SANDBOX_GATE_URL`).
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_addr)
    }

    /// moto's URL behind the gate.
    pub fn upstream_url(&self) -> &str {
        self.shared.upstream.base()
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().calls().cloned().collect()
    }

    /// Number of calls per `"service:Operation"`.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.shared.calls.lock().unwrap().counts()
    }

    /// Empties the call log.
    pub fn clear_calls(&self) {
        self.shared.calls.lock().unwrap().clear();
    }

    /// Fault and rate-limit controls.
    pub fn faults(&self) -> FaultControl {
        self.shared.control.clone()
    }

    pub fn add_fault(&self, fault: Fault) {
        self.shared.control.add(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.control.clear();
    }

    /// Lets `DescribeServices` show the events `source` knows (placement failures), as ECS does.
    pub fn set_service_events(&self, source: Arc<dyn ServiceEvents>) {
        *self.shared.service_events.lock().unwrap() = Some(source);
    }

    /// Tells `listener` of every change moto accepts through the gate (the ECS world reads what
    /// changed rather than everything).
    pub fn set_change_listener(&self, listener: Arc<dyn ChangeListener>) {
        self.shared.upstream.listener.set(listener);
    }

    /// Accepts another access key (tests that sign with keys of their own).
    pub fn add_credentials(&self, access_key_id: &str, secret_access_key: &str) {
        self.shared.keys.lock().unwrap().insert(access_key_id.to_string(), secret_access_key.to_string());
    }

    /// Enforces an IAM identity policy (JSON) on the calls signed with `access_key_id`: an action
    /// it does not allow is refused with AWS's access-denied error for that service. Actions only;
    /// `Resource` and `Condition` are not evaluated.
    pub fn enforce_policy(&self, access_key_id: &str, policy: &serde_json::Value) {
        let p = iam_policy::IdentityPolicy::from_json(policy);
        self.shared.policies.lock().unwrap().insert(access_key_id.to_string(), p);
    }

    /// Sets (or with `None` removes) the page size of every list call.
    pub fn set_page_size(&self, size: Option<usize>) {
        self.shared.set_page_size(size);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// moto advances a task's state on every DescribeTasks; this keeps them RUNNING (as the agent would)
/// even when only the gate describes them.
pub(crate) async fn keep_tasks_running(upstream: &Upstream) {
    let body =
        serde_json::json!({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000}});
    let headers = http::HeaderMap::new();
    let _ = upstream
        .send(&http::Method::POST, "/moto-api/state-manager/set-transition", &headers, Bytes::from(body.to_string()))
        .await;
}

/// The account's instance profiles from the start (each with its role, as the console makes them).
async fn create_instance_profiles(upstream: &Upstream, names: &[String]) {
    const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let side = upstream.side_as(ACCOUNT_ID, "us-east-1");
    for name in names {
        let calls: [(&str, Vec<(&str, String)>); 3] = [
            ("CreateRole", vec![("RoleName", name.clone()), ("AssumeRolePolicyDocument", TRUST.to_string())]),
            ("CreateInstanceProfile", vec![("InstanceProfileName", name.clone())]),
            ("AddRoleToInstanceProfile", vec![("InstanceProfileName", name.clone()), ("RoleName", name.clone())]),
        ];
        for (action, params) in calls {
            // Already there (a second gate on the same moto) is fine.
            let _ = side.call("iam", action, "2010-05-08", &params).await;
        }
    }
}

/// Accepts connections until aborted; aborting also ends every connection (the JoinSet drops).
async fn serve<M, S, B>(listener: TcpListener, make: M)
where
    M: Fn() -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let svc = make();
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(sh: Arc<Shared>, req: Request<Incoming>) -> Result<Reply, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let id = protocol::identify(&parts.headers, &parts.uri, &body);
    let account =
        parts.headers.get("x-moto-account-id").and_then(|v| v.to_str().ok()).unwrap_or(ACCOUNT_ID).to_string();
    let mut refusal = if ctx_is_aws(&id) && sh.cfg.verify_signatures && !unsigned_allowed(&id) {
        let keys = sh.keys.lock().unwrap();
        sigv4::check(&keys, &id.service, parts.method.as_str(), &parts.uri, &parts.headers, &body)
            .map(|(s, c, m)| (s, c, m.to_string()))
    } else {
        None
    };
    if refusal.is_none() && ctx_is_aws(&id) {
        let key = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(sigv4::parse_authorization)
            .map(|a| a.access_key);
        let action = format!("{}:{}", id.service, id.operation);
        if let Some(policy) = key.and_then(|k| sh.policies.lock().unwrap().get(&k).cloned())
            && !policy.allows(&action)
        {
            refusal = Some(iam_policy::access_denied(&id.service, &action));
        }
    }
    let ctx = Ctx {
        method: parts.method,
        path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into()),
        headers: parts.headers,
        body,
        id,
        account,
    };
    let service = ctx.id.service.clone();
    if let Some((status, code, message)) = refusal {
        sh.record(&ctx, status, Some(code.to_string()));
        return Ok(protocol::error_response(&service, status, code, &message));
    }
    let decision = if ctx.id.service == "moto" {
        faults::Decision::default()
    } else {
        sh.control.faults.lock().unwrap().decide(&ctx.id.service, &ctx.id.operation, rand::random::<f64>)
    };
    // Injected latency is AWS taking its time: for a call that goes through it is spent inside the
    // call (below), so a caller that gives up meanwhile does not stop the work.
    let latency = decision.latency;
    if !latency.is_zero()
        && !matches!(decision.action, Some(FaultKind::DropResponse) | Some(FaultKind::HangAfterDone) | None)
    {
        tokio::time::sleep(latency).await;
    }
    let reply = match decision.action {
        Some(FaultKind::Drop) => {
            sh.record(&ctx, 0, Some("ConnectionDropped".into()));
            return Err(Dropped);
        }
        Some(FaultKind::Hang) => {
            // Logged now, answered never: the caller's timeout or death ends the request.
            sh.record_call(&ctx, 0, Some("Hung".into()), true);
            return std::future::pending().await;
        }
        Some(FaultKind::Throttle) => throttled(&service),
        Some(FaultKind::Status(s)) => {
            let (code, msg) = protocol::status_error(&service, s);
            protocol::error_response(&service, s, code, msg)
        }
        Some(FaultKind::Latency(_)) | Some(FaultKind::DropResponse) | Some(FaultKind::HangAfterDone) | None => {
            let lose = decision.action == Some(FaultKind::DropResponse);
            let hang = decision.action == Some(FaultKind::HangAfterDone);
            // The call runs in a task of its own: a caller that goes away (a timeout, a closed
            // connection) does not cancel work moto has started, as on AWS; the log says the
            // answer was lost.
            let (tx, rx) = tokio::sync::oneshot::channel::<Reply>();
            let sh = sh.clone();
            tokio::spawn(async move {
                tokio::time::sleep(latency).await;
                let admitted =
                    sh.control.limiter.lock().unwrap().admit(&ctx.id.service, &ctx.id.region, Instant::now());
                let reply = if admitted { process(&sh, &ctx).await } else { throttled(&ctx.id.service) };
                let status = reply.status().as_u16();
                let code = reply_code(&reply).await;
                if ctx.id.service == "sts"
                    && status == 200
                    && let Some((id, secret)) = sigv4::learn_from_sts(&body_bytes(&reply).await)
                {
                    sh.keys.lock().unwrap().insert(id, secret);
                }
                let lost = lose || hang || tx.is_closed();
                if lost {
                    tracing::info!(operation = %ctx.id.operation, status, "the caller never got the answer");
                }
                sh.record_call(&ctx, status, code, lost);
                if !lost {
                    let _ = tx.send(reply);
                }
            });
            return match rx.await {
                Ok(reply) => Ok(reply),
                Err(_) if hang => std::future::pending().await,
                Err(_) => Err(Dropped),
            };
        }
    };
    let status = reply.status().as_u16();
    let code = reply_code(&reply).await;
    sh.record(&ctx, status, code);
    Ok(reply)
}

/// Whether a request is an AWS API call (not moto's own `/moto-api`).
fn ctx_is_aws(id: &Identified) -> bool {
    id.service != "moto"
}

/// STS's web-identity and SAML calls are the only ones AWS takes unsigned (IRSA uses them).
fn unsigned_allowed(id: &Identified) -> bool {
    id.service == "sts" && matches!(id.operation.as_str(), "AssumeRoleWithWebIdentity" | "AssumeRoleWithSAML")
        || (id.service == "unknown" && id.operation.starts_with("AssumeRoleWith"))
}

async fn body_bytes(reply: &Reply) -> Bytes {
    match reply.body().clone().collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    }
}

async fn reply_code(reply: &Reply) -> Option<String> {
    protocol::error_code(reply.status().as_u16(), reply.headers(), &body_bytes(reply).await)
}

fn throttled(service: &str) -> Reply {
    let (status, code, msg) = protocol::throttle_error(service);
    protocol::error_response(service, status, code, msg)
}

/// Applies the AWS rules of the call's service, forwarding to moto what passes.
async fn process(sh: &Shared, ctx: &Ctx) -> Reply {
    let result = match ctx.id.service.as_str() {
        "ecs" => ecs::handle(sh, ctx).await,
        "autoscaling" => autoscaling::handle(sh, ctx).await,
        "ec2" => ec2::handle(sh, ctx).await,
        _ => sh.forward(ctx, None).await.map(upstream::Raw::into_response),
    };
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), operation = %ctx.id.operation, "gate could not reach moto");
        Response::builder()
            .status(502)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(format!("gate: {e:#}"))))
            .expect("static response")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: &str) -> Call {
        Call {
            service: "ecs".into(),
            operation: op.into(),
            params: BTreeMap::new(),
            status: 200,
            error_code: None,
            at: SystemTime::UNIX_EPOCH,
            mutating: false,
            region: "us-east-1".into(),
            answer_lost: false,
        }
    }

    #[test]
    fn log_is_bounded_and_counts_stay_exact() {
        let mut log = CallLog::default();
        for op in ["ListTasks", "ListTasks", "DescribeTasks"] {
            log.push(call(op), 2);
        }
        assert_eq!(log.calls().map(|c| c.operation.as_str()).collect::<Vec<_>>(), ["ListTasks", "DescribeTasks"]);
        assert_eq!(log.counts().get("ecs:ListTasks"), Some(&2));
        log.clear();
        assert!(log.counts().is_empty() && log.calls().next().is_none());
    }

    #[test]
    fn call_json_shape() {
        let v = serde_json::to_value(call("ListTasks")).unwrap();
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["errorCode"], serde_json::Value::Null);
        let back: Call = serde_json::from_value(v).unwrap();
        assert_eq!(back, call("ListTasks"));
    }
}
