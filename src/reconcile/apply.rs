//! (IO) Carries out a plan's actions in order, stopping at the first failure. Returns what was
//! done (and the ids that now exist, so status records them at once) even when an action failed.

use super::{
    plan::{Action, short_td},
    teardown,
};
use crate::{
    aws::{
        AwsClients, AwsError,
        autoscaling::{AutoScalingGroupUpdate, LaunchSource},
    },
    crd::DefenderSecretStatus,
    validate::EXECUTION_ROLE_POLICY,
};

/// What one reconcile changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// (action name, what it did) for Events.
    pub done: Vec<(&'static str, String)>,
    pub cluster_arn: Option<String>,
    pub launch_template_id: Option<String>,
    /// The launch-template version created by this plan.
    pub launch_template_version: Option<i64>,
    pub task_definition: Option<(String, String)>, // (arn, digest)
    /// The secret and version the registered (or re-tagged) revision takes the bundle from.
    pub defender_secret: Option<DefenderSecretStatus>,
    pub service_arn: Option<String>,
    /// The action that failed, and why.
    pub failed: Option<(&'static str, AwsError)>,
}

impl Applied {
    pub fn changed(&self) -> bool {
        !self.done.is_empty()
    }
}

/// (IO) Executes `actions`. `suspend` executes nothing.
pub async fn apply(aws: &AwsClients, actions: &[Action]) -> Applied {
    let mut applied = Applied::default();
    for action in actions {
        if let Err(e) = apply_one(aws, action, &mut applied).await {
            applied.failed = Some((action.name(), e));
            break;
        }
    }
    applied
}

async fn apply_one(aws: &AwsClients, action: &Action, applied: &mut Applied) -> Result<(), AwsError> {
    match action {
        Action::CreateCluster { name, tags } => {
            let c = aws.create_cluster(name, tags).await?;
            applied.done.push((action.name(), format!("created ECS cluster {name}")));
            applied.cluster_arn = Some(c.arn);
        }
        Action::CreateLaunchTemplate(lt) => {
            let created = aws.create_launch_template(lt).await?;
            applied
                .done
                .push((action.name(), format!("created launch template {} ({})", lt.instance.name, created.id)));
            applied.launch_template_id = Some(created.id);
        }
        Action::CreateLaunchTemplateVersion { id, template } => {
            let v = aws.create_launch_template_version(id, template).await?;
            applied.done.push((
                action.name(),
                format!("created version {v} of launch template {} with new launch data", template.instance.name),
            ));
            applied.launch_template_version = Some(v);
        }
        Action::SetDefaultLaunchTemplateVersion { id, name, version } => {
            let v = resolve_version(*version, applied)?;
            aws.set_default_launch_template_version(id, v).await?;
            applied.done.push((action.name(), format!("made version {v} the default of launch template {name}")));
        }
        Action::CreateLaunchConfiguration(lc) => {
            aws.create_launch_configuration(lc).await?;
            applied.done.push((action.name(), format!("created launch configuration {}", lc.name)));
        }
        Action::CreateAutoScalingGroup(g) => {
            let mut g = g.clone();
            g.launch = resolve_launch(&g.launch, applied)?;
            aws.create_auto_scaling_group(&g).await?;
            applied.done.push((
                action.name(),
                format!(
                    "created Auto Scaling group {} (min {}, max {}, desired {})",
                    g.name, g.min_size, g.max_size, g.desired_capacity
                ),
            ));
        }
        Action::UpdateAutoScalingGroup(u) => {
            let u = AutoScalingGroupUpdate {
                launch: u.launch.as_ref().map(|l| resolve_launch(l, applied)).transpose()?,
                ..u.clone()
            };
            aws.update_auto_scaling_group(&u).await?;
            applied
                .done
                .push((action.name(), format!("updated Auto Scaling group {}: {}", u.name, describe_update(&u))));
        }
        Action::StartInstanceRefresh { name, min_healthy_percentage } => {
            let id = aws.start_instance_refresh(name, *min_healthy_percentage).await?;
            applied.done.push((
                action.name(),
                format!(
                    "started instance refresh {id} of {name} (keeping {min_healthy_percentage}% healthy) to replace instances on older launch data"
                ),
            ));
        }
        Action::TagTaskDefinition { arn, tags, defender_secret } => {
            aws.tag_resource(arn, tags).await?;
            applied.done.push((
                action.name(),
                format!("the Console generates what {} already holds: recorded on the revision", short_td(arn)),
            ));
            applied.defender_secret = defender_secret.clone();
        }
        Action::CreateSecret { name, description, tags } => {
            aws.create_secret(name, description, tags).await?;
            applied.done.push((action.name(), format!("created Secrets Manager secret {name} for the install bundle")));
        }
        Action::RestoreSecret { arn, name } => {
            aws.restore_secret(arn).await?;
            applied.done.push((action.name(), format!("restored secret {name}")));
        }
        Action::PutSecretValue { arn, name, version_id, value } => {
            aws.put_secret_value(arn, version_id, value).await?;
            applied.done.push((
                action.name(),
                format!("stored the Console's install bundle in secret {name} as version {version_id}"),
            ));
        }
        Action::CreateExecutionRole(role) => {
            aws.create_role(role).await?;
            applied.done.push((action.name(), format!("created task execution role {}", role.name)));
        }
        Action::PutExecutionRolePolicy { role, document } => {
            aws.put_role_policy(role, EXECUTION_ROLE_POLICY, document).await?;
            applied.done.push((
                action.name(),
                format!(
                    "allowed execution role {role} to read the install bundle's secret (policy {EXECUTION_ROLE_POLICY})"
                ),
            ));
        }
        Action::Remove(a) => {
            let note = teardown::execute_one(aws, a).await?;
            applied.done.push((action.name(), format!("{note} (no longer named by the spec)")));
        }
        Action::RegisterTaskDefinition { generated, tags, defender_secret, .. } => {
            let td = aws.register_task_definition(&generated.definition, tags).await?;
            let bundle = if defender_secret.is_some() { ", install bundle from Secrets Manager" } else { "" };
            applied.done.push((
                action.name(),
                format!(
                    "registered task definition {}:{} (Console {}{bundle})",
                    td.family, td.revision, generated.console_version
                ),
            ));
            applied.task_definition = Some((td.arn, generated.digest.clone()));
            applied.defender_secret = defender_secret.clone();
        }
        Action::CreateService { cluster, name, task_definition, client_token, tags } => {
            let td = resolve_td(task_definition, applied)?;
            let s = aws.create_service(cluster, name, &td, client_token, tags).await?;
            applied.done.push((action.name(), format!("created DAEMON service {name} running {}", short_td(&td))));
            applied.service_arn = Some(s.arn);
        }
        Action::UpdateService { cluster, name, task_definition, force_new_deployment } => {
            let td = resolve_td(task_definition, applied)?;
            aws.update_service(cluster, name, &td, *force_new_deployment).await?;
            let note = if *force_new_deployment {
                format!("restarting the Defenders of service {name} ({}) with the new install bundle", short_td(&td))
            } else {
                format!("updated service {name} to {}", short_td(&td))
            };
            applied.done.push((action.name(), note));
        }
    }
    Ok(())
}

/// `None` refers to the launch-template version created earlier in this plan.
fn resolve_version(version: Option<i64>, applied: &Applied) -> Result<i64, AwsError> {
    version.or(applied.launch_template_version).ok_or_else(|| AwsError {
        operation: "plan",
        code: None,
        message: "the plan refers to a launch-template version that was not created".into(),
        transient: true,
    })
}

fn resolve_launch(launch: &LaunchSource, applied: &Applied) -> Result<LaunchSource, AwsError> {
    Ok(match launch {
        LaunchSource::Template { name, version } => {
            LaunchSource::Template { name: name.clone(), version: Some(resolve_version(*version, applied)?) }
        }
        other => other.clone(),
    })
}

fn describe_update(u: &AutoScalingGroupUpdate) -> String {
    let mut parts = vec![];
    if let Some((min, max, desired)) = u.sizes {
        parts.push(format!("min {min}, max {max}, desired {desired}"));
    }
    if let Some(s) = &u.subnet_ids {
        parts.push(format!("subnets {}", s.join(",")));
    }
    match &u.launch {
        Some(LaunchSource::Template { name, version }) => {
            parts.push(format!("launch template {name} version {}", version.unwrap_or_default()))
        }
        Some(LaunchSource::Configuration { name }) => parts.push(format!("launch configuration {name}")),
        None => {}
    }
    parts.join("; ")
}

/// `None` refers to the revision registered earlier in this plan.
fn resolve_td(td: &Option<String>, applied: &Applied) -> Result<String, AwsError> {
    match td {
        Some(arn) => Ok(arn.clone()),
        None => applied.task_definition.as_ref().map(|(arn, _)| arn.clone()).ok_or_else(|| AwsError {
            operation: "plan",
            code: None,
            message: "the plan refers to a task definition that was not registered".into(),
            transient: true,
        }),
    }
}
