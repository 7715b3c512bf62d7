//! (IO) What is there: the AWS resources this resource owns (found by the names the spec derives
//! and the ids status recorded) and, when the plan needs them, the Console's answers and the inputs
//! to create workers. Reads only; never changes anything.

use std::{sync::Arc, time::Instant};

use sha2::{Digest, Sha256};

use super::{
    glance::{Looks, Recall},
    observed::{GeneratedTaskDefinition, LaunchInputs, Need, Observed, Prerequisites, Recorded, Stale},
    plan::{launch_configuration_name, launch_hash, stale_names},
};
use crate::{
    aws::{AwsClients, AwsError, ecs::Service, tags::owned_by},
    crd::{EcsDefenderDeploymentStatus, WorkerKind},
    prisma::{ConsoleClient, ConsoleError, ConsoleOutage},
    validate::{Desired, EXECUTION_ROLE_POLICY, ExecutionRole, ImageSource},
};

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

/// How a full pass reads: which answers shared with the fleet's glances are recent enough, and
/// what the pass before may stand in for ([`Recall`]; `None` on a deep pass).
#[derive(Clone, Debug)]
pub struct Reads {
    /// Batched answers (cluster, group, launch template, AMI parameter) must be asked for no
    /// earlier than this: after this resource's last change, and no older than its glance's.
    pub not_before: Instant,
    /// The same for what the glance did not look at (a wait looks only at what it waits for):
    /// as old as a resync's glance may be, never before this resource's last change.
    pub unwatched_since: Instant,
    /// What the glance looked at.
    pub looks: Looks,
    pub recall: Option<Arc<Recall>>,
    /// The service as this reconcile's glance read it, when it did.
    pub service: Option<Option<Service>>,
    /// The Console's version as the glance read it (the Console's shared view), when it did.
    pub console_version: Option<String>,
}

impl Reads {
    /// Everything from AWS, asked for no earlier than `since`.
    pub fn deep(since: Instant) -> Self {
        Reads {
            not_before: since,
            unwatched_since: since,
            looks: Looks::default(),
            recall: None,
            service: None,
            console_version: None,
        }
    }

    fn since(&self, looked: bool) -> Instant {
        if looked { self.not_before } else { self.unwatched_since }
    }
}

/// (IO) The AWS side, always looked at.
pub async fn describe_world(
    aws: &AwsClients,
    desired: &Desired,
    status: Option<&EcsDefenderDeploymentStatus>,
    reads: &Reads,
) -> Result<Observed, AwsError> {
    let mut o = Observed { recorded: Recorded::of(status), ..Default::default() };
    let recall = reads.recall.as_deref();
    o.cluster = aws.glance_cluster(&desired.cluster_name, reads.not_before).await?;
    if o.cluster.is_none() {
        return Ok(o); // nothing else can exist yet
    }
    if let Some(w) = &desired.workers {
        if w.kind == WorkerKind::LaunchTemplate {
            o.launch_template = aws.glance_launch_template(&w.name, reads.since(reads.looks.launch_template)).await?;
            if let Some(lt) = o.launch_template.as_ref().filter(|lt| owned_by(&lt.tags, &desired.uid)) {
                // Versions never change: the one recalled is the default if its number is.
                o.launch_template_default = match recall.and_then(|r| r.launch_template_default.as_ref()) {
                    Some((id, v)) if *id == lt.id && v.number == lt.default_version => Some(v.clone()),
                    _ => aws.describe_launch_template_versions(&lt.id, &["$Default"]).await?.into_iter().next(),
                };
            }
        }
        o.auto_scaling_group = aws.glance_auto_scaling_group(&w.asg_name, reads.since(reads.looks.group)).await?;
    }
    // The cluster's counts (as fresh as the rest) say when there is nothing to list.
    let counts =
        o.cluster.as_ref().map_or((0, 0), |c| (c.registered_container_instances, c.running_tasks + c.pending_tasks));
    if counts.0 > 0 {
        o.container_instances = aws.list_container_instances(&desired.cluster_name).await?;
    }
    o.task_definition = match recall.and_then(|r| r.task_definition.clone()) {
        Some(td) => td,
        None => aws.describe_task_definition(&desired.task_family).await?,
    };
    o.service = match reads.service.clone() {
        Some(s) => s,
        None => aws.describe_service(&desired.cluster_name, &desired.service_name).await?,
    };
    // Either count may show tasks first (both are eventually consistent).
    let tasks_shown = counts.1 > 0 || o.service.as_ref().is_some_and(|s| s.running > 0);
    if tasks_shown && o.service.as_ref().is_some_and(|s| s.status != "INACTIVE") {
        o.tasks = aws.list_service_tasks(&desired.cluster_name, &desired.service_name).await?;
    }
    if let Some(want) = desired.secrets.secrets_manager() {
        o.defender_secret = match recall.and_then(|r| r.defender_secret.clone()) {
            Some(s) => s,
            None => aws.describe_secret(&want.name).await?,
        };
        if let ExecutionRole::Create { name } = &want.execution_role {
            (o.execution_role, o.execution_role_policy) = match recall.and_then(|r| r.execution_role.clone()) {
                Some(recalled) => recalled,
                None => {
                    let role = aws.get_role(name).await?;
                    let policy = match &role {
                        Some(r) if owned_by(&r.tags, &desired.uid) => {
                            aws.get_role_policy(name, EXECUTION_ROLE_POLICY).await?
                        }
                        _ => None,
                    };
                    (role, policy)
                }
            };
        }
    }
    Ok(o)
}

/// (IO) Fetches what the plan asked for.
pub async fn fetch_needs(
    needs: &[Need],
    aws: &AwsClients,
    console: &ConsoleClient,
    desired: &Desired,
    reads: &Reads,
    o: &mut Observed,
) -> Result<(), ObserveError> {
    // The glance's (shared, fresh) answer stands in for asking the Console its version.
    if o.console_version.is_none() {
        o.console_version = reads.console_version.clone();
    }
    for need in needs {
        match need {
            Need::LaunchInputs => o.launch_inputs = Some(describe_launch_inputs(aws, desired, reads).await?),
            Need::Prerequisites => o.prerequisites = Some(describe_prerequisites(aws, desired, reads, o).await?),
            Need::LaunchTemplateVersions => {
                if let Some(lt) = &o.launch_template {
                    o.launch_template_versions = Some(aws.describe_launch_template_versions(&lt.id, &[]).await?);
                }
            }
            Need::LaunchConfiguration => {
                if let Some(name) = wanted_launch_configuration(desired, o) {
                    o.launch_configuration = Some(aws.describe_launch_configuration(&name).await?);
                }
            }
            Need::InstanceRefreshes => {
                if let Some(g) = &o.auto_scaling_group {
                    o.instance_refreshes = Some(aws.describe_instance_refreshes(&g.name).await?);
                }
            }
            Need::ScalingActivities => {
                if let Some(g) = &o.auto_scaling_group {
                    o.scaling_activities = Some(aws.describe_scaling_activities(&g.name).await?);
                }
            }
            Need::StoppedTasks => {
                o.stopped_tasks =
                    Some(aws.list_stopped_service_tasks(&desired.cluster_name, &desired.service_name).await?);
            }
            Need::Stale => o.stale = Some(describe_stale(aws, desired, o).await?),
            Need::ConsoleVersion if o.console_version.is_some() => {}
            Need::ConsoleVersion => {
                if let Some(v) = ask(console, &mut o.console_unavailable, console.version()).await? {
                    o.console_version = Some(v);
                }
            }
            Need::GeneratedTaskDefinition => {
                if o.console_version.is_none() {
                    o.console_version = ask(console, &mut o.console_unavailable, console.version()).await?;
                }
                let Some(version) = o.console_version.clone() else { continue };
                let generate = console.generate_ecs_task(&desired.generator_options);
                if let Some(definition) = ask(console, &mut o.console_unavailable, generate).await? {
                    o.generated = Some(build_generated(definition, &desired.task_family, version));
                }
            }
            Need::InstanceHostnames => {
                let ids: Vec<String> = o.container_instances.iter().map(|ci| ci.ec2_instance_id.clone()).collect();
                o.instance_hostnames = Some(aws.describe_instance_hostnames(&ids).await?);
            }
            Need::Defenders => {
                // Defenders report the cluster override when one is set, else the ECS cluster's name.
                let cluster = super::glance::defender_cluster(desired);
                o.defenders =
                    ask(console, &mut o.console_unavailable, console.defenders(Some(cluster), Some(true))).await?;
            }
        }
    }
    Ok(())
}

/// (IO) One Console call, unless the Console already failed in this reconcile or is backing off:
/// `Ok(None)` with `outage` set when it does not answer (the AWS side goes on without it); `Err`
/// when it refuses (bad credentials, permissions), which no retry fixes.
async fn ask<T>(
    console: &ConsoleClient,
    outage: &mut Option<ConsoleOutage>,
    call: impl Future<Output = Result<T, ConsoleError>>,
) -> Result<Option<T>, ConsoleError> {
    if outage.is_some() {
        return Ok(None);
    }
    match console.guarded(call).await? {
        Ok(v) => Ok(Some(v)),
        Err(o) => {
            *outage = Some(o);
            Ok(None)
        }
    }
}

/// (IO) What must hold before the first AWS change: every name the spec derives is free or ours
/// (launch template, group, task family, the install bundle's secret and our execution role, and
/// the service in an adopted cluster), and what EC2 checks only at launch (instance type, instance
/// profile, key pair) exists.
async fn describe_prerequisites(
    aws: &AwsClients,
    desired: &Desired,
    reads: &Reads,
    o: &Observed,
) -> Result<Prerequisites, AwsError> {
    let uid = &desired.uid;
    // With the cluster there, describe_world has read every name already (and the service).
    let seen = o.cluster.is_some();
    let mut names_taken = vec![];
    let mut p = Prerequisites { instance_type_exists: true, instance_profile_exists: true, ..Default::default() };
    let checked = reads.recall.as_ref().and_then(|r| r.instance_checks.clone());
    if let Some(w) = &desired.workers {
        if w.kind == WorkerKind::LaunchTemplate {
            let lt = if seen {
                o.launch_template.clone()
            } else {
                aws.glance_launch_template(&w.name, reads.not_before).await?
            };
            if let Some(lt) = lt.filter(|lt| !owned_by(&lt.tags, uid)) {
                names_taken.push(format!("launch template {} (workers.name)", lt.name));
            }
        }
        let group = match seen {
            true => o.auto_scaling_group.clone(),
            false => aws.glance_auto_scaling_group(&w.asg_name, reads.not_before).await?,
        };
        if let Some(g) = group.filter(|g| !owned_by(&g.tags, uid)) {
            names_taken.push(format!("Auto Scaling group {} (workers.autoScalingGroup.name)", g.name));
        }
        if let Some(c) = checked {
            // Found in a pass before, for this spec.
            (p.instance_type_exists, p.instance_profile_exists, p.key_pair_exists) =
                (c.instance_type_exists, c.instance_profile_exists, c.key_pair_exists);
        } else {
            // A profile may be named by ARN; IAM looks it up by name.
            let profile = w.instance_profile.rsplit('/').next().unwrap_or(&w.instance_profile);
            p.instance_type_exists = aws.instance_type_exists(&w.instance_type).await?;
            p.instance_profile_exists = aws.instance_profile_exists(profile).await?;
            p.key_pair_exists = match &w.key_name {
                Some(k) => Some(aws.key_pair_exists(k).await?),
                None => None,
            };
        }
    }
    let td = if seen { o.task_definition.clone() } else { aws.describe_task_definition(&desired.task_family).await? };
    if let Some(td) = td.filter(|td| td.active && !owned_by(&td.tags, uid)) {
        names_taken.push(format!("task definition family {} (defender.taskName)", td.family));
    }
    // Services live in the cluster: only an existing (adopted) cluster can hold one.
    if let Some(s) = o.service.as_ref().filter(|s| s.status != "INACTIVE" && !owned_by(&s.tags, uid)) {
        names_taken.push(format!("service {} in cluster {} (service.name)", s.name, desired.cluster_name));
    }
    if let Some(want) = desired.secrets.secrets_manager() {
        // Named after the cluster and this resource's UID: not a name to choose, only to free.
        let secret = if seen { o.defender_secret.clone() } else { aws.describe_secret(&want.name).await? };
        if let Some(s) = secret.filter(|s| !owned_by(&s.tags, uid)) {
            names_taken.push(format!(
                "Secrets Manager secret {} (delete it, or set defender.secrets.storage: Inline)",
                s.name
            ));
        }
        if let ExecutionRole::Create { name } = &want.execution_role {
            let role = if seen { o.execution_role.clone() } else { aws.get_role(name).await? };
            if let Some(r) = role.filter(|r| !owned_by(&r.tags, uid)) {
                names_taken.push(format!(
                    "IAM role {} (delete it, or name a role of yours in defender.secrets.executionRoleArn)",
                    r.name
                ));
            }
        }
    }
    p.names_taken = names_taken;
    Ok(p)
}

/// The launch configuration the current launch data names (known once the inputs are resolved).
fn wanted_launch_configuration(desired: &Desired, o: &Observed) -> Option<String> {
    let w = desired.workers.as_ref().filter(|w| w.kind == WorkerKind::LaunchConfiguration)?;
    let inputs = o.launch_inputs.as_ref()?;
    let image = inputs.image_id.as_ref().ok()?;
    Some(launch_configuration_name(w, &launch_hash(w, image, &inputs.security_group_ids)))
}

/// (IO) What `status.owned` lists that the spec no longer names, as AWS has it now.
async fn describe_stale(aws: &AwsClients, desired: &Desired, o: &Observed) -> Result<Stale, AwsError> {
    let names = stale_names(desired, &o.recorded.owned, wanted_launch_configuration(desired, o).as_deref());
    let mut stale = Stale::default();
    for name in &names.services {
        match aws.describe_service(&desired.cluster_name, name).await? {
            Some(s) if s.status != "INACTIVE" => stale.services.push(s),
            _ => stale.gone_services.push(name.clone()),
        }
    }
    for family in &names.task_families {
        let arns = aws.list_task_definitions(family).await?;
        if arns.is_empty() {
            stale.gone_task_families.push(family.clone());
        }
        for arn in arns {
            if let Some(td) = aws.describe_task_definition(&arn).await? {
                stale.task_definitions.push(td);
            }
        }
    }
    for arn in &names.old_revisions {
        match aws.describe_task_definition(arn).await? {
            Some(td) if td.active => stale.old_revisions.push(td),
            _ => stale.gone_old_revisions.push(arn.clone()),
        }
    }
    for name in &names.auto_scaling_groups {
        match aws.describe_auto_scaling_group(name).await? {
            Some(g) => stale.auto_scaling_groups.push(g),
            None => stale.gone_auto_scaling_groups.push(name.clone()),
        }
    }
    for name in &names.launch_templates {
        match aws.describe_launch_template(name).await? {
            Some(lt) => stale.launch_templates.push(lt),
            None => stale.gone_launch_templates.push(name.clone()),
        }
    }
    for name in &names.launch_configurations {
        match aws.describe_launch_configuration(name).await? {
            Some(lc) => stale.launch_configurations.push(lc),
            None => stale.gone_launch_configurations.push(name.clone()),
        }
    }
    for name in &names.secrets {
        match aws.describe_secret(name).await? {
            Some(s) if !s.deleted => stale.secrets.push(s),
            _ => stale.gone_secrets.push(name.clone()),
        }
    }
    for name in &names.execution_roles {
        match aws.get_role(name).await? {
            Some(r) => stale.execution_roles.push(r),
            None => stale.gone_execution_roles.push(name.clone()),
        }
    }
    Ok(stale)
}

/// (pure) The Console's task definition with our overrides (the family is the spec's task name),
/// its digest over a canonical form, and the Defender image.
pub fn build_generated(
    mut definition: serde_json::Value,
    family: &str,
    console_version: String,
) -> GeneratedTaskDefinition {
    if let Some(obj) = definition.as_object_mut() {
        obj.insert("family".into(), family.into());
        // Tags are ours to set at registration; whatever the Console put there is not registered twice.
        obj.remove("tags");
    }
    // serde_json's map is ordered by key, so this serialization is canonical.
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&definition).expect("JSON value serializes")));
    let image = definition
        .get("containerDefinitions")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
        .and_then(|c| c.get("image"))
        .and_then(|i| i.as_str())
        .map(str::to_string);
    GeneratedTaskDefinition { definition, digest, console_version, image }
}

async fn describe_launch_inputs(aws: &AwsClients, desired: &Desired, reads: &Reads) -> Result<LaunchInputs, AwsError> {
    let w = desired.workers.as_ref().expect("launch inputs are needed only with workers");
    // The AMI behind the parameter is read each pass (batched with the fleet's glances), so a new
    // one is seen; the subnets and security groups the spec names only at a deep pass.
    let image_id = match &w.image {
        ImageSource::SsmParameter(p) => match aws.glance_ssm_parameter(p, reads.since(reads.looks.image)).await? {
            Some(id) if id.starts_with("ami-") => Ok(id),
            Some(other) => {
                Err(format!("SSM parameter {p} holds {other:?}, not an AMI id; use a .../image_id parameter"))
            }
            None => Err(format!("SSM parameter {p} does not exist in {}", desired.region)),
        },
        ImageSource::Id(id) => {
            if aws.image_exists(id).await? {
                Ok(id.clone())
            } else {
                Err(format!("AMI {id} does not exist in {} or is not visible to this account", desired.region))
            }
        }
    };
    if let Some(network) = reads.recall.as_ref().and_then(|r| r.network.clone()) {
        return Ok(LaunchInputs { image_id, ..network });
    }
    let (vpc, mut subnet_ids, missing_subnets) = if w.subnet_ids.is_empty() {
        let (vpc, subnets) = aws.default_subnets().await?;
        (vpc, subnets, vec![])
    } else {
        let (vpc, missing) = aws.describe_subnets(&w.subnet_ids).await?;
        (vpc, w.subnet_ids.clone(), missing)
    };
    subnet_ids.sort();
    let (security_group_ids, missing_security_groups) =
        aws.resolve_security_groups(&w.security_groups, vpc.as_deref()).await?;
    Ok(LaunchInputs { image_id, security_group_ids, missing_security_groups, subnet_ids, missing_subnets })
}
