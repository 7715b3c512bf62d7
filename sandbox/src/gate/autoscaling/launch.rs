//! The gate's Auto Scaling launcher (I/O): reads a group and its launch data from moto, checks the
//! launch as EC2 would (instance profile, AMI architecture), launches or terminates instances to meet
//! the desired capacity, steps instance refreshes and finishes slow deletes. Callers hold the gate's
//! rules lock.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    super::{Shared, ec2, upstream::Side, xml::Node},
    VERSION,
    fleet::{self, GroupKey, Member, RefreshStatus, Source},
};

/// A group as moto describes it.
#[derive(Clone, Debug, Default)]
pub(crate) struct MotoGroup {
    pub name: String,
    /// `(id, name, version as given)`.
    pub template: Option<(String, String, String)>,
    pub configuration: Option<String>,
    pub subnets: Vec<String>,
    pub zones: Vec<String>,
    pub instances: Vec<String>,
    pub propagated_tags: Vec<(String, String)>,
    pub node: Node,
}

pub(crate) fn parse_group(m: &Node) -> MotoGroup {
    let text = |k: &str| m.text_of(k).unwrap_or_default().to_string();
    let template = m.child("LaunchTemplate").map(|t| {
        (
            t.text_of("LaunchTemplateId").unwrap_or_default().to_string(),
            t.text_of("LaunchTemplateName").unwrap_or_default().to_string(),
            t.text_of("Version").filter(|v| !v.is_empty()).unwrap_or("$Default").to_string(),
        )
    });
    let list = |k: &str| -> Vec<String> {
        m.child(k).map(|c| c.children_named("member").map(|x| x.text.trim().to_string()).collect()).unwrap_or_default()
    };
    MotoGroup {
        name: text("AutoScalingGroupName"),
        template,
        configuration: m.text_of("LaunchConfigurationName").filter(|s| !s.is_empty()).map(str::to_string),
        subnets: m
            .text_of("VPCZoneIdentifier")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        zones: list("AvailabilityZones"),
        instances: m
            .child("Instances")
            .map(|i| i.children_named("member").filter_map(|x| x.text_of("InstanceId")).map(str::to_string).collect())
            .unwrap_or_default(),
        propagated_tags: m
            .child("Tags")
            .map(|t| {
                t.children_named("member")
                    .filter(|x| x.text_of("PropagateAtLaunch") == Some("true"))
                    .map(|x| {
                        (
                            x.text_of("Key").unwrap_or_default().to_string(),
                            x.text_of("Value").unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        node: m.clone(),
    }
}

/// DescribeAutoScalingGroups on moto, every page; `names` narrows it. Each group shows only the
/// launch data it was last given (see [`fleet::LaunchKind`]).
pub(crate) async fn describe_groups(
    sh: &Shared,
    account: &str,
    side: &Side<'_>,
    names: &[String],
) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params: Vec<(String, String)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("AutoScalingGroupNames.member.{}", i + 1), n.clone()))
            .collect();
        if let Some(t) = &token {
            params.push(("NextToken".into(), t.clone()));
        }
        let params: Vec<(&str, String)> = params.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let doc = side.query("DescribeAutoScalingGroups", VERSION, &params).await?;
        let result = doc.child("DescribeAutoScalingGroupsResult");
        if let Some(groups) = result.and_then(|r| r.child("AutoScalingGroups")) {
            out.extend(groups.children_named("member").cloned());
        }
        token = result.and_then(|r| r.text_of("NextToken")).filter(|t| !t.is_empty()).map(str::to_string);
        if token.is_none() {
            let fleet = sh.fleet.lock().unwrap();
            for m in out.iter_mut() {
                let key = GroupKey {
                    account: account.to_string(),
                    region: side.region().to_string(),
                    name: m.text_of("AutoScalingGroupName").unwrap_or_default().to_string(),
                };
                if let Some(kind) = fleet.groups.get(&key).and_then(|s| s.launch) {
                    kind.correct(m);
                }
            }
            return Ok(out);
        }
    }
}

pub(crate) async fn describe_group(sh: &Shared, key: &GroupKey) -> Result<Option<MotoGroup>> {
    let side = sh.upstream.side_as(&key.account, &key.region);
    Ok(describe_groups(sh, &key.account, &side, std::slice::from_ref(&key.name)).await?.first().map(parse_group))
}

/// What an instance is launched with.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LaunchData {
    pub image_id: String,
    pub instance_type: String,
    pub user_data: Option<String>,
    pub profile_name: Option<String>,
    pub profile_arn: Option<String>,
    pub security_group_ids: Vec<String>,
    pub security_group_names: Vec<String>,
    pub key_name: Option<String>,
    pub public_ip: Option<bool>,
}

fn items(node: Option<&Node>, leaf: &str) -> Vec<String> {
    node.map(|n| {
        n.children
            .iter()
            .filter_map(|i| {
                if i.children.is_empty() {
                    Some(i.text.trim().to_string())
                } else {
                    i.text_of(leaf).map(str::to_string)
                }
            })
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// The launch data of a template version's `launchTemplateData`.
pub(crate) fn template_data(d: &Node) -> LaunchData {
    let nic = d.child("networkInterfaceSet").and_then(|s| s.children.first());
    let mut sg_ids = items(d.child("securityGroupIdSet"), "groupId");
    if let Some(nic) = nic {
        sg_ids.extend(items(nic.child("groupSet"), "groupId"));
    }
    LaunchData {
        image_id: d.text_of("imageId").unwrap_or_default().to_string(),
        instance_type: d.text_of("instanceType").unwrap_or_default().to_string(),
        user_data: d.text_of("userData").filter(|s| !s.is_empty()).map(str::to_string),
        profile_name: d
            .path(&["iamInstanceProfile", "name"])
            .map(|n| n.text.trim().to_string())
            .filter(|s| !s.is_empty()),
        profile_arn: d
            .path(&["iamInstanceProfile", "arn"])
            .map(|n| n.text.trim().to_string())
            .filter(|s| !s.is_empty()),
        security_group_ids: sg_ids,
        security_group_names: items(d.child("securityGroupSet"), "groupName"),
        key_name: d.text_of("keyName").filter(|s| !s.is_empty()).map(str::to_string),
        public_ip: nic.and_then(|n| n.text_of("associatePublicIpAddress")).map(|v| v == "true"),
    }
}

/// The launch data of a launch configuration as DescribeLaunchConfigurations shows it.
pub(crate) fn configuration_data(c: &Node) -> LaunchData {
    let profile = c.text_of("IamInstanceProfile").filter(|s| !s.is_empty()).map(str::to_string);
    let (sg_ids, sg_names): (Vec<String>, Vec<String>) =
        items(c.child("SecurityGroups"), "member").into_iter().partition(|g| g.starts_with("sg-"));
    LaunchData {
        image_id: c.text_of("ImageId").unwrap_or_default().to_string(),
        instance_type: c.text_of("InstanceType").unwrap_or_default().to_string(),
        user_data: c.text_of("UserData").filter(|s| !s.is_empty()).map(str::to_string),
        profile_name: profile.clone().filter(|p| !p.starts_with("arn:")),
        profile_arn: profile.filter(|p| p.starts_with("arn:")),
        security_group_ids: sg_ids,
        security_group_names: sg_names,
        key_name: c.text_of("KeyName").filter(|s| !s.is_empty()).map(str::to_string),
        public_ip: c.text_of("AssociatePublicIpAddress").map(|v| v == "true"),
    }
}

/// The group's current launch data and where it comes from; `Err` is the launch failure reason.
pub(crate) async fn current_launch(
    sh: &Shared,
    side: &Side<'_>,
    account: &str,
    g: &MotoGroup,
) -> Result<(Source, LaunchData), String> {
    if let Some((id, name, spec)) = &g.template {
        let id = Some(id.as_str()).filter(|s| !s.is_empty());
        let name = Some(name.as_str()).filter(|s| !s.is_empty());
        let Some(v) = ec2::resolve_version(sh, side, account, id, name, spec).await else {
            return Err(format!(
                "The specified launch template version {spec} of launch template {} does not exist. Launching EC2 instance failed.",
                id.or(name).unwrap_or_default()
            ));
        };
        return Ok((Source::Template { id: v.id, name: v.name, version: v.number }, template_data(&v.data)));
    }
    if let Some(lc) = &g.configuration {
        let doc = side
            .query("DescribeLaunchConfigurations", VERSION, &[("LaunchConfigurationNames.member.1", lc.clone())])
            .await
            .map_err(|e| format!("{e:#}"))?;
        let Some(c) = doc.path(&["DescribeLaunchConfigurationsResult", "LaunchConfigurations", "member"]) else {
            return Err(format!("The launch configuration {lc} does not exist. Launching EC2 instance failed."));
        };
        return Ok((Source::Configuration(lc.clone()), configuration_data(c)));
    }
    Err("The group has no launch template or launch configuration. Launching EC2 instance failed.".into())
}

/// Why EC2 would refuse this launch, if it would.
pub(crate) async fn launch_refusal(sh: &Shared, side: &Side<'_>, data: &LaunchData) -> Option<String> {
    let profile = data
        .profile_name
        .clone()
        .or_else(|| data.profile_arn.as_ref().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()));
    if let Some(p) = profile
        && side.call("iam", "GetInstanceProfile", "2010-05-08", &[("InstanceProfileName", p)]).await.is_err()
    {
        return Some(fleet::INVALID_PROFILE.to_string());
    }
    let type_arch = fleet::instance_type_architecture(&data.instance_type);
    if let Some(image_arch) = image_architecture(sh, side, &data.image_id).await
        && image_arch != type_arch
    {
        return Some(fleet::architecture_mismatch(type_arch, &image_arch));
    }
    None
}

/// An AMI's architecture: from EC2 if moto knows the image, else from the SSM public parameters of
/// the ECS-optimized AMIs (moto serves their real ids without images behind them). `None`: unknown.
async fn image_architecture(sh: &Shared, side: &Side<'_>, image: &str) -> Option<String> {
    if image.is_empty() {
        return None;
    }
    if let Ok(doc) = side.ec2("DescribeImages", &[("ImageId.1", image.to_string())]).await
        && let Some(arch) = doc.path(&["imagesSet", "item"]).and_then(|i| i.text_of("architecture"))
    {
        return Some(arch.to_string());
    }
    let region = side.region().to_string();
    let cached = sh.ami_architectures.lock().unwrap().get(&region).cloned();
    let map = match cached {
        Some(m) => m,
        None => {
            let m = ssm_ami_architectures(side).await.unwrap_or_default();
            sh.ami_architectures.lock().unwrap().insert(region, m.clone());
            m
        }
    };
    map.get(image).cloned()
}

async fn ssm_ami_architectures(side: &Side<'_>) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut body =
            serde_json::json!({"Path": "/aws/service/ecs/optimized-ami", "Recursive": true, "MaxResults": 10});
        if let Some(t) = &token {
            body["NextToken"] = serde_json::json!(t);
        }
        let resp = side.json("ssm", "AmazonSSM.GetParametersByPath", body).await?;
        for p in resp.get("Parameters").and_then(|v| v.as_array()).into_iter().flatten() {
            let name = p.get("Name").and_then(|v| v.as_str()).unwrap_or_default();
            let value = p.get("Value").and_then(|v| v.as_str()).unwrap_or_default();
            if value.starts_with("ami-") {
                let arch = if name.contains("/arm64/") { "arm64" } else { "x86_64" };
                out.insert(value.to_string(), arch.to_string());
            }
        }
        token = resp.get("NextToken").and_then(|v| v.as_str()).filter(|t| !t.is_empty()).map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Launches one instance with `data` into `subnet` (or `zone`) and attaches it to the group.
async fn run_one(
    side: &Side<'_>,
    g: &MotoGroup,
    data: &LaunchData,
    subnet: Option<&str>,
    zone: Option<&str>,
) -> Result<(String, String)> {
    let mut p: Vec<(String, String)> = vec![
        ("ImageId".into(), data.image_id.clone()),
        (
            "InstanceType".into(),
            if data.instance_type.is_empty() { "m1.small".into() } else { data.instance_type.clone() },
        ),
        ("MinCount".into(), "1".into()),
        ("MaxCount".into(), "1".into()),
    ];
    if let Some(u) = &data.user_data {
        p.push(("UserData".into(), u.clone()));
    }
    if let Some(n) = &data.profile_name {
        p.push(("IamInstanceProfile.Name".into(), n.clone()));
    } else if let Some(a) = &data.profile_arn {
        p.push(("IamInstanceProfile.Arn".into(), a.clone()));
    }
    if let Some(k) = &data.key_name {
        p.push(("KeyName".into(), k.clone()));
    }
    match (data.public_ip, subnet) {
        (Some(public), Some(s)) => {
            p.push(("NetworkInterface.1.DeviceIndex".into(), "0".into()));
            p.push(("NetworkInterface.1.SubnetId".into(), s.to_string()));
            p.push(("NetworkInterface.1.AssociatePublicIpAddress".into(), public.to_string()));
            for (i, g) in data.security_group_ids.iter().enumerate() {
                p.push((format!("NetworkInterface.1.SecurityGroupId.{}", i + 1), g.clone()));
            }
        }
        _ => {
            if let Some(s) = subnet {
                p.push(("SubnetId".into(), s.to_string()));
            }
            for (i, g) in data.security_group_ids.iter().enumerate() {
                p.push((format!("SecurityGroupId.{}", i + 1), g.clone()));
            }
        }
    }
    for (i, g) in data.security_group_names.iter().enumerate() {
        p.push((format!("SecurityGroup.{}", i + 1), g.clone()));
    }
    if subnet.is_none()
        && let Some(z) = zone
    {
        p.push(("Placement.AvailabilityZone".into(), z.to_string()));
    }
    if !g.propagated_tags.is_empty() {
        p.push(("TagSpecification.1.ResourceType".into(), "instance".into()));
        for (i, (k, v)) in g.propagated_tags.iter().enumerate() {
            p.push((format!("TagSpecification.1.Tag.{}.Key", i + 1), k.clone()));
            p.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), v.clone()));
        }
    }
    let params: Vec<(&str, String)> = p.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let doc = side.ec2("RunInstances", &params).await?;
    let item =
        doc.path(&["instancesSet", "item"]).ok_or_else(|| anyhow::anyhow!("RunInstances answered no instance"))?;
    let id = item.text_of("instanceId").unwrap_or_default().to_string();
    let zone = item.path(&["placement", "availabilityZone"]).map(|z| z.text.trim().to_string()).unwrap_or_default();
    side.query(
        "AttachInstances",
        VERSION,
        &[("AutoScalingGroupName", g.name.clone()), ("InstanceIds.member.1", id.clone())],
    )
    .await?;
    Ok((id, zone))
}

/// Takes instances out of the group and terminates them (detached first, with the desired
/// capacity lowered in moto, so moto launches nothing in their place).
pub(crate) async fn retire(side: &Side<'_>, group: &str, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut p: Vec<(String, String)> = vec![
        ("AutoScalingGroupName".into(), group.to_string()),
        ("ShouldDecrementDesiredCapacity".into(), "true".into()),
    ];
    for (i, id) in ids.iter().enumerate() {
        p.push((format!("InstanceIds.member.{}", i + 1), id.clone()));
    }
    let params: Vec<(&str, String)> = p.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    side.query("DetachInstances", VERSION, &params).await?;
    let params: Vec<(String, String)> =
        ids.iter().enumerate().map(|(i, id)| (format!("InstanceId.{}", i + 1), id.clone())).collect();
    let params: Vec<(&str, String)> = params.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    side.ec2("TerminateInstances", &params).await?;
    Ok(())
}

/// Brings one group to its desired capacity: launches what is missing (or records why it cannot),
/// terminates the surplus (instances on old launch data first).
pub(crate) async fn converge(sh: &Shared, key: &GroupKey) -> Result<()> {
    let side = sh.upstream.side_as(&key.account, &key.region);
    let Some(g) = describe_group(sh, key).await? else {
        sh.fleet.lock().unwrap().groups.remove(key);
        return Ok(());
    };
    let (desired, retry_at, known) = {
        let mut fleet = sh.fleet.lock().unwrap();
        let Some(state) = fleet.groups.get_mut(key) else { return Ok(()) };
        if state.deleting.is_some() {
            return Ok(());
        }
        state.dirty = false;
        state.members.retain(|id, _| g.instances.contains(id));
        (state.desired, state.retry_at, state.members.clone())
    };
    let count = g.instances.len() as i64;
    if count < desired {
        if retry_at.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        let cause = fleet::launch_cause(count, desired);
        let launch = current_launch(sh, &side, &key.account, &g).await;
        let refusal = match &launch {
            Ok((_, data)) => launch_refusal(sh, &side, data).await,
            Err(reason) => Some(reason.clone()),
        };
        let subnet_of = |i: usize| (!g.subnets.is_empty()).then(|| g.subnets[i % g.subnets.len()].clone());
        let zone_of = |i: usize| (!g.zones.is_empty()).then(|| g.zones[i % g.zones.len()].clone());
        if let Some(reason) = refusal {
            let zone = zone_of(0).unwrap_or_default();
            let mut fleet = sh.fleet.lock().unwrap();
            if let Some(state) = fleet.groups.get_mut(key) {
                state.record(fleet::launch_failed(&reason, cause, subnet_of(0).as_deref(), &zone));
                state.retry_at = Some(Instant::now() + sh.cfg.launch_retry);
                if let Some(r) = state.active_refresh() {
                    r.finish(RefreshStatus::Failed, Some(reason));
                }
            }
            return Ok(());
        }
        let (source, data) = launch.expect("checked above");
        for i in 0..(desired - count) as usize {
            let slot = count as usize + i;
            let subnet = subnet_of(slot);
            let (id, zone) = run_one(&side, &g, &data, subnet.as_deref(), zone_of(slot).as_deref()).await?;
            let mut fleet = sh.fleet.lock().unwrap();
            if let Some(state) = fleet.groups.get_mut(key) {
                state.retry_at = None;
                state.members.insert(id.clone(), Member { source: source.clone(), launched: Instant::now() });
                state.record(fleet::launched(&id, cause.clone(), subnet.as_deref(), &zone));
            }
        }
    } else if count > desired {
        let current = current_launch(sh, &side, &key.account, &g).await.ok().map(|(s, _)| s);
        let mut candidates = g.instances.clone();
        // Old launch data first, then the oldest instance (AWS's default termination policy, roughly).
        candidates.sort_by_key(|id| {
            let m = known.get(id);
            (m.map(|m| Some(&m.source) == current.as_ref()).unwrap_or(false), m.map(|m| m.launched))
        });
        let surplus: Vec<String> = candidates.into_iter().take((count - desired) as usize).collect();
        retire(&side, &key.name, &surplus).await?;
        let mut fleet = sh.fleet.lock().unwrap();
        if let Some(state) = fleet.groups.get_mut(key) {
            for id in &surplus {
                state.members.remove(id);
                state.record(fleet::terminated(
                    id,
                    &format!(
                        "a user request explicitly set group desired capacity changing the desired capacity from {count} to {desired}."
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// One step of the group's active instance refresh: when the last batch's replacements are in
/// service and warmed up, the next batch of instances on old launch data is terminated (and
/// replaced by [`converge`]); when none is left, the refresh succeeds.
pub(crate) async fn step_refresh(sh: &Shared, key: &GroupKey) -> Result<()> {
    let side = sh.upstream.side_as(&key.account, &key.region);
    let Some(g) = describe_group(sh, key).await? else { return Ok(()) };
    let batch = {
        let mut fleet = sh.fleet.lock().unwrap();
        let Some(state) = fleet.groups.get_mut(key) else { return Ok(()) };
        let desired = state.desired;
        let members = state.members.clone();
        let Some(r) = state.active_refresh() else { return Ok(()) };
        r.status = RefreshStatus::InProgress;
        r.to_replace.retain(|id| g.instances.contains(id));
        let in_service = g.instances.len() as i64;
        let warming: Vec<&String> = g
            .instances
            .iter()
            .filter(|id| !r.to_replace.contains(*id))
            .filter(|id| members.get(*id).is_some_and(|m| m.launched.elapsed() < r.warmup))
            .collect();
        if r.to_replace.is_empty() && in_service >= desired && warming.is_empty() {
            r.finish(RefreshStatus::Successful, None);
            return Ok(());
        }
        if !warming.is_empty() {
            r.reason = Some(format!(
                "Waiting for instances to warm up before continuing. For example: {} is warming up.",
                warming[0]
            ));
            return Ok(());
        }
        if in_service < desired {
            r.reason = Some("Waiting for replacement instances to launch.".into());
            Vec::new()
        } else {
            r.reason = None;
            let take = fleet::refresh_batch(desired, r.min_healthy);
            let batch: Vec<String> = r.to_replace.iter().take(take).cloned().collect();
            for id in &batch {
                r.to_replace.remove(id);
            }
            batch
        }
    };
    if batch.is_empty() {
        return converge(sh, key).await;
    }
    retire(&side, &key.name, &batch).await?;
    {
        let mut fleet = sh.fleet.lock().unwrap();
        if let Some(state) = fleet.groups.get_mut(key) {
            for id in &batch {
                state.members.remove(id);
                state.record(fleet::terminated(
                    id,
                    "an instance was taken out of service in response to an instance refresh.",
                ));
            }
        }
    }
    converge(sh, key).await
}

/// The instances a new refresh replaces: all of them, or with SkipMatching those whose launch data
/// is not the group's current one.
pub(crate) async fn refresh_targets(sh: &Shared, key: &GroupKey, skip_matching: bool) -> Result<Vec<String>> {
    let side = sh.upstream.side_as(&key.account, &key.region);
    let Some(g) = describe_group(sh, key).await? else { return Ok(vec![]) };
    if !skip_matching {
        return Ok(g.instances);
    }
    let current = current_launch(sh, &side, &key.account, &g).await.ok().map(|(s, _)| s);
    let fleet = sh.fleet.lock().unwrap();
    let members = fleet.groups.get(key).map(|s| s.members.clone()).unwrap_or_default();
    Ok(g.instances
        .into_iter()
        .filter(|id| members.get(id).map(|m| Some(&m.source)) != Some(current.as_ref()))
        .collect())
}

/// The background loop: slow deletes finish, refreshes step, failed launches are retried and
/// groups whose instances were terminated are refilled.
pub(crate) async fn run(sh: std::sync::Weak<Shared>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(sh) = sh.upgrade() else { return };
        let keys: Vec<GroupKey> = {
            let mut fleet = sh.fleet.lock().unwrap();
            let now = Instant::now();
            fleet.groups.retain(|_, s| s.deleting.as_ref().is_none_or(|d| d.until > now));
            fleet
                .groups
                .iter()
                .filter(|(_, s)| s.needs_tick() && s.deleting.is_none())
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in keys {
            let _guard = sh.rules_lock.lock().await;
            let refreshing =
                sh.fleet.lock().unwrap().groups.get_mut(&key).is_some_and(|s| s.active_refresh().is_some());
            let result = if refreshing { step_refresh(&sh, &key).await } else { converge(&sh, &key).await };
            if let Err(e) = result {
                tracing::debug!(group = %key.name, error = %format!("{e:#}"), "Auto Scaling step failed");
            }
        }
    }
}
