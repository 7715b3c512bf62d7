//! ECS as AWS runs it, on top of moto's state: service creation rules (DAEMON constraints,
//! idempotency by clientToken), DRAINING after deletion, cluster deletion only when empty, and DAEMON
//! services presented with AWS's counts and deployments.
//!
//! moto keeps a deleted service as INACTIVE at once and never schedules DAEMON tasks; the ECS world
//! starts the tasks in moto, and this module derives what AWS would show from them.

use std::{
    collections::HashMap,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Ctx, Reply, Shared, protocol, upstream::Side};

const DAEMON_DESIRED: &str = "The daemon scheduling strategy does not support a desired count for services. Remove the desired count value and try again";
const DAEMON_MAX_PERCENT: &str = "The daemon scheduling strategy does not support values above 100 for maximumPercent on a deployment configuration. Change the maximumPercent value to 100, and try again";
const DAEMON_PLACEMENT: &str = "The daemon scheduling strategy does not support placement strategies. Remove the placement strategies and try again";
const NOT_IDEMPOTENT: &str = "Creation of service was not idempotent.";
const NOT_ACTIVE: &str = "Service was not ACTIVE.";

/// Where a service lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ServiceKey {
    account: String,
    region: String,
    cluster: String,
    service: String,
}

/// What the gate knows about a service beyond moto.
#[derive(Clone, Debug)]
pub(crate) struct ServiceState {
    client_token: Option<String>,
    /// Set by DeleteService; the service is DRAINING until its tasks stopped (and at least
    /// `draining_min` passed), then INACTIVE.
    deleted_at: Option<Instant>,
    /// DAEMON deployments, newest (PRIMARY) last.
    deployments: Vec<Deployment>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Deployment {
    id: String,
    task_definition: String,
    launch_type: String,
    created_at: f64,
    updated_at: f64,
    completed: bool,
}

impl Deployment {
    fn new(task_definition: &str, launch_type: &str) -> Deployment {
        let now = epoch_now();
        let digits: u64 = rand::random::<u64>() % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000;
        Deployment {
            id: format!("ecs-svc/{digits}"),
            task_definition: task_definition.to_string(),
            launch_type: launch_type.to_string(),
            created_at: now,
            updated_at: now,
            completed: false,
        }
    }
}

/// The gate's ECS state, plus a cache of task definition ARNs.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    services: HashMap<ServiceKey, ServiceState>,
}

/// A task as the presentation needs it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TaskObs {
    group: String,
    task_definition: String,
    last_status: String,
}

/// What moto holds for one cluster: ACTIVE container instances and the tasks not stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ClusterObs {
    active_instances: usize,
    tasks: Vec<TaskObs>,
}

impl ClusterObs {
    fn tasks_of<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a TaskObs> + 'a {
        let group = format!("service:{service}");
        self.tasks.iter().filter(move |t| t.group == group && t.last_status != "STOPPED")
    }
}

fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `arn:aws:ecs:r:a:cluster/name` or `name` -> `name`; absent -> `default`.
pub(crate) fn cluster_name(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.rsplit('/').next().unwrap_or(s).to_string(),
        _ => "default".to_string(),
    }
}

/// `arn:aws:ecs:r:a:service/cluster/name`, `service/name` or `name` -> `name`.
fn service_name(s: &str) -> String {
    s.rsplit('/').next().unwrap_or(s).to_string()
}

fn invalid_parameter(message: &str) -> Reply {
    protocol::error_response("ecs", 400, "InvalidParameterException", message)
}

pub(crate) async fn handle(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    match ctx.id.operation.as_str() {
        "CreateService" => create_service(sh, ctx).await,
        "UpdateService" => update_service(sh, ctx).await,
        "DeleteService" => delete_service(sh, ctx).await,
        "DescribeServices" => describe_services(sh, ctx).await,
        "DescribeClusters" => describe_clusters(sh, ctx).await,
        "DeleteCluster" => delete_cluster(sh, ctx).await,
        "CreateCluster" => create_cluster(sh, ctx).await,
        "RegisterTaskDefinition" => register_task_definition(sh, ctx).await,
        op if super::paging::ecs_list(op).is_some() => super::paging::ecs_list_call(sh, ctx).await,
        _ => Ok(sh.forward(ctx, None).await?.into_response()),
    }
}

/// AWS refuses container secrets without an execution role to fetch them with (moto accepts them).
async fn register_task_definition(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    if let Some(req) = &ctx.id.json
        && secrets_without_execution_role(req)
    {
        return Ok(protocol::error_response("ecs", 400, "ClientException", SECRETS_NEED_EXECUTION_ROLE));
    }
    Ok(sh.forward(ctx, None).await?.into_response())
}

const SECRETS_NEED_EXECUTION_ROLE: &str =
    "When you are specifying container secrets, you must also specify a value for 'executionRoleArn'.";

fn secrets_without_execution_role(req: &Value) -> bool {
    let has_secrets = req
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c.get("secrets").and_then(Value::as_array).is_some_and(|s| !s.is_empty())));
    has_secrets && req.get("executionRoleArn").and_then(Value::as_str).is_none_or(str::is_empty)
}

/// The refusal AWS gives a DAEMON service's create or update request, if any.
fn daemon_violation(req: &Value) -> Option<&'static str> {
    if req.get("desiredCount").is_some_and(|v| !v.is_null()) {
        return Some(DAEMON_DESIRED);
    }
    if req.pointer("/deploymentConfiguration/maximumPercent").and_then(Value::as_i64).is_some_and(|m| m > 100) {
        return Some(DAEMON_MAX_PERCENT);
    }
    if req.get("placementStrategy").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        return Some(DAEMON_PLACEMENT);
    }
    None
}

fn key(ctx: &Ctx, cluster: &str, service: &str) -> ServiceKey {
    ServiceKey {
        account: ctx.account.clone(),
        region: ctx.id.region.clone(),
        cluster: cluster.to_string(),
        service: service.to_string(),
    }
}

async fn create_service(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let Some(mut req) = ctx.id.json.clone() else { return Ok(sh.forward(ctx, None).await?.into_response()) };
    let cluster = cluster_name(req.get("cluster").and_then(Value::as_str));
    let Some(name) = req.get("serviceName").and_then(Value::as_str).map(str::to_string) else {
        return Ok(sh.forward(ctx, None).await?.into_response());
    };
    let daemon = req.get("schedulingStrategy").and_then(Value::as_str) == Some("DAEMON");
    if daemon && let Some(msg) = daemon_violation(&req) {
        return Ok(invalid_parameter(msg));
    }
    let _guard = sh.rules_lock.lock().await;
    let side = sh.side(ctx);
    let key = key(ctx, &cluster, &name);
    if let Ok(Some(existing)) = describe_one(&side, &cluster, &name).await {
        let status = live_status(sh, &side, &key, &existing).await;
        if status == "ACTIVE" || status == "DRAINING" {
            let token = req.get("clientToken").and_then(Value::as_str);
            let stored = sh.ecs.lock().unwrap().services.get(&key).and_then(|s| s.client_token.clone());
            if status == "ACTIVE" && token.is_some() && token == stored.as_deref() {
                // A retry of the same request: AWS answers with the service as it is.
                let mut services = vec![existing];
                present(sh, &side, ctx, &cluster, &mut services, Presentation::Describe).await;
                let body = json!({ "service": services.remove(0) });
                return Ok(json_reply(&body));
            }
            return Ok(invalid_parameter(NOT_IDEMPOTENT));
        }
    }
    let td_arn = full_task_definition_arn(&side, &mut req).await;
    let raw = sh.forward(ctx, Some(Bytes::from(req.to_string()))).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    let launch_type = req.get("launchType").and_then(Value::as_str).unwrap_or("EC2");
    let state = ServiceState {
        client_token: req.get("clientToken").and_then(Value::as_str).map(str::to_string),
        deleted_at: None,
        deployments: match (&td_arn, daemon) {
            (Some(td), true) => vec![Deployment::new(td, launch_type)],
            _ => vec![],
        },
    };
    sh.ecs.lock().unwrap().services.insert(key, state);
    let Some(mut body) = raw.json() else { return Ok(raw.into_response()) };
    if let Some(svc) = body.get_mut("service") {
        let mut services = vec![svc.take()];
        present(sh, &side, ctx, &cluster, &mut services, Presentation::Changed).await;
        *svc = services.remove(0);
    }
    Ok(raw.with_json(&body).into_response())
}

async fn update_service(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let Some(mut req) = ctx.id.json.clone() else { return Ok(sh.forward(ctx, None).await?.into_response()) };
    let cluster = cluster_name(req.get("cluster").and_then(Value::as_str));
    let Some(name) = req.get("service").and_then(Value::as_str).map(service_name) else {
        return Ok(sh.forward(ctx, None).await?.into_response());
    };
    let _guard = sh.rules_lock.lock().await;
    let side = sh.side(ctx);
    let key = key(ctx, &cluster, &name);
    let Ok(Some(existing)) = describe_one(&side, &cluster, &name).await else {
        return Ok(sh.forward(ctx, None).await?.into_response());
    };
    if live_status(sh, &side, &key, &existing).await != "ACTIVE" {
        return Ok(protocol::error_response("ecs", 400, "ServiceNotActiveException", NOT_ACTIVE));
    }
    let daemon = existing.get("schedulingStrategy").and_then(Value::as_str) == Some("DAEMON");
    if daemon && let Some(msg) = daemon_violation(&req) {
        return Ok(invalid_parameter(msg));
    }
    let new_td = full_task_definition_arn(&side, &mut req).await;
    let raw = sh.forward(ctx, Some(Bytes::from(req.to_string()))).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    if daemon {
        let force = req.get("forceNewDeployment").and_then(Value::as_bool).unwrap_or(false);
        let current_td = existing.get("taskDefinition").and_then(Value::as_str).unwrap_or_default().to_string();
        let launch_type = existing.get("launchType").and_then(Value::as_str).unwrap_or("EC2").to_string();
        let mut overlay = sh.ecs.lock().unwrap();
        let state = overlay.services.entry(key).or_insert_with(|| ServiceState {
            client_token: None,
            deleted_at: None,
            deployments: vec![Deployment::new(&current_td, &launch_type)],
        });
        let primary_td = state.deployments.last().map(|d| d.task_definition.clone());
        let changed = new_td.as_ref().is_some_and(|td| Some(td) != primary_td.as_ref());
        if changed || force {
            let td = new_td.or(primary_td).unwrap_or(current_td);
            state.deployments.push(Deployment::new(&td, &launch_type));
        }
    }
    let Some(mut body) = raw.json() else { return Ok(raw.into_response()) };
    if let Some(svc) = body.get_mut("service") {
        let mut services = vec![svc.take()];
        present(sh, &side, ctx, &cluster, &mut services, Presentation::Changed).await;
        *svc = services.remove(0);
    }
    Ok(raw.with_json(&body).into_response())
}

async fn delete_service(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let Some(req) = ctx.id.json.clone() else { return Ok(sh.forward(ctx, None).await?.into_response()) };
    let cluster = cluster_name(req.get("cluster").and_then(Value::as_str));
    let Some(name) = req.get("service").and_then(Value::as_str).map(service_name) else {
        return Ok(sh.forward(ctx, None).await?.into_response());
    };
    let _guard = sh.rules_lock.lock().await;
    let side = sh.side(ctx);
    let key = key(ctx, &cluster, &name);
    let Ok(Some(existing)) = describe_one(&side, &cluster, &name).await else {
        return Ok(sh.forward(ctx, None).await?.into_response());
    };
    if live_status(sh, &side, &key, &existing).await != "ACTIVE" {
        return Ok(protocol::error_response("ecs", 400, "ServiceNotActiveException", NOT_ACTIVE));
    }
    let raw = sh.forward(ctx, None).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    sh.ecs
        .lock()
        .unwrap()
        .services
        .entry(key)
        .or_insert_with(|| ServiceState { client_token: None, deleted_at: None, deployments: vec![] })
        .deleted_at = Some(Instant::now());
    let Some(mut body) = raw.json() else { return Ok(raw.into_response()) };
    if let Some(svc) = body.get_mut("service") {
        let mut services = vec![svc.take()];
        present(sh, &side, ctx, &cluster, &mut services, Presentation::Deleted).await;
        *svc = services.remove(0);
    }
    Ok(raw.with_json(&body).into_response())
}

async fn describe_services(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let raw = sh.forward(ctx, None).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    let cluster = cluster_name(ctx.id.json_str("cluster"));
    let Some(mut body) = raw.json() else { return Ok(raw.into_response()) };
    if let Some(Value::Array(services)) = body.get_mut("services") {
        let side = sh.side(ctx);
        present(sh, &side, ctx, &cluster, services, Presentation::Describe).await;
    }
    Ok(raw.with_json(&body).into_response())
}

/// moto's cluster counters drift (StopTask decrements a count StartTask never raised, deregistering
/// keeps the instance counted); AWS's are exact, and the operator reads them as drift signals.
async fn describe_clusters(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let raw = sh.forward(ctx, None).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    let Some(mut body) = raw.json() else { return Ok(raw.into_response()) };
    let side = sh.side(ctx);
    if let Some(Value::Array(clusters)) = body.get_mut("clusters") {
        for c in clusters.iter_mut().filter(|c| c.get("status").and_then(Value::as_str) == Some("ACTIVE")) {
            let name = c.get("clusterName").and_then(Value::as_str).unwrap_or_default().to_string();
            if let Ok(counts) = cluster_counts(&side, &name).await {
                c["registeredContainerInstancesCount"] = json!(counts.instances);
                c["runningTasksCount"] = json!(counts.running);
                c["pendingTasksCount"] = json!(counts.pending);
                c["activeServicesCount"] = json!(counts.active_services);
            }
        }
    }
    Ok(raw.with_json(&body).into_response())
}

#[derive(Debug, Default, PartialEq)]
struct ClusterCounts {
    instances: usize,
    running: usize,
    pending: usize,
    active_services: usize,
}

async fn cluster_counts(side: &Side<'_>, cluster: &str) -> Result<ClusterCounts> {
    let instances =
        list_all(side, "ListContainerInstances", json!({"cluster": cluster}), "containerInstanceArns").await?.len();
    let obs = observe_cluster(side, cluster).await?;
    let running = obs.tasks.iter().filter(|t| t.last_status == "RUNNING").count();
    let pending = obs.tasks.iter().filter(|t| t.last_status != "RUNNING" && t.last_status != "STOPPED").count();
    let mut active_services = 0;
    let arns = list_all(side, "ListServices", json!({"cluster": cluster}), "serviceArns").await?;
    for chunk in arns.chunks(10) {
        let resp = side.ecs("DescribeServices", json!({"cluster": cluster, "services": chunk})).await?;
        active_services += resp
            .get("services")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| s.get("status").and_then(Value::as_str) == Some("ACTIVE"))
            .count();
    }
    Ok(ClusterCounts { instances, running, pending, active_services })
}

async fn delete_cluster(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let cluster = cluster_name(ctx.id.json_str("cluster"));
    let _guard = sh.rules_lock.lock().await;
    let side = sh.side(ctx);
    if let Some((code, message)) = cluster_refusal(sh, ctx, &side, &cluster).await {
        return Ok(protocol::error_response("ecs", 400, code, message));
    }
    Ok(sh.forward(ctx, None).await?.into_response())
}

/// Why AWS would refuse to delete the cluster: services, container instances or tasks left.
async fn cluster_refusal(
    sh: &Shared,
    ctx: &Ctx,
    side: &Side<'_>,
    cluster: &str,
) -> Option<(&'static str, &'static str)> {
    let arns = list_all(side, "ListServices", json!({"cluster": cluster}), "serviceArns").await.ok()?;
    for chunk in arns.chunks(10) {
        let resp = side.ecs("DescribeServices", json!({"cluster": cluster, "services": chunk})).await.ok()?;
        for svc in resp.get("services").and_then(Value::as_array).cloned().unwrap_or_default() {
            let name = svc.get("serviceName").and_then(Value::as_str).unwrap_or_default().to_string();
            let status = live_status(sh, side, &key(ctx, cluster, &name), &svc).await;
            if status == "ACTIVE" || status == "DRAINING" {
                return Some((
                    "ClusterContainsServicesException",
                    "The Cluster cannot be deleted while Services are active.",
                ));
            }
        }
    }
    let instances =
        list_all(side, "ListContainerInstances", json!({"cluster": cluster}), "containerInstanceArns").await.ok()?;
    if !instances.is_empty() {
        return Some((
            "ClusterContainsContainerInstancesException",
            "The Cluster cannot be deleted while Container Instances are active or draining.",
        ));
    }
    let tasks =
        list_all(side, "ListTasks", json!({"cluster": cluster, "desiredStatus": "RUNNING"}), "taskArns").await.ok()?;
    if !tasks.is_empty() {
        return Some(("ClusterContainsTasksException", "The Cluster cannot be deleted while Tasks are active."));
    }
    None
}

/// CreateCluster of an existing ACTIVE cluster returns it unchanged (moto would reset its settings).
async fn create_cluster(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let name = cluster_name(ctx.id.json_str("clusterName"));
    let side = sh.side(ctx);
    if let Ok(resp) = side.ecs("DescribeClusters", json!({"clusters": [name]})).await
        && let Some(c) = resp.get("clusters").and_then(Value::as_array).and_then(|a| a.first())
        && c.get("status").and_then(Value::as_str) == Some("ACTIVE")
    {
        return Ok(json_reply(&json!({ "cluster": c })));
    }
    Ok(sh.forward(ctx, None).await?.into_response())
}

fn json_reply(body: &Value) -> Reply {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .expect("static response")
}

/// Which call a presentation answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Presentation {
    /// DescribeServices (and idempotent CreateService): deployments progress from what runs.
    Describe,
    /// CreateService/UpdateService: the new deployment is shown IN_PROGRESS, as AWS answers.
    Changed,
    /// DeleteService: the service is DRAINING.
    Deleted,
}

/// Rewrites moto's services as AWS shows them: status with DRAINING, task definition ARN, and for
/// DAEMON services the counts and deployments derived from the cluster's instances and tasks.
async fn present(sh: &Shared, side: &Side<'_>, ctx: &Ctx, cluster: &str, services: &mut [Value], how: Presentation) {
    for svc in services.iter_mut() {
        if let Some(td) = svc.get("taskDefinition").and_then(Value::as_str)
            && !td.starts_with("arn:")
            && let Ok(arn) = resolve_task_definition(side, td).await
        {
            svc["taskDefinition"] = Value::String(arn);
        }
    }
    let needs_obs = services.iter().any(|s| {
        s.get("schedulingStrategy").and_then(Value::as_str) == Some("DAEMON")
            || s.get("status").and_then(Value::as_str) != Some("ACTIVE")
    });
    let obs = if needs_obs { observe_cluster(side, cluster).await.ok() } else { None };
    let now = Instant::now();
    let events = sh.service_events.lock().unwrap().clone();
    let mut overlay = sh.ecs.lock().unwrap();
    for svc in services.iter_mut() {
        let name = svc.get("serviceName").and_then(Value::as_str).unwrap_or_default().to_string();
        // ECS's own words about the service (placement failures), from the world that places tasks.
        if let Some(source) = &events {
            let list = source.events(&ctx.id.region, cluster, &name);
            if !list.is_empty() {
                svc["events"] = Value::Array(
                    list.into_iter()
                        .enumerate()
                        .map(|(i, (message, at))| json!({"id": format!("{name}-event-{i}"), "createdAt": at, "message": message}))
                        .collect(),
                );
            }
        }
        let k = key(ctx, cluster, &name);
        let remaining = obs.as_ref().map(|o| o.tasks_of(&name).count()).unwrap_or(0);
        let moto_status = svc.get("status").and_then(Value::as_str).unwrap_or("ACTIVE").to_string();
        let state = overlay.services.get_mut(&k);
        let mut status = effective_status(&moto_status, state.as_deref(), remaining, now, sh.cfg.draining_min);
        if how == Presentation::Deleted {
            status = "DRAINING";
        }
        svc["status"] = json!(status);
        if svc.get("schedulingStrategy").and_then(Value::as_str) != Some("DAEMON") {
            continue;
        }
        let td = svc.get("taskDefinition").and_then(Value::as_str).unwrap_or_default().to_string();
        let launch_type = svc.get("launchType").and_then(Value::as_str).unwrap_or("EC2").to_string();
        let state = overlay.services.entry(k).or_insert_with(|| ServiceState {
            client_token: None,
            deleted_at: None,
            deployments: vec![],
        });
        if state.deployments.is_empty() {
            state.deployments.push(Deployment::new(&td, &launch_type));
        }
        let empty = ClusterObs::default();
        apply_daemon(svc, state, obs.as_ref().unwrap_or(&empty), status, how == Presentation::Describe);
    }
}

/// AWS's status of a service: moto says ACTIVE or INACTIVE; a deleted service stays DRAINING while
/// tasks remain and for at least `draining_min`.
fn effective_status(
    moto_status: &str,
    state: Option<&ServiceState>,
    remaining_tasks: usize,
    now: Instant,
    draining_min: std::time::Duration,
) -> &'static str {
    if moto_status == "ACTIVE" {
        return "ACTIVE";
    }
    match state.and_then(|s| s.deleted_at) {
        Some(at) if remaining_tasks > 0 || now.saturating_duration_since(at) < draining_min => "DRAINING",
        _ => "INACTIVE",
    }
}

/// The status of one service as of now (observing its tasks when it is being deleted).
async fn live_status(sh: &Shared, side: &Side<'_>, key: &ServiceKey, svc: &Value) -> &'static str {
    let moto_status = svc.get("status").and_then(Value::as_str).unwrap_or("ACTIVE");
    if moto_status == "ACTIVE" {
        return "ACTIVE";
    }
    let deleted = sh.ecs.lock().unwrap().services.get(&key.clone()).and_then(|s| s.deleted_at).is_some();
    let remaining = if deleted {
        observe_cluster(side, &key.cluster).await.map(|o| o.tasks_of(&key.service).count()).unwrap_or(0)
    } else {
        0
    };
    let overlay = sh.ecs.lock().unwrap();
    effective_status(moto_status, overlay.services.get(key), remaining, Instant::now(), sh.cfg.draining_min)
}

/// Sets a DAEMON service's counts and deployments from what runs in the cluster. With `progress`,
/// a deployment whose tasks all run completes and drained old deployments disappear.
fn apply_daemon(svc: &mut Value, state: &mut ServiceState, obs: &ClusterObs, status: &str, progress: bool) {
    let name = svc.get("serviceName").and_then(Value::as_str).unwrap_or_default().to_string();
    let tasks: Vec<&TaskObs> = obs.tasks_of(&name).collect();
    let desired = if status == "ACTIVE" { obs.active_instances } else { 0 };
    let count = |td: Option<&str>, running: bool| {
        tasks
            .iter()
            .filter(|t| td.is_none_or(|td| t.task_definition == td) && (t.last_status == "RUNNING") == running)
            .count()
    };
    if progress {
        let primary_td = state.deployments.last().map(|d| d.task_definition.clone()).unwrap_or_default();
        let old_left = tasks.iter().any(|t| t.task_definition != primary_td);
        let primary_running = count(Some(&primary_td), true);
        if let Some(primary) = state.deployments.last_mut()
            && !primary.completed
            && status == "ACTIVE"
            && primary_running >= desired
            && !old_left
        {
            primary.completed = true;
            primary.updated_at = epoch_now();
        }
        let n = state.deployments.len();
        let mut i = 0;
        state.deployments.retain(|d| {
            i += 1;
            i == n || tasks.iter().any(|t| t.task_definition == d.task_definition)
        });
    }
    let n = state.deployments.len();
    let deployments: Vec<Value> = state
        .deployments
        .iter()
        .enumerate()
        .rev()
        .map(|(i, d)| {
            let primary = i + 1 == n;
            let rollout = if d.completed { "COMPLETED" } else { "IN_PROGRESS" };
            let reason = if d.completed {
                format!("ECS deployment {} completed.", d.id)
            } else {
                format!("ECS deployment {} in progress.", d.id)
            };
            json!({
                "id": d.id,
                "status": if primary { "PRIMARY" } else { "ACTIVE" },
                "taskDefinition": d.task_definition,
                "desiredCount": if primary { desired } else { 0 },
                "pendingCount": count(Some(&d.task_definition), false),
                "runningCount": count(Some(&d.task_definition), true),
                "failedTasks": 0,
                "createdAt": d.created_at,
                "updatedAt": d.updated_at,
                "launchType": d.launch_type,
                "rolloutState": rollout,
                "rolloutStateReason": reason,
            })
        })
        .collect();
    if let Some(primary) = state.deployments.last() {
        svc["taskDefinition"] = json!(primary.task_definition);
    }
    svc["desiredCount"] = json!(desired);
    svc["runningCount"] = json!(count(None, true));
    svc["pendingCount"] = json!(count(None, false));
    svc["deployments"] = Value::Array(deployments);
    // AWS's DAEMON defaults (moto shows REPLICA's 200/100).
    svc["deploymentConfiguration"]["maximumPercent"] = json!(100);
    if svc["deploymentConfiguration"].get("minimumHealthyPercent").is_none_or(|v| v.as_i64() == Some(100)) {
        svc["deploymentConfiguration"]["minimumHealthyPercent"] = json!(0);
    }
}

/// DescribeServices of one service on moto.
async fn describe_one(side: &Side<'_>, cluster: &str, name: &str) -> Result<Option<Value>> {
    let resp = side.ecs("DescribeServices", json!({"cluster": cluster, "services": [name]})).await?;
    Ok(resp.get("services").and_then(Value::as_array).and_then(|a| a.first()).cloned())
}

/// `family`, `family:rev` or an ARN -> the task definition's ARN (moto stores the raw string).
/// Rewrites the request's `taskDefinition` to its full ARN (AWS stores ARNs; moto keeps the raw
/// string) and returns it.
async fn full_task_definition_arn(side: &Side<'_>, req: &mut Value) -> Option<String> {
    let td = req.get("taskDefinition").and_then(Value::as_str)?;
    let arn = resolve_task_definition(side, td).await.ok()?;
    req["taskDefinition"] = Value::String(arn.clone());
    Some(arn)
}

async fn resolve_task_definition(side: &Side<'_>, td: &str) -> Result<String> {
    if td.starts_with("arn:") {
        return Ok(td.to_string());
    }
    let resp = side.ecs("DescribeTaskDefinition", json!({"taskDefinition": td})).await?;
    resp.pointer("/taskDefinition/taskDefinitionArn")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("task definition {td} has no ARN"))
}

/// Every item of a paged ECS list call.
async fn list_all(side: &Side<'_>, op: &str, mut req: Value, field: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    loop {
        let resp = side.ecs(op, req.clone()).await?;
        out.extend(
            resp.get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
        match resp.get("nextToken").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => req["nextToken"] = json!(t),
            _ => return Ok(out),
        }
    }
}

/// ACTIVE container instances and tasks not stopped, of one cluster.
async fn observe_cluster(side: &Side<'_>, cluster: &str) -> Result<ClusterObs> {
    let instances = list_all(
        side,
        "ListContainerInstances",
        json!({"cluster": cluster, "status": "ACTIVE"}),
        "containerInstanceArns",
    )
    .await?;
    let arns = list_all(side, "ListTasks", json!({"cluster": cluster, "desiredStatus": "RUNNING"}), "taskArns").await?;
    let mut tasks = Vec::new();
    for chunk in arns.chunks(100) {
        let resp = side.ecs("DescribeTasks", json!({"cluster": cluster, "tasks": chunk})).await?;
        for t in resp.get("tasks").and_then(Value::as_array).into_iter().flatten() {
            let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            tasks.push(TaskObs {
                group: s("group"),
                task_definition: s("taskDefinitionArn"),
                last_status: s("lastStatus"),
            });
        }
    }
    Ok(ClusterObs { active_instances: instances.len(), tasks })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TD1: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/fam:1";
    const TD2: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/fam:2";

    fn task(td: &str, status: &str) -> TaskObs {
        TaskObs { group: "service:svc".into(), task_definition: td.into(), last_status: status.into() }
    }

    fn svc() -> Value {
        json!({"serviceName": "svc", "status": "ACTIVE", "schedulingStrategy": "DAEMON", "taskDefinition": TD1,
               "desiredCount": 0, "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 100}})
    }

    fn state(tds: &[&str]) -> ServiceState {
        ServiceState {
            client_token: None,
            deleted_at: None,
            deployments: tds.iter().map(|t| Deployment::new(t, "EC2")).collect(),
        }
    }

    #[test]
    fn daemon_rules() {
        assert_eq!(daemon_violation(&json!({"desiredCount": 1})), Some(DAEMON_DESIRED));
        assert_eq!(daemon_violation(&json!({"desiredCount": null})), None);
        assert_eq!(
            daemon_violation(&json!({"deploymentConfiguration": {"maximumPercent": 200}})),
            Some(DAEMON_MAX_PERCENT)
        );
        assert_eq!(daemon_violation(&json!({"deploymentConfiguration": {"maximumPercent": 100}})), None);
        assert_eq!(daemon_violation(&json!({"placementStrategy": [{"type": "spread"}]})), Some(DAEMON_PLACEMENT));
    }

    #[test]
    fn container_secrets_need_an_execution_role() {
        let td = |role: Option<&str>| {
            let mut v =
                json!({"containerDefinitions": [{"name": "d", "secrets": [{"name": "X", "valueFrom": "arn:s"}]}]});
            if let Some(r) = role {
                v["executionRoleArn"] = json!(r);
            }
            v
        };
        assert!(secrets_without_execution_role(&td(None)));
        assert!(secrets_without_execution_role(&td(Some(""))));
        assert!(!secrets_without_execution_role(&td(Some("arn:aws:iam::123456789012:role/x"))));
        assert!(!secrets_without_execution_role(&json!({"containerDefinitions": [{"name": "d", "secrets": []}]})));
        assert!(!secrets_without_execution_role(&json!({"containerDefinitions": [{"name": "d"}]})));
    }

    #[test]
    fn names_from_arns() {
        assert_eq!(cluster_name(Some("arn:aws:ecs:us-east-1:1:cluster/pc")), "pc");
        assert_eq!(cluster_name(None), "default");
        assert_eq!(service_name("arn:aws:ecs:us-east-1:1:service/pc/svc"), "svc");
    }

    #[test]
    fn deleted_service_drains_then_goes_inactive() {
        let mut s = state(&[]);
        let t0 = Instant::now();
        s.deleted_at = Some(t0);
        let min = Duration::from_secs(1);
        assert_eq!(effective_status("ACTIVE", Some(&s), 0, t0, min), "ACTIVE");
        assert_eq!(effective_status("INACTIVE", Some(&s), 0, t0, min), "DRAINING");
        assert_eq!(effective_status("INACTIVE", Some(&s), 1, t0 + min * 5, min), "DRAINING");
        assert_eq!(effective_status("INACTIVE", Some(&s), 0, t0 + min, min), "INACTIVE");
        assert_eq!(effective_status("INACTIVE", None, 0, t0, min), "INACTIVE");
    }

    #[test]
    fn daemon_counts_follow_instances_and_tasks() {
        let mut s = state(&[TD1]);
        let obs = ClusterObs { active_instances: 2, tasks: vec![task(TD1, "RUNNING")] };
        let mut v = svc();
        apply_daemon(&mut v, &mut s, &obs, "ACTIVE", true);
        assert_eq!((v["desiredCount"].as_i64(), v["runningCount"].as_i64()), (Some(2), Some(1)));
        assert_eq!(v["deployments"][0]["rolloutState"], "IN_PROGRESS");
        assert_eq!(v["deploymentConfiguration"]["maximumPercent"], 100);
        let obs = ClusterObs { active_instances: 2, tasks: vec![task(TD1, "RUNNING"), task(TD1, "RUNNING")] };
        apply_daemon(&mut v, &mut s, &obs, "ACTIVE", true);
        assert_eq!(v["deployments"][0]["rolloutState"], "COMPLETED");
    }

    #[test]
    fn rolling_update_completes_when_old_tasks_are_gone() {
        let mut s = state(&[TD1, TD2]);
        s.deployments[0].completed = true;
        let mut v = svc();
        let obs = ClusterObs { active_instances: 2, tasks: vec![task(TD1, "RUNNING"), task(TD2, "RUNNING")] };
        apply_daemon(&mut v, &mut s, &obs, "ACTIVE", true);
        let deps = v["deployments"].as_array().unwrap();
        assert_eq!(deps.len(), 2);
        assert_eq!((deps[0]["status"].as_str(), deps[0]["taskDefinition"].as_str()), (Some("PRIMARY"), Some(TD2)));
        assert_eq!(deps[0]["rolloutState"], "IN_PROGRESS");
        assert_eq!(deps[1]["status"], "ACTIVE");
        assert_eq!(v["taskDefinition"], TD2);
        let obs = ClusterObs { active_instances: 2, tasks: vec![task(TD2, "RUNNING"), task(TD2, "RUNNING")] };
        apply_daemon(&mut v, &mut s, &obs, "ACTIVE", true);
        let deps = v["deployments"].as_array().unwrap();
        assert_eq!(deps.len(), 1);
        assert_eq!(deps[0]["rolloutState"], "COMPLETED");
    }

    #[test]
    fn changed_services_show_the_new_deployment_in_progress() {
        let mut s = state(&[TD1]);
        let mut v = svc();
        apply_daemon(&mut v, &mut s, &ClusterObs::default(), "ACTIVE", false);
        assert_eq!(v["deployments"][0]["rolloutState"], "IN_PROGRESS");
        apply_daemon(&mut v, &mut s, &ClusterObs::default(), "ACTIVE", true);
        assert_eq!(v["deployments"][0]["rolloutState"], "COMPLETED", "no instances: nothing to roll");
    }
}
