//! The plan's input model: what observe found in AWS and the Console, and what earlier reconciles
//! recorded in status. Plain data; [`super::observe`] fills it (IO), [`super::plan`] reads it (pure).

use crate::{
    aws::{
        autoscaling::{AutoScalingGroup, InstanceRefresh, LaunchConfiguration, ScalingActivity},
        ec2::{LaunchTemplate, LaunchTemplateVersion},
        ecs::{Cluster, ContainerInstance, Service, Task, TaskDefinition},
        iam::Role,
        secretsmanager::Secret,
    },
    crd::{EcsDefenderDeploymentStatus, OwnedResources},
    prisma::{ConsoleOutage, Defender},
};

/// What observe found. `None` in the optional observations means "not looked at yet".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub cluster: Option<Cluster>,
    /// The launch template the spec names.
    pub launch_template: Option<LaunchTemplate>,
    /// Its default version (looked at with the template).
    pub launch_template_default: Option<LaunchTemplateVersion>,
    /// All its versions: looked at only when the default is not the wanted launch data.
    pub launch_template_versions: Option<Vec<LaunchTemplateVersion>>,
    /// The launch configuration the spec's launch data names (`Some(None)`: looked, not there).
    pub launch_configuration: Option<Option<LaunchConfiguration>>,
    pub auto_scaling_group: Option<AutoScalingGroup>,
    pub instance_refreshes: Option<Vec<InstanceRefresh>>,
    pub scaling_activities: Option<Vec<ScalingActivity>>,
    pub container_instances: Vec<ContainerInstance>,
    /// The family's latest ACTIVE revision, when there is one.
    pub task_definition: Option<TaskDefinition>,
    pub service: Option<Service>,
    pub tasks: Vec<Task>,
    /// The install bundle's secret, by the name the spec derives (storage `SecretsManager`).
    pub defender_secret: Option<Secret>,
    /// The execution role we create, by the name the spec derives (`createExecutionRole`).
    pub execution_role: Option<Role>,
    /// Its inline policy, when the role exists (parsed JSON).
    pub execution_role_policy: Option<serde_json::Value>,
    /// Recently stopped Defender tasks (why a Defender does not start).
    pub stopped_tasks: Option<Vec<Task>>,
    /// The Console's version (one cheap call per reconcile).
    pub console_version: Option<String>,
    /// The Console did not answer (5xx, network, 429), or is left alone while it backs off: what
    /// needs it waits, with this reason; the AWS side goes on.
    pub console_unavailable: Option<ConsoleOutage>,
    pub launch_inputs: Option<LaunchInputs>,
    /// Names taken and the workers' instance type, profile and key pair: looked at only before
    /// the first change (and before workers are first created).
    pub prerequisites: Option<Prerequisites>,
    pub generated: Option<GeneratedTaskDefinition>,
    pub defenders: Option<Vec<Defender>>,
    /// EC2 instance id -> private DNS name, for Defenders the Console lists by hostname only.
    pub instance_hostnames: Option<std::collections::BTreeMap<String, String>>,
    /// What this resource created earlier under names the spec no longer uses.
    pub stale: Option<Stale>,
    pub recorded: Recorded,
}

/// What earlier reconciles wrote to status that planning uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    pub observed_generation: Option<i64>,
    pub cluster_arn: Option<String>,
    pub service_arn: Option<String>,
    pub auto_scaling_group_arn: Option<String>,
    pub task_definition_arn: Option<String>,
    pub owned: OwnedResources,
    /// The last reconcile was itself changing the Auto Scaling group (its `WorkersReady` reason was
    /// `Creating` or `Updating`): sizes that differ now may be that change failing, not drift.
    pub workers_changing: bool,
}

impl Recorded {
    pub fn of(status: Option<&EcsDefenderDeploymentStatus>) -> Self {
        let Some(s) = status else { return Self::default() };
        Self {
            observed_generation: s.observed_generation,
            cluster_arn: s.cluster_arn.clone(),
            service_arn: s.service_arn.clone(),
            auto_scaling_group_arn: s.auto_scaling_group_arn.clone(),
            task_definition_arn: s.task_definition_arn.clone(),
            owned: s.owned.clone(),
            workers_changing: s.conditions.iter().any(|c| {
                c.type_ == crate::crd::conditions::WORKERS_READY && matches!(c.reason.as_str(), "Creating" | "Updating")
            }),
        }
    }
}

/// Inputs needed to build the launch data: the AMI, security groups and subnets resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchInputs {
    /// The AMI id, or why there is none.
    pub image_id: Result<String, String>,
    pub security_group_ids: Vec<String>,
    pub missing_security_groups: Vec<String>,
    /// The subnets to use (the spec's, or the default VPC's), sorted.
    pub subnet_ids: Vec<String>,
    /// Subnets the spec names that do not exist.
    pub missing_subnets: Vec<String>,
}

/// What must hold before the first AWS change: what EC2 checks only when an instance starts (after
/// the group exists), and the names the spec derives. Without workers, only the names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prerequisites {
    pub instance_type_exists: bool,
    pub instance_profile_exists: bool,
    /// Names the spec derives that something not ours holds (launch template, group, task
    /// family, the bundle's secret, our execution role, the service in an adopted cluster), each
    /// with the field that chooses it; found before the first change, so nothing is made for a
    /// resource that cannot finish.
    pub names_taken: Vec<String>,
    /// `None`: the spec names no key pair.
    pub key_pair_exists: Option<bool>,
}

/// The Console's task definition with our overrides, ready to register.
#[derive(Clone, PartialEq)]
pub struct GeneratedTaskDefinition {
    pub definition: serde_json::Value,
    pub digest: String,
    pub console_version: String,
    pub image: Option<String>,
}

impl std::fmt::Debug for GeneratedTaskDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The definition carries the install bundle: never print it.
        f.debug_struct("GeneratedTaskDefinition")
            .field("digest", &self.digest)
            .field("console_version", &self.console_version)
            .finish()
    }
}

/// What this resource created under names the spec no longer uses, as AWS has it now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stale {
    /// Services in the cluster (any status ECS still reports).
    pub services: Vec<Service>,
    /// Names looked for and not found (gone): dropped from `status.owned`.
    pub gone_services: Vec<String>,
    /// ACTIVE revisions of families no longer used, ours only.
    pub task_definitions: Vec<TaskDefinition>,
    pub gone_task_families: Vec<String>,
    pub auto_scaling_groups: Vec<AutoScalingGroup>,
    pub gone_auto_scaling_groups: Vec<String>,
    pub launch_templates: Vec<LaunchTemplate>,
    pub gone_launch_templates: Vec<String>,
    pub launch_configurations: Vec<LaunchConfiguration>,
    pub gone_launch_configurations: Vec<String>,
    /// Secrets not scheduled for deletion.
    pub secrets: Vec<Secret>,
    pub gone_secrets: Vec<String>,
    pub execution_roles: Vec<Role>,
    pub gone_execution_roles: Vec<String>,
    /// Replaced revisions of the current family still ACTIVE.
    pub old_revisions: Vec<TaskDefinition>,
    /// Replaced revisions already deregistered (or gone): dropped from `status.owned`.
    pub gone_old_revisions: Vec<String>,
}

/// Observations the plan needs before it can go further.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// AMI id, security group ids, subnets: to build the launch data.
    LaunchInputs,
    /// Names taken, the instance type, profile and key pair (checked before anything is first created).
    Prerequisites,
    /// Every version of the launch template (the default is not the wanted one).
    LaunchTemplateVersions,
    /// The launch configuration for the wanted launch data.
    LaunchConfiguration,
    /// The Auto Scaling group's instance refreshes.
    InstanceRefreshes,
    /// The Auto Scaling group's scaling activities (why instances do not start).
    ScalingActivities,
    /// Stopped Defender tasks (why Defenders do not start).
    StoppedTasks,
    /// What the spec no longer names.
    Stale,
    /// The Console's version.
    ConsoleVersion,
    /// A freshly generated task definition from the Console.
    GeneratedTaskDefinition,
    /// The Console's list of Defenders.
    Defenders,
    /// The instances' host names (some Defenders carry no instance id).
    InstanceHostnames,
}
