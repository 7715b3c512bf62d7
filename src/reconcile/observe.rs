//! (IO) What is there: the AWS resources this resource owns (found by the names the spec derives
//! and the ids status recorded) and, when the plan needs them, the Console's answers and the inputs
//! to create workers. Reads only; never changes anything.

use sha2::{Digest, Sha256};

use super::plan::{GeneratedTaskDefinition, LaunchInputs, Need, Observed, Recorded};
use crate::{
    aws::{AwsClients, AwsError},
    crd::{EcsDefenderDeploymentStatus, WorkerKind},
    prisma::{ConsoleClient, ConsoleError},
    validate::{Desired, ImageSource},
};

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

/// (IO) The AWS side, always looked at.
pub async fn describe_world(
    aws: &AwsClients,
    desired: &Desired,
    status: Option<&EcsDefenderDeploymentStatus>,
) -> Result<Observed, AwsError> {
    let mut o = Observed {
        recorded: Recorded {
            observed_generation: status.and_then(|s| s.observed_generation),
            console_version: status.and_then(|s| s.console_version.clone()),
            task_definition_digest: status.and_then(|s| s.task_definition_digest.clone()),
        },
        ..Default::default()
    };
    o.cluster = aws.describe_cluster(&desired.cluster_name).await?;
    if o.cluster.is_none() {
        return Ok(o); // nothing else can exist yet
    }
    if let Some(w) = &desired.workers {
        match w.kind {
            WorkerKind::LaunchTemplate => o.launch_template = aws.describe_launch_template(&w.name).await?,
            WorkerKind::LaunchConfiguration => {
                o.launch_configuration = aws.describe_launch_configuration(&w.name).await?
            }
        }
        o.auto_scaling_group = aws.describe_auto_scaling_group(&w.asg_name).await?;
    }
    o.container_instances = aws.list_container_instances(&desired.cluster_name).await?;
    // The revision we registered (by its recorded ARN), else the family's latest: after an
    // interrupted reconcile, a revision we registered but did not record is found by its tags.
    let recorded_arn = status
        .and_then(|s| s.task_definition_arn.as_deref())
        .filter(|a| crate::aws::ecs::family_of(a) == Some(desired.task_family.as_str()));
    o.task_definition = match recorded_arn {
        Some(arn) => match aws.describe_task_definition(arn).await? {
            Some(td) if td.active => Some(td),
            _ => aws.describe_task_definition(&desired.task_family).await?,
        },
        None => aws.describe_task_definition(&desired.task_family).await?,
    };
    o.service = aws.describe_service(&desired.cluster_name, &desired.service_name).await?;
    if o.service.as_ref().is_some_and(|s| s.status != "INACTIVE") {
        o.tasks = aws.list_service_tasks(&desired.cluster_name, &desired.service_name).await?;
    }
    Ok(o)
}

/// (IO) Fetches what the plan asked for.
pub async fn fetch_needs(
    needs: &[Need],
    aws: &AwsClients,
    console: &ConsoleClient,
    desired: &Desired,
    o: &mut Observed,
) -> Result<(), ObserveError> {
    for need in needs {
        match need {
            Need::LaunchInputs => o.launch_inputs = Some(describe_launch_inputs(aws, desired).await?),
            Need::ConsoleVersion => o.console_version = Some(console.version().await?),
            Need::GeneratedTaskDefinition => {
                let version = match &o.console_version {
                    Some(v) => v.clone(),
                    None => {
                        let v = console.version().await?;
                        o.console_version = Some(v.clone());
                        v
                    }
                };
                let definition = console.generate_ecs_task(&desired.generator_options).await?;
                o.generated = Some(build_generated(definition, &desired.task_family, version));
            }
            Need::Defenders => {
                // Defenders report the cluster override when one is set, else the ECS cluster's name.
                let cluster =
                    desired.generator_options.get("cluster").and_then(|c| c.as_str()).unwrap_or(&desired.cluster_name);
                o.defenders = Some(console.defenders(Some(cluster), Some(true)).await?);
            }
        }
    }
    Ok(())
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

async fn describe_launch_inputs(aws: &AwsClients, desired: &Desired) -> Result<LaunchInputs, AwsError> {
    let w = desired.workers.as_ref().expect("launch inputs are needed only with workers");
    let image_id = match &w.image {
        ImageSource::SsmParameter(p) => match aws.get_ssm_parameter(p).await? {
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
    let (vpc, subnet_ids, missing_subnets) = if w.subnet_ids.is_empty() {
        let (vpc, subnets) = aws.default_subnets().await?;
        (vpc, subnets, vec![])
    } else {
        let (vpc, missing) = aws.describe_subnets(&w.subnet_ids).await?;
        (vpc, w.subnet_ids.clone(), missing)
    };
    let (security_group_ids, missing_security_groups) =
        aws.resolve_security_groups(&w.security_groups, vpc.as_deref()).await?;
    Ok(LaunchInputs { image_id, security_group_ids, missing_security_groups, subnet_ids, missing_subnets })
}
