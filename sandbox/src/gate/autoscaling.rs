//! Auto Scaling as AWS runs it, on top of moto's state:
//!
//! - rules moto does not enforce: duplicate group names, deleting a group that still has instances,
//!   group size validation, deleting a launch configuration in use;
//! - the gate launches the groups' instances itself ([`fleet`], [`launch`]): launch template
//!   versions >= 2, failed launches (missing instance profile, AMI architecture) recorded as scaling
//!   activities, instance refreshes, force deletes that stay `Delete in progress` for a while;
//! - paging of the describe calls.

pub(crate) mod fleet;
pub(crate) mod launch;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Result;
use bytes::Bytes;

use self::fleet::{Deleting, GroupKey, GroupState, LaunchKind, Refresh, RefreshStatus};
use super::{Ctx, Reply, Shared, paging, protocol, upstream::Side, xml::Node};

pub(crate) const VERSION: &str = "2011-01-01";
const XMLNS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";

/// The gate's state of the groups it created.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    pub groups: HashMap<GroupKey, GroupState>,
}

fn group_key(ctx: &Ctx, name: &str) -> GroupKey {
    GroupKey { account: ctx.account.clone(), region: ctx.id.region.clone(), name: name.to_string() }
}

pub(crate) async fn handle(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    match ctx.id.operation.as_str() {
        "CreateAutoScalingGroup"
        | "UpdateAutoScalingGroup"
        | "SetDesiredCapacity"
        | "DeleteAutoScalingGroup"
        | "DeleteLaunchConfiguration"
        | "TerminateInstanceInAutoScalingGroup" => {
            let _guard = sh.rules_lock.lock().await;
            match check(sh, ctx).await {
                Some((code, message)) => Ok(protocol::error_response("autoscaling", 400, code, &message)),
                None => apply(sh, ctx).await,
            }
        }
        "DescribeAutoScalingGroups" => describe_groups(sh, ctx).await,
        "DescribeScalingActivities" => describe_activities(sh, ctx),
        "StartInstanceRefresh" => {
            let _guard = sh.rules_lock.lock().await;
            start_refresh(sh, ctx).await
        }
        "DescribeInstanceRefreshes" => describe_refreshes(sh, ctx),
        "CancelInstanceRefresh" => cancel_refresh(sh, ctx),
        _ => Ok(sh.forward(ctx, None).await?.into_response()),
    }
}

/// A successful answer with an empty result, for the calls the gate answers itself.
fn empty_reply(action: &str) -> Reply {
    let doc = Node::parent(
        &format!("{action}Response"),
        vec![Node::parent("ResponseMetadata", vec![Node::leaf("RequestId", uuid::Uuid::new_v4().to_string())])],
    );
    xml_reply(&doc)
}

fn result_reply(action: &str, result: Vec<Node>) -> Reply {
    let doc = Node::parent(
        &format!("{action}Response"),
        vec![
            Node::parent(&format!("{action}Result"), result),
            Node::parent("ResponseMetadata", vec![Node::leaf("RequestId", uuid::Uuid::new_v4().to_string())]),
        ],
    );
    xml_reply(&doc)
}

fn xml_reply(doc: &Node) -> Reply {
    http::Response::builder()
        .status(200)
        .header("content-type", "text/xml")
        .body(http_body_util::Full::new(Bytes::from(doc.to_document(XMLNS))))
        .expect("static response")
}

fn form_with(ctx: &Ctx, drop: &[&str], add: &[(&str, String)]) -> Bytes {
    let mut form: Vec<(&str, &str)> = ctx
        .id
        .form
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.extend(add.iter().map(|(k, v)| (*k, v.as_str())));
    Bytes::from(serde_urlencoded::to_string(&form).unwrap_or_default())
}

fn int(ctx: &Ctx, k: &str) -> Option<i64> {
    ctx.id.param(k).and_then(|v| v.parse::<i64>().ok())
}

/// Carries out a ruled mutation that passed its checks (the rules lock is held).
async fn apply(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let name = ctx.id.param("AutoScalingGroupName").unwrap_or_default().to_string();
    let key = group_key(ctx, &name);
    match ctx.id.operation.as_str() {
        "CreateAutoScalingGroup" => {
            // moto holds no capacity of its own: the gate launches (see fleet.rs).
            let (min, max) = (int(ctx, "MinSize").unwrap_or(0), int(ctx, "MaxSize").unwrap_or(0));
            let desired = int(ctx, "DesiredCapacity").unwrap_or(min);
            let body = form_with(
                ctx,
                &["MinSize", "DesiredCapacity"],
                &[("MinSize", "0".into()), ("DesiredCapacity", "0".into())],
            );
            let raw = sh.forward(ctx, Some(body)).await?;
            if raw.status == 200 {
                let mut state = GroupState::new(min, max, desired);
                state.launch = LaunchKind::of_form(ctx.id.form.iter().map(|(k, _)| k.as_str()));
                sh.fleet.lock().unwrap().groups.insert(key.clone(), state);
                log_step(launch::converge(sh, &key).await);
            }
            Ok(raw.into_response())
        }
        "UpdateAutoScalingGroup" if sh.fleet.lock().unwrap().groups.contains_key(&key) => {
            let raw = sh.forward(ctx, Some(form_with(ctx, &["MinSize", "DesiredCapacity"], &[]))).await?;
            if raw.status == 200 {
                if let Some(state) = sh.fleet.lock().unwrap().groups.get_mut(&key) {
                    let (min, max, desired) = fleet::updated_sizes(
                        (state.min, state.max, state.desired),
                        int(ctx, "MinSize"),
                        int(ctx, "MaxSize"),
                        int(ctx, "DesiredCapacity"),
                    );
                    (state.min, state.max, state.desired) = (min, max, desired);
                    if let Some(kind) = LaunchKind::of_form(ctx.id.form.iter().map(|(k, _)| k.as_str())) {
                        state.launch = Some(kind);
                    }
                    // New launch data may fix a failed launch: try again now.
                    state.retry_at = None;
                }
                log_step(launch::converge(sh, &key).await);
            }
            Ok(raw.into_response())
        }
        "SetDesiredCapacity" if sh.fleet.lock().unwrap().groups.contains_key(&key) => {
            if let Some(state) = sh.fleet.lock().unwrap().groups.get_mut(&key) {
                state.desired = int(ctx, "DesiredCapacity").unwrap_or(state.desired);
            }
            log_step(launch::converge(sh, &key).await);
            Ok(empty_reply("SetDesiredCapacity"))
        }
        "DeleteAutoScalingGroup" if sh.fleet.lock().unwrap().groups.contains_key(&key) => {
            delete_group(sh, ctx, &key).await
        }
        "TerminateInstanceInAutoScalingGroup" => terminate_instance(sh, ctx).await,
        _ => Ok(sh.forward(ctx, None).await?.into_response()),
    }
}

fn log_step(r: Result<()>) {
    if let Err(e) = r {
        tracing::warn!(error = %format!("{e:#}"), "the gate's Auto Scaling launcher failed");
    }
}

/// A deleted group stays `Delete in progress` (its instances terminating) for `asg_delete_delay`.
async fn delete_group(sh: &Shared, ctx: &Ctx, key: &GroupKey) -> Result<Reply> {
    if sh.fleet.lock().unwrap().groups.get(key).is_some_and(|s| s.deleting.is_some()) {
        return Ok(empty_reply("DeleteAutoScalingGroup"));
    }
    let snapshot = launch::describe_group(sh, key).await.ok().flatten();
    let raw = sh.forward(ctx, None).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    let mut fleet = sh.fleet.lock().unwrap();
    if let (Some(state), Some(g)) = (fleet.groups.get_mut(key), snapshot) {
        for id in &g.instances {
            state.record(fleet::terminated(id, "a user request deleted the AutoScalingGroup."));
        }
        state.members.clear();
        state.deleting = Some(Deleting { until: Instant::now() + sh.cfg.asg_delete_delay, snapshot: g.node });
    } else {
        fleet.groups.remove(key);
    }
    Ok(raw.into_response())
}

/// TerminateInstanceInAutoScalingGroup: the instance goes; the group replaces it unless told to
/// lower its desired capacity.
async fn terminate_instance(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let id = ctx.id.param("InstanceId").unwrap_or_default().to_string();
    let decrement = ctx.id.param("ShouldDecrementDesiredCapacity").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let key = {
        let fleet = sh.fleet.lock().unwrap();
        fleet
            .groups
            .iter()
            .find(|(k, s)| k.account == ctx.account && s.members.contains_key(&id))
            .map(|(k, _)| k.clone())
    };
    let Some(key) = key else { return Ok(sh.forward(ctx, None).await?.into_response()) };
    let side = sh.side(ctx);
    let desired = sh.fleet.lock().unwrap().groups.get(&key).map(|s| (s.desired, s.min)).unwrap_or_default();
    if decrement && desired.0 - 1 < desired.1 {
        return Ok(protocol::error_response(
            "autoscaling",
            400,
            "ValidationError",
            &format!(
                "Currently, desiredCapacity ({}) is equal to minSize ({}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.",
                desired.0, desired.1
            ),
        ));
    }
    launch::retire(&side, &key.name, std::slice::from_ref(&id)).await?;
    let activity = fleet::terminated(&id, "instance was taken out of service in response to a user request.");
    let node = {
        let mut fleet = sh.fleet.lock().unwrap();
        let state = fleet.groups.get_mut(&key).expect("found above");
        state.members.remove(&id);
        if decrement {
            state.desired -= 1;
        }
        let mut node = activity.to_node(&key.name, "");
        node.name = "Activity".into();
        state.record(activity);
        node
    };
    log_step(launch::converge(sh, &key).await);
    Ok(result_reply("TerminateInstanceInAutoScalingGroup", vec![node]))
}

/// EC2 TerminateInstances of instances the gate launched: detached from their group first (moto
/// would relaunch from the group's template at once); the background loop replaces them.
pub(crate) async fn before_ec2_terminate(sh: &Shared, ctx: &Ctx, ids: &[String]) {
    let owners: Vec<(GroupKey, String)> = {
        let fleet = sh.fleet.lock().unwrap();
        ids.iter()
            .filter_map(|id| {
                fleet
                    .groups
                    .iter()
                    .find(|(k, s)| k.account == ctx.account && k.region == ctx.id.region && s.members.contains_key(id))
                    .map(|(k, _)| (k.clone(), id.clone()))
            })
            .collect()
    };
    let side = sh.side(ctx);
    for (key, id) in owners {
        let mut p =
            vec![("AutoScalingGroupName", key.name.clone()), ("ShouldDecrementDesiredCapacity", "true".to_string())];
        p.push(("InstanceIds.member.1", id.clone()));
        if side.query("DetachInstances", VERSION, &p).await.is_ok() {
            let mut fleet = sh.fleet.lock().unwrap();
            if let Some(state) = fleet.groups.get_mut(&key) {
                state.members.remove(&id);
                state.dirty = true;
                state.record(fleet::terminated(
                    &id,
                    "an instance was taken out of service in response to an EC2 instance status checks failure.",
                ));
            }
        }
    }
}

/// A group as the rules need it.
#[derive(Debug, PartialEq)]
struct Group {
    name: String,
    min: i64,
    max: i64,
    instances: usize,
    launch_configuration: Option<String>,
}

/// AWS's answer to a call on a group that is being deleted.
fn pending_delete(name: &str) -> (&'static str, String) {
    ("ValidationError", format!("AutoScalingGroup name not found - AutoScalingGroup {name} is pending delete."))
}

/// The refusal AWS would answer, if any. Side-query failures let the call through (moto answers).
async fn check(sh: &Shared, ctx: &Ctx) -> Option<(&'static str, String)> {
    let id = &ctx.id;
    let side = sh.side(ctx);
    let int = |k: &str| id.param(k).and_then(|v| v.parse::<i64>().ok());
    let name = id.param("AutoScalingGroupName").unwrap_or_default().to_string();
    let deleting = sh.fleet.lock().unwrap().groups.get(&group_key(ctx, &name)).is_some_and(|s| s.deleting.is_some());
    match id.operation.as_str() {
        "CreateAutoScalingGroup" => {
            if let (Some(min), Some(max)) = (int("MinSize"), int("MaxSize"))
                && let Some(msg) = validate_sizes(min, max, int("DesiredCapacity"))
            {
                return Some(("ValidationError", msg));
            }
            let exists =
                deleting || matches!(describe(sh, ctx, &side, Some(&name)).await, Ok(groups) if !groups.is_empty());
            exists.then(|| {
                (
                    "AlreadyExists",
                    format!(
                        "AutoScalingGroup by this name already exists - A group with the name {name} already exists"
                    ),
                )
            })
        }
        _ if deleting && id.operation != "DeleteAutoScalingGroup" => Some(pending_delete(&name)),
        "UpdateAutoScalingGroup" => {
            let group = describe(sh, ctx, &side, Some(&name)).await.ok()?.into_iter().next()?;
            let min = int("MinSize").unwrap_or(group.min);
            let max = int("MaxSize").unwrap_or(group.max);
            // Without a desired capacity AWS moves the current one into the new bounds, which is valid.
            let desired = int("DesiredCapacity");
            validate_sizes(min, max, desired).map(|m| ("ValidationError", m))
        }
        "SetDesiredCapacity" => {
            let group = describe(sh, ctx, &side, Some(&name)).await.ok()?.into_iter().next()?;
            let desired = int("DesiredCapacity")?;
            if desired > group.max {
                Some((
                    "ValidationError",
                    format!(
                        "New SetDesiredCapacity value {desired} is above max value {} for the AutoScalingGroup.",
                        group.max
                    ),
                ))
            } else if desired < group.min {
                Some((
                    "ValidationError",
                    format!(
                        "New SetDesiredCapacity value {desired} is below min value {} for the AutoScalingGroup.",
                        group.min
                    ),
                ))
            } else {
                None
            }
        }
        "DeleteAutoScalingGroup" => {
            if deleting || id.param("ForceDelete").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                return None;
            }
            let group = describe(sh, ctx, &side, Some(&name)).await.ok()?.into_iter().next()?;
            (group.instances > 0).then(|| {
                (
                    "ResourceInUse",
                    "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group."
                        .to_string(),
                )
            })
        }
        "DeleteLaunchConfiguration" => {
            let lc = id.param("LaunchConfigurationName")?;
            let groups = describe(sh, ctx, &side, None).await.ok()?;
            let user = groups.iter().find(|g| g.launch_configuration.as_deref() == Some(lc))?;
            Some((
                "ResourceInUse",
                format!(
                    "Cannot delete launch configuration {lc} because it is attached to AutoScalingGroup {}.",
                    user.name
                ),
            ))
        }
        _ => None,
    }
}

/// AWS's size rules: `min <= max`, and a given desired capacity within `[min, max]`.
fn validate_sizes(min: i64, max: i64, desired: Option<i64>) -> Option<String> {
    if min > max {
        return Some(format!("Max bound, {max}, must be greater than or equal to min bound, {min}"));
    }
    match desired {
        Some(d) if d < min || d > max => {
            Some(format!("Desired capacity:{d} must be between the specified min size:{min} and max size:{max}"))
        }
        _ => None,
    }
}

/// The groups as AWS would show them (moto's, with the gate's sizes): one by name, or all.
async fn describe(sh: &Shared, ctx: &Ctx, side: &Side<'_>, name: Option<&str>) -> Result<Vec<Group>> {
    let names: Vec<String> = name.map(|n| vec![n.to_string()]).unwrap_or_default();
    let nodes = launch::describe_groups(sh, &ctx.account, side, &names).await?;
    let fleet = sh.fleet.lock().unwrap();
    Ok(nodes
        .iter()
        .map(|m| {
            let mut g = parse_group(m);
            if let Some(state) = fleet.groups.get(&group_key(ctx, &g.name)) {
                (g.min, g.max) = (state.min, state.max);
            }
            g
        })
        .collect())
}

fn parse_group(m: &Node) -> Group {
    let int = |k: &str| m.text_of(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Group {
        name: m.text_of("AutoScalingGroupName").unwrap_or_default().to_string(),
        min: int("MinSize"),
        max: int("MaxSize"),
        instances: m.child("Instances").map(|i| i.children_named("member").count()).unwrap_or(0),
        launch_configuration: m.text_of("LaunchConfigurationName").filter(|s| !s.is_empty()).map(str::to_string),
    }
}

/// Shows a group as AWS would: the gate's sizes, each instance's own launch data, and groups being
/// deleted.
fn present_group(m: &mut Node, state: &GroupState) {
    m.set("MinSize", state.min.to_string());
    m.set("DesiredCapacity", state.desired.to_string());
    if let Some(instances) = m.child_mut("Instances") {
        for i in instances.children.iter_mut() {
            let id = i.text_of("InstanceId").unwrap_or_default().to_string();
            let Some(member) = state.members.get(&id) else { continue };
            match &member.source {
                fleet::Source::Template { id, name, version } => {
                    i.remove("LaunchConfigurationName");
                    i.remove("LaunchTemplate");
                    i.children.push(Node::parent(
                        "LaunchTemplate",
                        vec![
                            Node::leaf("LaunchTemplateId", id),
                            Node::leaf("LaunchTemplateName", name),
                            Node::leaf("Version", version.to_string()),
                        ],
                    ));
                }
                fleet::Source::Configuration(lc) => {
                    i.remove("LaunchTemplate");
                    i.set("LaunchConfigurationName", lc);
                }
            }
        }
    }
}

fn present_deleting(snapshot: &Node) -> Node {
    let mut m = snapshot.clone();
    m.set("Status", "Delete in progress");
    for k in ["MinSize", "MaxSize", "DesiredCapacity"] {
        m.set(k, "0");
    }
    if let Some(instances) = m.child_mut("Instances") {
        for i in instances.children.iter_mut() {
            i.set("LifecycleState", "Terminating");
        }
    }
    m
}

async fn describe_groups(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let names: Vec<String> = ctx
        .id
        .form
        .iter()
        .filter(|(k, _)| k.starts_with("AutoScalingGroupNames.member."))
        .map(|(_, v)| v.clone())
        .collect();
    let side = sh.side(ctx);
    let mut nodes = match launch::describe_groups(sh, &ctx.account, &side, &names).await {
        Ok(n) => n,
        Err(_) => return Ok(sh.forward(ctx, None).await?.into_response()),
    };
    {
        let fleet = sh.fleet.lock().unwrap();
        for m in nodes.iter_mut() {
            let name = m.text_of("AutoScalingGroupName").unwrap_or_default().to_string();
            if let Some(state) = fleet.groups.get(&group_key(ctx, &name)) {
                present_group(m, state);
            }
        }
        let mut deleting: Vec<(&GroupKey, &Deleting)> = fleet
            .groups
            .iter()
            .filter(|(k, _)| k.account == ctx.account && k.region == ctx.id.region)
            .filter(|(k, _)| names.is_empty() || names.contains(&k.name))
            .filter_map(|(k, s)| s.deleting.as_ref().map(|d| (k, d)))
            .filter(|(_, d)| d.until > Instant::now())
            .collect();
        deleting.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        nodes.extend(deleting.into_iter().map(|(_, d)| present_deleting(&d.snapshot)));
    }
    nodes.sort_by(|a, b| a.text_of("AutoScalingGroupName").cmp(&b.text_of("AutoScalingGroupName")));
    let (page, next) = paging::page_query(sh, ctx, nodes, 50);
    let mut result = vec![Node::parent("AutoScalingGroups", page)];
    if let Some(t) = next {
        result.push(Node::leaf("NextToken", t));
    }
    Ok(result_reply("DescribeAutoScalingGroups", result))
}

/// DescribeScalingActivities from the gate's record, newest first.
fn describe_activities(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let name = ctx.id.param("AutoScalingGroupName");
    let ids: Vec<&str> =
        ctx.id.form.iter().filter(|(k, _)| k.starts_with("ActivityIds.member.")).map(|(_, v)| v.as_str()).collect();
    let mut rows: Vec<(std::time::SystemTime, Node)> = Vec::new();
    {
        let fleet = sh.fleet.lock().unwrap();
        for (k, state) in fleet.groups.iter() {
            if k.account != ctx.account || k.region != ctx.id.region || name.is_some_and(|n| n != k.name) {
                continue;
            }
            let arn =
                state.deleting.as_ref().and_then(|d| d.snapshot.text_of("AutoScalingGroupARN")).unwrap_or_default();
            for a in &state.activities {
                if ids.is_empty() || ids.contains(&a.id.as_str()) {
                    rows.push((a.start, a.to_node(&k.name, arn)));
                }
            }
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let (page, next) = paging::page_query(sh, ctx, rows.into_iter().map(|(_, n)| n).collect(), 100);
    let mut result = vec![Node::parent("Activities", page)];
    if let Some(t) = next {
        result.push(Node::leaf("NextToken", t));
    }
    Ok(result_reply("DescribeScalingActivities", result))
}

async fn start_refresh(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let name = ctx.id.param("AutoScalingGroupName").unwrap_or_default().to_string();
    let key = group_key(ctx, &name);
    let known = sh
        .fleet
        .lock()
        .unwrap()
        .groups
        .get(&key)
        .map(|s| (s.deleting.is_some(), s.refreshes.iter().any(|r| r.status.active())));
    match known {
        None => {
            return Ok(protocol::error_response(
                "autoscaling",
                400,
                "ValidationError",
                &format!("AutoScalingGroup name not found - AutoScalingGroup {name} not found"),
            ));
        }
        Some((true, _)) => {
            return Ok(protocol::error_response("autoscaling", 400, pending_delete(&name).0, &pending_delete(&name).1));
        }
        Some((_, true)) => {
            return Ok(protocol::error_response(
                "autoscaling",
                400,
                "InstanceRefreshInProgress",
                "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.",
            ));
        }
        _ => {}
    }
    let min_healthy = int(ctx, "Preferences.MinHealthyPercentage").unwrap_or(90).clamp(0, 100);
    let warmup = int(ctx, "Preferences.InstanceWarmup")
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(sh.cfg.refresh_warmup);
    let skip_matching = ctx.id.param("Preferences.SkipMatching").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let targets = launch::refresh_targets(sh, &key, skip_matching).await?;
    let id = fleet::new_id();
    if let Some(state) = sh.fleet.lock().unwrap().groups.get_mut(&key) {
        state.refreshes.push(Refresh {
            id: id.clone(),
            status: RefreshStatus::Pending,
            reason: None,
            start: std::time::SystemTime::now(),
            end: None,
            min_healthy,
            warmup,
            skip_matching,
            total: targets.len(),
            to_replace: targets.into_iter().collect(),
        });
    }
    Ok(result_reply("StartInstanceRefresh", vec![Node::leaf("InstanceRefreshId", id)]))
}

fn describe_refreshes(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let name = ctx.id.param("AutoScalingGroupName").unwrap_or_default().to_string();
    let ids: Vec<&str> = ctx
        .id
        .form
        .iter()
        .filter(|(k, _)| k.starts_with("InstanceRefreshIds.member."))
        .map(|(_, v)| v.as_str())
        .collect();
    let rows: Vec<Node> = sh
        .fleet
        .lock()
        .unwrap()
        .groups
        .get(&group_key(ctx, &name))
        .map(|s| {
            s.refreshes
                .iter()
                .rev()
                .filter(|r| ids.is_empty() || ids.contains(&r.id.as_str()))
                .map(|r| r.to_node(&name))
                .collect()
        })
        .unwrap_or_default();
    let (page, next) = paging::page_query(sh, ctx, rows, 50);
    let mut result = vec![Node::parent("InstanceRefreshes", page)];
    if let Some(t) = next {
        result.push(Node::leaf("NextToken", t));
    }
    Ok(result_reply("DescribeInstanceRefreshes", result))
}

fn cancel_refresh(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let name = ctx.id.param("AutoScalingGroupName").unwrap_or_default().to_string();
    let mut fleet = sh.fleet.lock().unwrap();
    let active = fleet.groups.get_mut(&group_key(ctx, &name)).and_then(|s| s.active_refresh());
    match active {
        Some(r) => {
            r.finish(RefreshStatus::Cancelled, Some("The instance refresh was cancelled by a user request.".into()));
            let id = r.id.clone();
            Ok(result_reply("CancelInstanceRefresh", vec![Node::leaf("InstanceRefreshId", id)]))
        }
        None => Ok(protocol::error_response(
            "autoscaling",
            400,
            "ActiveInstanceRefreshNotFound",
            &format!("No in progress or pending Instance Refresh found for Auto Scaling group {name}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rules() {
        assert_eq!(validate_sizes(1, 2, Some(2)), None);
        assert_eq!(validate_sizes(1, 2, None), None);
        assert_eq!(validate_sizes(3, 2, None).unwrap(), "Max bound, 2, must be greater than or equal to min bound, 3");
        assert_eq!(
            validate_sizes(1, 2, Some(5)).unwrap(),
            "Desired capacity:5 must be between the specified min size:1 and max size:2"
        );
        assert!(validate_sizes(1, 2, Some(0)).is_some());
    }

    #[test]
    fn parses_moto_groups() {
        let doc = super::super::xml::parse(
            r#"<DescribeAutoScalingGroupsResponse><DescribeAutoScalingGroupsResult><AutoScalingGroups><member>
            <AutoScalingGroupName>g</AutoScalingGroupName><MinSize>1</MinSize><MaxSize>2</MaxSize><DesiredCapacity>2</DesiredCapacity>
            <LaunchConfigurationName>lc</LaunchConfigurationName>
            <Instances><member><InstanceId>i-1</InstanceId></member><member><InstanceId>i-2</InstanceId></member></Instances>
            </member></AutoScalingGroups></DescribeAutoScalingGroupsResult></DescribeAutoScalingGroupsResponse>"#,
        )
        .unwrap();
        let m = doc.path(&["DescribeAutoScalingGroupsResult", "AutoScalingGroups", "member"]).unwrap();
        assert_eq!(
            parse_group(m),
            Group { name: "g".into(), min: 1, max: 2, instances: 2, launch_configuration: Some("lc".into()) }
        );
    }
}
