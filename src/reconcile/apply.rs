//! (IO) Carries out a plan's actions in order, stopping at the first failure. Returns what was
//! done (and the ids that now exist, so status records them at once) even when an action failed.

use super::plan::{Action, short_td};
use crate::aws::{AwsClients, AwsError};

/// What one reconcile changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// (action name, what it did) for Events.
    pub done: Vec<(&'static str, String)>,
    pub cluster_arn: Option<String>,
    pub launch_template_id: Option<String>,
    pub task_definition: Option<(String, String)>, // (arn, digest)
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
        Action::CreateLaunchConfiguration(lc) => {
            aws.create_launch_configuration(lc).await?;
            applied.done.push((action.name(), format!("created launch configuration {}", lc.name)));
        }
        Action::CreateAutoScalingGroup(g) => {
            aws.create_auto_scaling_group(g).await?;
            applied.done.push((
                action.name(),
                format!(
                    "created Auto Scaling group {} (min {}, max {}, desired {})",
                    g.name, g.min_size, g.max_size, g.desired_capacity
                ),
            ));
        }
        Action::UpdateAutoScalingGroupSize { name, min, max, desired } => {
            aws.update_auto_scaling_group_size(name, *min, *max, *desired).await?;
            applied.done.push((
                action.name(),
                format!("resized Auto Scaling group {name} to min {min}, max {max}, desired {desired}"),
            ));
        }
        Action::RegisterTaskDefinition { generated, tags, .. } => {
            let td = aws.register_task_definition(&generated.definition, tags).await?;
            applied.done.push((
                action.name(),
                format!(
                    "registered task definition {}:{} (Console {})",
                    td.family, td.revision, generated.console_version
                ),
            ));
            applied.task_definition = Some((td.arn, generated.digest.clone()));
        }
        Action::CreateService { cluster, name, task_definition, client_token, tags } => {
            let td = resolve_td(task_definition, applied)?;
            let s = aws.create_service(cluster, name, &td, client_token, tags).await?;
            applied.done.push((action.name(), format!("created DAEMON service {name} running {}", short_td(&td))));
            applied.service_arn = Some(s.arn);
        }
        Action::UpdateService { cluster, name, task_definition } => {
            let td = resolve_td(task_definition, applied)?;
            aws.update_service(cluster, name, &td).await?;
            applied.done.push((action.name(), format!("updated service {name} to {}", short_td(&td))));
        }
    }
    Ok(())
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
