//! (pure) What to do next, from what is wanted and what is there: `plan(&Desired, &Observed)`.
//!
//! No I/O here. The plan is data: an ordered list of [`Action`]s (each one idempotent), a report
//! per step for the status conditions, the observations the plan still needs (`needs`, fetched by
//! the driver before planning again), and the drift it found. Steps:
//! cluster -> workers -> task definition -> service -> Defenders connected, then the removal of
//! what the spec no longer names. Whether something is current is read from AWS (tags, version
//! descriptions, the instances' launch data), never from status bookkeeping.
//! A converged resource plans no action.

use std::collections::BTreeSet;

pub use super::observed::{GeneratedTaskDefinition, LaunchInputs, Need, Observed, Prerequisites, Recorded, Stale};
use super::{
    install_bundle::{
        execution_role_policy, execution_role_trust_policy, rewrite_for_secrets_manager, secret_version_id,
    },
    teardown::TeardownAction,
};
use crate::{
    aws::{
        InstanceSpec, Tags,
        autoscaling::{
            AutoScalingGroup, AutoScalingGroupUpdate, LaunchSource, NewAutoScalingGroup, NewLaunchConfiguration,
        },
        ec2::NewLaunchTemplate,
        ecs::{BundleSource, ContainerInstance},
        iam::NewRole,
        secretsmanager::{Secret, SecretValue},
        tags::{self, owned_by},
    },
    crd::{DefenderSecretStatus, OwnedResources, RolloutStrategy, WorkerKind, conditions as c},
    prisma::Defender,
    validate::{Desired, DesiredSecret, DesiredWorkers, EXECUTION_ROLE_PATH, ExecutionRole, client_token, short_hash},
};

/// One idempotent change in AWS.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateCluster {
        name: String,
        tags: Tags,
    },
    CreateLaunchTemplate(NewLaunchTemplate),
    /// A new version of an existing template with the wanted launch data.
    CreateLaunchTemplateVersion {
        id: String,
        template: NewLaunchTemplate,
    },
    /// `version: None` means the one created earlier in the same plan.
    SetDefaultLaunchTemplateVersion {
        id: String,
        name: String,
        version: Option<i64>,
    },
    CreateLaunchConfiguration(NewLaunchConfiguration),
    CreateAutoScalingGroup(NewAutoScalingGroup),
    UpdateAutoScalingGroup(AutoScalingGroupUpdate),
    StartInstanceRefresh {
        name: String,
        min_healthy_percentage: i32,
    },
    /// The install bundle's secret, created without a value so its ARN is known before the bundle.
    CreateSecret {
        name: String,
        description: String,
        tags: Tags,
    },
    /// Cancels the scheduled deletion of our secret (deleted outside the operator).
    RestoreSecret {
        arn: String,
        name: String,
    },
    /// Stores the install bundle as the secret's current version `version_id`.
    PutSecretValue {
        arn: String,
        name: String,
        version_id: String,
        value: SecretValue,
    },
    CreateExecutionRole(NewRole),
    /// The execution role's one inline policy: read the secret.
    PutExecutionRolePolicy {
        role: String,
        document: String,
    },
    RegisterTaskDefinition {
        family: String,
        generated: GeneratedTaskDefinition,
        tags: Tags,
        /// The secret (and version) the revision takes the install bundle from.
        defender_secret: Option<DefenderSecretStatus>,
    },
    /// The Console generated exactly what is registered: record that on the revision.
    TagTaskDefinition {
        arn: String,
        tags: Tags,
        defender_secret: Option<DefenderSecretStatus>,
    },
    /// `task_definition: None` means the one registered earlier in the same plan.
    CreateService {
        cluster: String,
        name: String,
        task_definition: Option<String>,
        client_token: String,
        tags: Tags,
    },
    UpdateService {
        cluster: String,
        name: String,
        task_definition: Option<String>,
        /// Restart every task although the revision stays (a new install bundle in the secret).
        force_new_deployment: bool,
    },
    /// Removes something of ours the spec no longer names.
    Remove(TeardownAction),
}

impl Action {
    /// Whether it creates something status must know of before it exists.
    pub fn creates(&self) -> bool {
        matches!(
            self,
            Action::CreateCluster { .. }
                | Action::CreateLaunchTemplate(_)
                | Action::CreateLaunchConfiguration(_)
                | Action::CreateAutoScalingGroup(_)
                | Action::RegisterTaskDefinition { .. }
                | Action::CreateService { .. }
                | Action::CreateSecret { .. }
                | Action::CreateExecutionRole(_)
        )
    }

    /// A stable PascalCase name (Event reason, log field).
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateCluster { .. } => "CreateCluster",
            Action::CreateLaunchTemplate(_) => "CreateLaunchTemplate",
            Action::CreateLaunchTemplateVersion { .. } => "CreateLaunchTemplateVersion",
            Action::SetDefaultLaunchTemplateVersion { .. } => "SetDefaultLaunchTemplateVersion",
            Action::CreateLaunchConfiguration(_) => "CreateLaunchConfiguration",
            Action::CreateAutoScalingGroup(_) => "CreateAutoScalingGroup",
            Action::UpdateAutoScalingGroup(_) => "UpdateAutoScalingGroup",
            Action::StartInstanceRefresh { .. } => "StartInstanceRefresh",
            Action::CreateSecret { .. } => "CreateSecret",
            Action::RestoreSecret { .. } => "RestoreSecret",
            Action::PutSecretValue { .. } => "PutSecretValue",
            Action::CreateExecutionRole(_) => "CreateExecutionRole",
            Action::PutExecutionRolePolicy { .. } => "PutExecutionRolePolicy",
            Action::RegisterTaskDefinition { .. } => "RegisterTaskDefinition",
            Action::TagTaskDefinition { .. } => "TagTaskDefinition",
            Action::CreateService { .. } => "CreateService",
            Action::UpdateService { .. } => "UpdateService",
            Action::Remove(a) => a.name(),
        }
    }
}

/// How far a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    Ready,
    /// Work in progress; time will tell.
    Progressing,
    /// A human must change something.
    Failed,
    /// Waiting for an earlier step.
    Blocked,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    pub state: StepState,
    /// CamelCase.
    pub reason: &'static str,
    pub message: String,
}

impl StepReport {
    fn new(state: StepState, reason: &'static str, message: impl Into<String>) -> Self {
        Self { state, reason, message: message.into() }
    }
    fn blocked(on: &str) -> Self {
        Self::new(StepState::Blocked, "Waiting", format!("waiting for {on}"))
    }
    fn ready(&self) -> bool {
        self.state == StepState::Ready
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Steps {
    pub cluster: StepReport,
    pub workers: StepReport,
    pub task_definition: StepReport,
    pub service: StepReport,
    pub defenders: StepReport,
}

impl Steps {
    pub fn all(&self) -> [(&'static str, &StepReport); 5] {
        [
            (c::CLUSTER_READY, &self.cluster),
            (c::WORKERS_READY, &self.workers),
            (c::TASK_DEFINITION_READY, &self.task_definition),
            (c::SERVICE_READY, &self.service),
            (c::DEFENDERS_CONNECTED, &self.defenders),
        ]
    }
}

/// What the workers run, for status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkersSummary {
    pub launch_template_id: Option<String>,
    /// The launch-template version the group is (or is being) pointed at.
    pub launch_template_version: Option<i64>,
    pub launch_configuration_name: Option<String>,
    pub image_id: Option<String>,
    /// Group instances on the current launch data.
    pub instances_up_to_date: Option<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub needs: BTreeSet<Need>,
    pub steps: Steps,
    /// Changes made outside the operator that this plan puts back: (what is done, a sentence),
    /// one Event each (the first part keeps Events of different drifts apart).
    pub drift: Vec<(&'static str, String)>,
    pub workers: WorkersSummary,
    /// What the resource owns after this plan, for `status.owned` (created names added, names
    /// found gone dropped).
    pub owned: OwnedResources,
    /// Removal of what the spec no longer names is still under way.
    pub removing: Option<String>,
}

/// Plans the next changes. Pure.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let mut p = Planner {
        desired,
        observed,
        actions: vec![],
        needs: BTreeSet::new(),
        drift: vec![],
        workers: WorkersSummary::default(),
        workers_exist: false,
    };
    let cluster = p.plan_cluster();
    let workers = if cluster.ready() { p.plan_workers() } else { StepReport::blocked("the cluster") };
    // Once workers exist, the Defender is kept current even while they change (an instance
    // refresh, a resize): the DAEMON service follows the instances by itself.
    let workers_usable = workers.ready() || (p.workers_exist && workers.state == StepState::Progressing);
    let task_definition = if workers_usable { p.plan_task_definition() } else { StepReport::blocked("the workers") };
    // While the Console does not answer, the revision registered earlier stays in use and the
    // service is kept running it.
    let service = if task_definition.ready() || p.registering() || p.revision_kept() {
        p.plan_service()
    } else {
        StepReport::blocked("the task definition")
    };
    let defenders = match &observed.console_unavailable {
        _ if service.ready() => p.plan_defenders(),
        Some(outage) => StepReport::new(
            StepState::Blocked,
            outage.reason,
            format!("cannot ask the Console which Defenders are connected: {}", outage.message),
        ),
        None => StepReport::blocked("the service"),
    };
    let steps = Steps { cluster, workers, task_definition, service, defenders };
    let removing = if steps.cluster.ready() { p.plan_stale(&steps) } else { None };
    let owned = p.owned_after();
    Plan { actions: p.actions, needs: p.needs, steps, drift: p.drift, workers: p.workers, owned, removing }
}

/// The names the spec uses now; everything else in `status.owned` is stale.
fn current_names(d: &Desired, launch_configuration: Option<&str>) -> OwnedResources {
    let mut n = OwnedResources {
        services: vec![d.service_name.clone()],
        task_families: vec![d.task_family.clone()],
        ..Default::default()
    };
    if let Some(s) = d.secrets.secrets_manager() {
        n.secrets.push(s.name.clone());
        if let ExecutionRole::Create { name } = &s.execution_role {
            n.execution_roles.push(name.clone());
        }
    }
    if let Some(w) = &d.workers {
        n.auto_scaling_groups.push(w.asg_name.clone());
        match w.kind {
            WorkerKind::LaunchTemplate => n.launch_templates.push(w.name.clone()),
            WorkerKind::LaunchConfiguration => n.launch_configurations.extend(launch_configuration.map(String::from)),
        }
    }
    n
}

/// (pure) What `status.owned` lists that the spec no longer names. Launch configurations are
/// immutable and named after their content, so every recorded one but the current is stale.
pub fn stale_names(
    d: &Desired,
    recorded: &OwnedResources,
    current_launch_configuration: Option<&str>,
) -> OwnedResources {
    let now = current_names(d, current_launch_configuration);
    let minus = |all: &[String], keep: &[String]| -> Vec<String> {
        all.iter().filter(|n| !keep.contains(n)).cloned().collect()
    };
    OwnedResources {
        // The cluster's name is immutable: never stale.
        clusters: vec![],
        services: minus(&recorded.services, &now.services),
        task_families: minus(&recorded.task_families, &now.task_families),
        auto_scaling_groups: minus(&recorded.auto_scaling_groups, &now.auto_scaling_groups),
        launch_templates: minus(&recorded.launch_templates, &now.launch_templates),
        launch_configurations: minus(&recorded.launch_configurations, &now.launch_configurations),
        secrets: minus(&recorded.secrets, &now.secrets),
        execution_roles: minus(&recorded.execution_roles, &now.execution_roles),
        // A replaced revision is stale by definition.
        old_revisions: recorded.old_revisions.clone(),
    }
}

/// The launch-data hash: what a launch-template version's description and a launch
/// configuration's name carry.
pub fn launch_hash(w: &DesiredWorkers, image_id: &str, security_group_ids: &[String]) -> String {
    let public_ip = match w.associate_public_ip_address {
        Some(true) => "public",
        Some(false) => "private",
        None => "subnet",
    };
    short_hash(
        &[
            image_id,
            &w.instance_type,
            &w.instance_profile,
            &security_group_ids.join(","),
            w.key_name.as_deref().unwrap_or_default(),
            public_ip,
            &w.user_data,
        ],
        16,
    )
}

/// The version description that marks a launch-template version as made from `hash`.
pub fn version_description(hash: &str) -> String {
    format!("ecsdefender.io/launch={hash}")
}

/// The launch configuration for `hash`: `<name>-<owner>-<content>`.
pub fn launch_configuration_name(w: &DesiredWorkers, hash: &str) -> String {
    format!("{}-{}-{}", w.name, w.owner_hash, &hash[..8])
}

/// Where the install bundle is kept and who may read it, both existing.
struct BundleHolder<'a> {
    secret: &'a Secret,
    role_arn: String,
    /// Puts the role's policy back to reading the secret, when it does not (our role only).
    fix_policy: Option<Action>,
}

impl BundleHolder<'_> {
    /// Whether `td` takes its bundle from this secret's current version, read with this role.
    fn holds_bundle_of(&self, td: &crate::aws::ecs::TaskDefinition) -> bool {
        td.bundle == BundleSource::Secret(self.secret.arn.clone())
            && td.execution_role_arn.as_deref() == Some(self.role_arn.as_str())
            && self.secret.current_version.is_some()
            && td.tags.get(tags::SECRET_VERSION) == self.secret.current_version.as_ref()
    }
}

struct Planner<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    actions: Vec<Action>,
    needs: BTreeSet<Need>,
    drift: Vec<(&'static str, String)>,
    workers: WorkersSummary,
    /// Our Auto Scaling group exists (the Defender can be kept current while it changes).
    workers_exist: bool,
}

impl<'a> Planner<'a> {
    fn registering(&self) -> bool {
        self.actions.iter().any(|a| matches!(a, Action::RegisterTaskDefinition { .. }))
    }

    /// The Console does not answer and a revision of ours is registered: it stays in use.
    fn revision_kept(&self) -> bool {
        self.observed.console_unavailable.is_some() && self.our_latest_revision().is_some()
    }

    fn our_latest_revision(&self) -> Option<&'a crate::aws::ecs::TaskDefinition> {
        self.observed.task_definition.as_ref().filter(|td| td.active && owned_by(&td.tags, &self.desired.uid))
    }

    /// The task-definition step while the Console does not answer.
    fn console_outage_report(&self, outage: &crate::prisma::ConsoleOutage) -> StepReport {
        let kept = match self.our_latest_revision() {
            Some(td) => format!("{}:{} stays in use until it answers", td.family, td.revision),
            None => "the Defender's task definition is registered once it answers".into(),
        };
        StepReport::new(StepState::Progressing, outage.reason, format!("{}; {kept}", outage.message))
    }

    /// A sentence for an Event when the spec did not change since the last reconcile (so a
    /// difference found now was made outside the operator).
    fn note_drift(&mut self, action: &'static str, what: String) {
        if self.observed.recorded.observed_generation == Some(self.desired.generation) {
            self.drift.push((action, what));
        }
    }

    fn plan_cluster(&mut self) -> StepReport {
        let d = self.desired;
        match &self.observed.cluster {
            None if d.adopt_cluster => StepReport::new(
                StepState::Failed,
                "ClusterNotFound",
                format!(
                    "cluster {} does not exist in {}; cluster.adopt is set, so it is not created",
                    d.cluster_name, d.region
                ),
            ),
            None => {
                if let Some(report) = self.preflight() {
                    return report;
                }
                if self.observed.recorded.cluster_arn.is_some() {
                    self.note_drift(
                        "RecreateCluster",
                        format!("cluster {} was deleted outside the operator; creating it again", d.cluster_name),
                    );
                }
                self.actions.push(Action::CreateCluster { name: d.cluster_name.clone(), tags: d.tags.clone() });
                StepReport::new(StepState::Progressing, "Creating", format!("creating cluster {}", d.cluster_name))
            }
            Some(cl) if !d.adopt_cluster && !owned_by(&cl.tags, &d.uid) => StepReport::new(
                StepState::Failed,
                "ClusterNotOwned",
                format!(
                    "cluster {} already exists and was not created by this resource; set cluster.adopt: true to deploy Defenders into it",
                    cl.name
                ),
            ),
            Some(cl) if cl.status != "ACTIVE" => StepReport::new(
                StepState::Progressing,
                "ClusterNotActive",
                format!("cluster {} is {}", cl.name, cl.status),
            ),
            Some(cl) => {
                // An adopted cluster: the same checks before this resource's first change in it.
                if d.adopt_cluster
                    && self.observed.recorded.owned.is_empty()
                    && let Some(report) = self.preflight()
                {
                    return report;
                }
                StepReport::new(StepState::Ready, "Active", format!("cluster {} is active", cl.name))
            }
        }
    }

    /// Before the first AWS change, everything that can be checked without changing AWS: the
    /// Console (login, version, and the task definition it generates from the spec's options), the
    /// names the spec derives (free, or ours), and the workers' AMI, subnets, security groups,
    /// instance type, instance profile and key pair. `Some` while something is still to be looked
    /// at or is wrong.
    fn preflight(&mut self) -> Option<StepReport> {
        let o = self.observed;
        // The Console's login and version are checked before the first AWS change, so wrong
        // credentials cost nothing; once something exists, a Console that does not answer holds
        // up only what needs it.
        if o.console_version.is_none() {
            match &o.console_unavailable {
                None => {
                    self.needs.insert(Need::ConsoleVersion);
                }
                Some(outage) if o.recorded.owned.is_empty() => {
                    return Some(StepReport::new(
                        StepState::Progressing,
                        outage.reason,
                        format!(
                            "the Console's login is checked before anything is created, and it does not answer: {}",
                            outage.message
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        // The Console refuses some options only when it generates (a consoleAddress that is not
        // one of its SANs): generate once before anything exists that would wait for it.
        if o.generated.is_none() && o.console_unavailable.is_none() {
            self.needs.insert(Need::GeneratedTaskDefinition);
        }
        let workers = self.desired.workers.as_ref();
        if workers.is_some() {
            match &o.launch_inputs {
                None => {
                    self.needs.insert(Need::LaunchInputs);
                }
                Some(inputs) => {
                    if let Some(failed) = launch_input_failure(inputs) {
                        return Some(failed);
                    }
                }
            }
        }
        match &o.prerequisites {
            None => {
                self.needs.insert(Need::Prerequisites);
            }
            Some(p) => {
                if let Some(failed) = prerequisite_failure(workers, p) {
                    return Some(failed);
                }
            }
        }
        let pending = [Need::ConsoleVersion, Need::GeneratedTaskDefinition, Need::LaunchInputs, Need::Prerequisites];
        pending.iter().any(|n| self.needs.contains(n)).then(|| {
            StepReport::new(
                StepState::Progressing,
                "Checking",
                "checking the Console, the names to create, the AMI, subnets, security groups, instance type, instance profile and key pair before creating anything",
            )
        })
    }

    fn active_instances(&self) -> Vec<&ContainerInstance> {
        self.observed.container_instances.iter().filter(|ci| ci.status == "ACTIVE").collect()
    }

    fn plan_workers(&mut self) -> StepReport {
        let d = self.desired;
        let Some(w) = &d.workers else {
            let active = self.active_instances().len();
            return StepReport::new(
                StepState::Ready,
                "NotManaged",
                format!(
                    "workers are not managed by this resource; the cluster has {active} active container instances"
                ),
            );
        };
        let o = self.observed;
        if let Some(lt) = &o.launch_template
            && w.kind == WorkerKind::LaunchTemplate
            && !owned_by(&lt.tags, &d.uid)
        {
            return StepReport::new(
                StepState::Failed,
                "LaunchTemplateNotOwned",
                format!(
                    "launch template {} exists and was not created by this resource; choose another workers.name",
                    lt.name
                ),
            );
        }
        let asg = o.auto_scaling_group.as_ref();
        if let Some(g) = asg
            && !owned_by(&g.tags, &d.uid)
        {
            return StepReport::new(
                StepState::Failed,
                "AutoScalingGroupNotOwned",
                format!(
                    "Auto Scaling group {} exists and was not created by this resource; choose another workers.autoScalingGroup.name",
                    g.name
                ),
            );
        }
        if let Some(g) = asg
            && g.status.is_some()
        {
            // Deleted outside the operator (or by an earlier teardown): wait until it is gone.
            return StepReport::new(
                StepState::Progressing,
                "AutoScalingGroupDeleting",
                format!("Auto Scaling group {} is being deleted; it is created again once it is gone", g.name),
            );
        }
        // The launch data, resolved: every reconcile, so a new AMI behind the SSM parameter is seen.
        let Some(inputs) = &o.launch_inputs else {
            self.needs.insert(Need::LaunchInputs);
            return StepReport::new(
                StepState::Progressing,
                "Resolving",
                "resolving the AMI, security groups and subnets",
            );
        };
        if let Some(failed) = launch_input_failure(inputs) {
            return failed;
        }
        let image_id = inputs.image_id.clone().expect("checked by launch_input_failure");
        // Workers created for the first time (e.g. in an adopted cluster): check what EC2 checks
        // only at launch, before the group exists.
        if asg.is_none() && !o.recorded.owned.auto_scaling_groups.contains(&w.asg_name) {
            match &o.prerequisites {
                None => {
                    self.needs.insert(Need::Prerequisites);
                    return StepReport::new(
                        StepState::Progressing,
                        "Checking",
                        "checking the instance profile and key pair",
                    );
                }
                Some(p) => {
                    if let Some(failed) = prerequisite_failure(Some(w), p) {
                        return failed;
                    }
                }
            }
        }
        self.workers.image_id = Some(image_id.clone());
        let hash = launch_hash(w, &image_id, &inputs.security_group_ids);
        let instance = |name: String| InstanceSpec {
            name,
            image_id: image_id.clone(),
            instance_type: w.instance_type.clone(),
            instance_profile: w.instance_profile.clone(),
            security_group_ids: inputs.security_group_ids.clone(),
            key_name: w.key_name.clone(),
            associate_public_ip_address: w.associate_public_ip_address,
            user_data: w.user_data.clone(),
        };

        // 1. What the group should launch from.
        let launch = match w.kind {
            WorkerKind::LaunchTemplate => {
                let template = NewLaunchTemplate {
                    instance: instance(w.name.clone()),
                    description: version_description(&hash),
                    client_token: client_token(&d.uid, &[&w.name, &hash], 64),
                    tags: d.tags.clone(),
                };
                match &o.launch_template {
                    None => {
                        self.actions.push(Action::CreateLaunchTemplate(template));
                        // A new template's first version is 1.
                        LaunchSource::Template { name: w.name.clone(), version: Some(1) }
                    }
                    Some(lt) => {
                        self.workers.launch_template_id = Some(lt.id.clone());
                        let wanted = version_description(&hash);
                        let version = if o.launch_template_default.as_ref().and_then(|v| v.description.as_ref())
                            == Some(&wanted)
                        {
                            o.launch_template_default.as_ref().map(|v| v.number)
                        } else {
                            let Some(versions) = &o.launch_template_versions else {
                                self.needs.insert(Need::LaunchTemplateVersions);
                                return StepReport::new(
                                    StepState::Progressing,
                                    "Checking",
                                    format!("looking for launch template {} versions", lt.name),
                                );
                            };
                            match versions
                                .iter()
                                .filter(|v| v.description.as_ref() == Some(&wanted))
                                .max_by_key(|v| v.number)
                            {
                                // The wanted launch data exists as a version: the default was changed.
                                Some(v) => {
                                    self.note_drift("ResetLaunchTemplateDefault", format!(
                                        "the default version of launch template {} was changed to {} outside the operator; setting it back to {}",
                                        lt.name, lt.default_version, v.number
                                    ));
                                    self.actions.push(Action::SetDefaultLaunchTemplateVersion {
                                        id: lt.id.clone(),
                                        name: lt.name.clone(),
                                        version: Some(v.number),
                                    });
                                    Some(v.number)
                                }
                                None => {
                                    self.actions.push(Action::CreateLaunchTemplateVersion {
                                        id: lt.id.clone(),
                                        template: NewLaunchTemplate {
                                            client_token: client_token(&d.uid, &[&lt.id, &hash], 64),
                                            ..template
                                        },
                                    });
                                    self.actions.push(Action::SetDefaultLaunchTemplateVersion {
                                        id: lt.id.clone(),
                                        name: lt.name.clone(),
                                        version: None,
                                    });
                                    None
                                }
                            }
                        };
                        self.workers.launch_template_version = version;
                        LaunchSource::Template { name: w.name.clone(), version }
                    }
                }
            }
            WorkerKind::LaunchConfiguration => {
                let name = launch_configuration_name(w, &hash);
                self.workers.launch_configuration_name = Some(name.clone());
                match &o.launch_configuration {
                    None => {
                        self.needs.insert(Need::LaunchConfiguration);
                        return StepReport::new(
                            StepState::Progressing,
                            "Checking",
                            format!("looking for launch configuration {name}"),
                        );
                    }
                    Some(None) => self.actions.push(Action::CreateLaunchConfiguration(instance(name.clone()))),
                    Some(Some(_)) => {}
                }
                LaunchSource::Configuration { name }
            }
        };

        // 2. The group: created, or updated in one call with everything that differs.
        let Some(g) = asg else {
            if o.recorded.owned.auto_scaling_groups.contains(&w.asg_name) {
                self.note_drift(
                    "RecreateAutoScalingGroup",
                    format!("Auto Scaling group {} was deleted outside the operator; creating it again", w.asg_name),
                );
            }
            self.actions.push(Action::CreateAutoScalingGroup(NewAutoScalingGroup {
                name: w.asg_name.clone(),
                min_size: w.min_size,
                max_size: w.max_size,
                desired_capacity: w.desired_capacity,
                launch,
                subnet_ids: inputs.subnet_ids.clone(),
                tags: d.tags.clone(),
            }));
            return StepReport::new(
                StepState::Progressing,
                "Creating",
                format!("creating the {} and Auto Scaling group {}", launch_kind(w.kind), w.asg_name),
            );
        };
        self.workers_exist = true;
        let mut update = AutoScalingGroupUpdate { name: g.name.clone(), ..Default::default() };
        let mut changes = vec![];
        if (g.min_size, g.max_size, g.desired_capacity) != (w.min_size, w.max_size, w.desired_capacity) {
            update.sizes = Some((w.min_size, w.max_size, w.desired_capacity));
            changes.push(format!("min {} / max {} / desired {}", w.min_size, w.max_size, w.desired_capacity));
            // Not gated on `Ready`: an outside resize can turn Ready False (an instance leaves)
            // in the reconcile before the one that sees the new sizes.
            if !o.recorded.workers_changing {
                self.note_drift("ResizeAutoScalingGroup", format!(
                    "Auto Scaling group {} was resized to min {} / max {} / desired {} outside the operator; setting it back",
                    g.name, g.min_size, g.max_size, g.desired_capacity
                ));
            }
        }
        if g.subnet_ids != inputs.subnet_ids {
            update.subnet_ids = Some(inputs.subnet_ids.clone());
            changes.push(format!("subnets {}", inputs.subnet_ids.join(",")));
        }
        if !group_launches(g, &launch) {
            changes.push(match &launch {
                LaunchSource::Template { name, version: Some(v) } => format!("launch template {name} version {v}"),
                LaunchSource::Template { name, version: None } => format!("a new version of launch template {name}"),
                LaunchSource::Configuration { name } => format!("launch configuration {name}"),
            });
            update.launch = Some(launch.clone());
        }
        if !changes.is_empty() {
            self.actions.push(Action::UpdateAutoScalingGroup(update));
            return StepReport::new(
                StepState::Progressing,
                "Updating",
                format!("updating Auto Scaling group {}: {}", g.name, changes.join(", ")),
            );
        }

        // 3. Instances on older launch data are replaced per the rollout strategy.
        let in_group: Vec<&_> = g.instances.iter().filter(|i| !is_leaving(&i.lifecycle_state)).collect();
        let current: Vec<&&_> = in_group.iter().filter(|i| instance_runs(i, &launch)).collect();
        let outdated = in_group.len() - current.len();
        self.workers.instances_up_to_date = Some(current.len() as i32);
        let group_ids: BTreeSet<&str> = g.instances.iter().map(|i| i.id.as_str()).collect();
        let registered =
            self.active_instances().into_iter().filter(|ci| group_ids.contains(ci.ec2_instance_id.as_str())).count()
                as i32;
        if outdated > 0 && w.rollout == RolloutStrategy::InstanceRefresh {
            let Some(refreshes) = &o.instance_refreshes else {
                self.needs.insert(Need::InstanceRefreshes);
                return StepReport::new(StepState::Progressing, "Checking", "looking at instance refreshes");
            };
            let progress = format!("{} of {} instances run the current launch data", current.len(), in_group.len());
            return match refreshes.first() {
                Some(r) if r.in_progress() => StepReport::new(
                    StepState::Progressing,
                    "Refreshing",
                    format!(
                        "instance refresh {} is {} ({}% complete); {progress}",
                        r.id,
                        r.status,
                        r.percentage_complete.unwrap_or_default()
                    ),
                ),
                last => {
                    self.actions.push(Action::StartInstanceRefresh {
                        name: g.name.clone(),
                        min_healthy_percentage: w.min_healthy_percentage,
                    });
                    let previous = match last {
                        Some(r) if r.status == "Failed" || r.status == "Cancelled" => format!(
                            "; the previous refresh {}: {}",
                            r.status.to_lowercase(),
                            r.status_reason.as_deref().unwrap_or("no reason given")
                        ),
                        _ => String::new(),
                    };
                    StepReport::new(
                        StepState::Progressing,
                        "Refreshing",
                        format!("starting an instance refresh of {}: {progress}{previous}", g.name),
                    )
                }
            };
        }
        if registered < w.desired_capacity {
            let mut message = format!(
                "{registered} of {} container instances registered in cluster {} ({} instances in Auto Scaling group {})",
                w.desired_capacity,
                d.cluster_name,
                in_group.len(),
                g.name
            );
            // Say why, when AWS says it: the newest failed scaling activity.
            match &o.scaling_activities {
                None => {
                    self.needs.insert(Need::ScalingActivities);
                }
                Some(activities) => {
                    if let Some(a) =
                        activities.iter().find(|a| a.status_code == "Failed" || a.status_code == "Cancelled")
                    {
                        message.push_str(&format!(
                            "; the newest scaling activity failed: {}",
                            a.status_message.as_deref().or(a.description.as_deref()).unwrap_or("no reason given")
                        ));
                    }
                }
            }
            return StepReport::new(StepState::Progressing, "WaitingForContainerInstances", message);
        }
        let note = if outdated > 0 {
            format!("; {outdated} instances run older launch data (rollout.strategy is None)")
        } else {
            String::new()
        };
        StepReport::new(
            StepState::Ready,
            "InstancesRegistered",
            format!("{registered} container instances registered{note}"),
        )
    }

    fn plan_task_definition(&mut self) -> StepReport {
        let d = self.desired;
        let o = self.observed;
        let latest = self.our_latest_revision();
        if let Some(td) = &o.task_definition
            && !owned_by(&td.tags, &d.uid)
            && td.active
        {
            return StepReport::new(
                StepState::Failed,
                "TaskDefinitionNotOwned",
                format!(
                    "task definition family {} has revisions not registered by this resource; choose another defender.taskName",
                    td.family
                ),
            );
        }
        // Secrets Manager: the secret and the execution role exist before anything refers to them.
        let holder = match d.secrets.secrets_manager() {
            None => None,
            Some(want) => match self.plan_bundle_holders(want) {
                Ok(holder) => Some(holder),
                Err(report) => return report,
            },
        };
        let Some(console_version) = &o.console_version else {
            if let Some(outage) = &o.console_unavailable {
                return self.console_outage_report(outage);
            }
            self.needs.insert(Need::ConsoleVersion);
            return StepReport::new(StepState::Progressing, "Checking", "asking the Console for its version");
        };
        if let Some(arn) = &o.recorded.task_definition_arn
            && crate::aws::ecs::family_of(arn) == Some(d.task_family.as_str())
            && latest.is_none_or(|td| &td.arn != arn)
            && o.recorded.observed_generation == Some(d.generation)
        {
            self.note_drift(
                "ReregisterTaskDefinition",
                format!(
                    "task definition {} was deregistered outside the operator; registering the current one",
                    short_td(arn)
                ),
            );
        }
        // Current when the latest revision was registered from these inputs by this Console version
        // (and, with Secrets Manager, takes the bundle from the secret's current version).
        let current = latest.filter(|td| {
            td.tags.get(tags::INPUTS) == Some(&d.generator_inputs_hash)
                && td.tags.get(tags::CONSOLE_VERSION) == Some(console_version)
                && holder.as_ref().is_none_or(|h| h.holds_bundle_of(td))
        });
        if let Some(td) = current {
            self.actions.extend(holder.and_then(|h| h.fix_policy));
            return StepReport::new(
                StepState::Ready,
                "Registered",
                format!("task definition {}:{} is current", td.family, td.revision),
            );
        }
        let Some(generated) = &o.generated else {
            if let Some(outage) = &o.console_unavailable {
                return self.console_outage_report(outage);
            }
            self.needs.insert(Need::GeneratedTaskDefinition);
            return StepReport::new(
                StepState::Progressing,
                "Generating",
                "asking the Console for the Defender task definition",
            );
        };
        let (generated, defender_secret) = match &holder {
            None => (generated.clone(), None),
            Some(h) => match self.store_bundle(h, generated) {
                Ok(stored) => stored,
                Err(report) => return report,
            },
        };
        let mut tags = d.tags.clone();
        tags.insert(tags::DIGEST.into(), generated.digest.clone());
        tags.insert(tags::CONSOLE_VERSION.into(), generated.console_version.clone());
        tags.insert(tags::INPUTS.into(), d.generator_inputs_hash.clone());
        if let Some(version) = defender_secret.as_ref().and_then(|s| s.version_id.clone()) {
            tags.insert(tags::SECRET_VERSION.into(), version);
        }
        if let Some(td) = latest
            && td.tags.get(tags::DIGEST) == Some(&generated.digest)
        {
            // The Console generates exactly what is registered: no new revision, only the record.
            // A new bundle in the secret reaches the Defenders when they restart: restart them
            // first, so a crash before the record repeats both.
            let new_bundle =
                defender_secret.is_some() && td.tags.get(tags::SECRET_VERSION) != tags.get(tags::SECRET_VERSION);
            let service = o
                .service
                .as_ref()
                .filter(|s| s.status == "ACTIVE" && owned_by(&s.tags, &d.uid) && s.task_definition == td.arn);
            if let (true, Some(s)) = (new_bundle, service) {
                self.actions.push(Action::UpdateService {
                    cluster: d.cluster_name.clone(),
                    name: s.name.clone(),
                    task_definition: Some(td.arn.clone()),
                    force_new_deployment: true,
                });
            }
            self.actions.push(Action::TagTaskDefinition { arn: td.arn.clone(), tags, defender_secret });
            let restart = if new_bundle { "; the Defenders restart with the new install bundle" } else { "" };
            return StepReport::new(
                StepState::Ready,
                "Registered",
                format!("task definition {}:{} is current{restart}", td.family, td.revision),
            );
        }
        let console = generated.console_version.clone();
        self.actions.push(Action::RegisterTaskDefinition {
            family: d.task_family.clone(),
            generated,
            tags,
            defender_secret,
        });
        StepReport::new(
            StepState::Progressing,
            "Registering",
            format!("registering a new revision of task definition {} (Console {console})", d.task_family),
        )
    }

    /// The install bundle's secret and the execution role: created when missing (without a value:
    /// the bundle is put when the Console is asked), restored when deleted outside, the role's
    /// policy kept to reading the secret. `Err` is the report while they are not there yet.
    fn plan_bundle_holders(&mut self, want: &DesiredSecret) -> Result<BundleHolder<'a>, StepReport> {
        let d = self.desired;
        let o = self.observed;
        // What belongs to someone else stalls the step before anything is created.
        if let Some(s) = o.defender_secret.as_ref().filter(|s| !owned_by(&s.tags, &d.uid)) {
            return Err(StepReport::new(
                StepState::Failed,
                "SecretNotOwned",
                format!(
                    "Secrets Manager secret {} exists and was not created by this resource; delete it, or let this resource store its install bundle elsewhere (defender.secrets.storage: Inline)",
                    s.name
                ),
            ));
        }
        if let ExecutionRole::Create { .. } = &want.execution_role
            && let Some(r) = o.execution_role.as_ref().filter(|r| !owned_by(&r.tags, &d.uid))
        {
            return Err(StepReport::new(
                StepState::Failed,
                "ExecutionRoleNotOwned",
                format!(
                    "IAM role {} exists and was not created by this resource; delete it, or name a role of yours in defender.secrets.executionRoleArn",
                    r.name
                ),
            ));
        }
        let mut creating = vec![];
        match &o.defender_secret {
            Some(s) if s.deleted => {
                self.note_drift(
                    "RestoreSecret",
                    format!("secret {} was scheduled for deletion outside the operator; restoring it", s.name),
                );
                self.actions.push(Action::RestoreSecret { arn: s.arn.clone(), name: s.name.clone() });
                return Err(StepReport::new(
                    StepState::Progressing,
                    "RestoringSecret",
                    format!("restoring secret {} (it was scheduled for deletion)", s.name),
                ));
            }
            Some(_) => {}
            None => {
                if o.recorded.owned.secrets.contains(&want.name) {
                    self.note_drift(
                        "RecreateSecret",
                        format!("secret {} was deleted outside the operator; creating it again", want.name),
                    );
                }
                self.actions.push(Action::CreateSecret {
                    name: want.name.clone(),
                    description: format!(
                        "Prisma Cloud Defender install bundle of ECS cluster {} (ecs-defender-operator, {}/{})",
                        d.cluster_name, d.namespace, d.name
                    ),
                    tags: d.tags.clone(),
                });
                creating.push(format!("secret {}", want.name));
            }
        }
        let role_arn = match &want.execution_role {
            ExecutionRole::Given(arn) => Some(arn.clone()),
            ExecutionRole::Create { name } => match &o.execution_role {
                Some(r) => Some(r.arn.clone()),
                None => {
                    if o.recorded.owned.execution_roles.contains(name) {
                        self.note_drift(
                            "RecreateExecutionRole",
                            format!("execution role {name} was deleted outside the operator; creating it again"),
                        );
                    }
                    self.actions.push(Action::CreateExecutionRole(NewRole {
                        name: name.clone(),
                        path: EXECUTION_ROLE_PATH.to_string(),
                        description: format!(
                            "Lets ECS read the Prisma Cloud Defender install bundle of cluster {} (ecs-defender-operator, {}/{})",
                            d.cluster_name, d.namespace, d.name
                        ),
                        assume_role_policy: execution_role_trust_policy().to_string(),
                        tags: d.tags.clone(),
                    }));
                    creating.push(format!("execution role {name}"));
                    None
                }
            },
        };
        let (Some(secret), Some(role_arn)) = (&o.defender_secret, role_arn) else {
            return Err(StepReport::new(
                StepState::Progressing,
                "CreatingSecret",
                format!("creating the install bundle's {}", creating.join(" and ")),
            ));
        };
        // Our role may read exactly this secret (put with the revision that needs it).
        let mut fix_policy = None;
        if let ExecutionRole::Create { name } = &want.execution_role {
            let wanted = execution_role_policy(&secret.arn);
            if o.execution_role_policy.as_ref() != Some(&wanted) {
                if o.execution_role_policy.is_some() {
                    self.note_drift(
                        "ResetExecutionRolePolicy",
                        format!(
                            "the policy of execution role {name} was changed outside the operator; setting it back"
                        ),
                    );
                }
                fix_policy = Some(Action::PutExecutionRolePolicy { role: name.clone(), document: wanted.to_string() });
            }
        }
        Ok(BundleHolder { secret, role_arn, fix_policy })
    }

    /// The Console's definition rewritten to take the bundle from the secret, and the bundle put in
    /// the secret as a new version unless it is the current one already.
    fn store_bundle(
        &mut self,
        holder: &BundleHolder<'_>,
        generated: &GeneratedTaskDefinition,
    ) -> Result<(GeneratedTaskDefinition, Option<DefenderSecretStatus>), StepReport> {
        let (rewritten, value) = rewrite_for_secrets_manager(generated, &holder.secret.arn, &holder.role_arn)
            .map_err(|why| StepReport::new(StepState::Failed, "UnexpectedTaskDefinition", why))?;
        self.actions.extend(holder.fix_policy.clone());
        let version_id = secret_version_id(&self.desired.uid, &value, holder.secret);
        if holder.secret.current_version.as_deref() != Some(version_id.as_str()) {
            self.actions.push(Action::PutSecretValue {
                arn: holder.secret.arn.clone(),
                name: holder.secret.name.clone(),
                version_id: version_id.clone(),
                value,
            });
        }
        Ok((rewritten, Some(DefenderSecretStatus { arn: holder.secret.arn.clone(), version_id: Some(version_id) })))
    }

    fn plan_service(&mut self) -> StepReport {
        let d = self.desired;
        let o = self.observed;
        // The revision the service should run: the one being registered now, or the current one.
        let target: Option<String> =
            if self.registering() { None } else { o.task_definition.as_ref().map(|t| t.arn.clone()) };
        let recorded_here =
            o.recorded.service_arn.as_deref().is_some_and(|a| a.rsplit('/').next() == Some(d.service_name.as_str()));
        match o.service.as_ref().filter(|s| s.status != "INACTIVE") {
            None => {
                if recorded_here {
                    self.note_drift(
                        "RecreateService",
                        format!("service {} was deleted outside the operator; creating it again", d.service_name),
                    );
                }
                self.push_create_service(target);
                StepReport::new(
                    StepState::Progressing,
                    "Creating",
                    format!("creating DAEMON service {}", d.service_name),
                )
            }
            Some(s) if s.status == "DRAINING" => StepReport::new(
                StepState::Progressing,
                "ServiceDraining",
                format!("service {} is still being deleted; it is created again once ECS has drained it", s.name),
            ),
            Some(s) if !owned_by(&s.tags, &d.uid) => StepReport::new(
                StepState::Failed,
                "ServiceNotOwned",
                format!(
                    "service {} exists in cluster {} and was not created by this resource; choose another service.name",
                    s.name, d.cluster_name
                ),
            ),
            Some(s) if !s.daemon => StepReport::new(
                StepState::Failed,
                "ServiceNotDaemon",
                format!(
                    "service {} does not use the DAEMON scheduling strategy; delete it so it can be created again",
                    s.name
                ),
            ),
            Some(s) => {
                if target.as_deref() != Some(s.task_definition.as_str()) {
                    // Not ours to choose: the service was pointed elsewhere while the revision stayed.
                    if !self.registering()
                        && o.recorded.task_definition_arn.as_deref() == target.as_deref()
                        && o.recorded.observed_generation == Some(d.generation)
                    {
                        self.note_drift(
                            "RepointService",
                            format!(
                                "service {} was changed to run {} outside the operator; putting back {}",
                                s.name,
                                short_td(&s.task_definition),
                                target.as_deref().map(short_td).unwrap_or_default()
                            ),
                        );
                    }
                    self.actions.push(Action::UpdateService {
                        cluster: d.cluster_name.clone(),
                        name: s.name.clone(),
                        task_definition: target,
                        force_new_deployment: false,
                    });
                    return StepReport::new(
                        StepState::Progressing,
                        "Updating",
                        format!("rolling service {} to the new task definition", s.name),
                    );
                }
                let active = self.active_instances();
                let on_current = running_on(o, &s.task_definition);
                let missing: Vec<&str> = active
                    .iter()
                    .filter(|ci| !on_current.contains(ci.arn.as_str()))
                    .map(|ci| ci.ec2_instance_id.as_str())
                    .collect();
                if active.is_empty() {
                    return StepReport::new(
                        StepState::Progressing,
                        "NoContainerInstances",
                        "the cluster has no active container instances",
                    );
                }
                if missing.is_empty() {
                    return StepReport::new(
                        StepState::Ready,
                        "AllInstancesRunning",
                        format!("all {} container instances run {}", active.len(), short_td(&s.task_definition)),
                    );
                }
                let mut message = format!(
                    "{} of {} instances run the current Defender task; waiting for: {}",
                    active.len() - missing.len(),
                    active.len(),
                    list(&missing)
                );
                // Say why, when ECS says it: a placement failure, or why a Defender task stopped.
                if let Some(event) = s.events.iter().find(|e| e.contains("unable to place")) {
                    message.push_str(&format!("; ECS: {event}"));
                }
                match &o.stopped_tasks {
                    None => {
                        self.needs.insert(Need::StoppedTasks);
                    }
                    Some(stopped) => {
                        if let Some(reason) = stopped.iter().find_map(|t| t.stopped_reason.as_deref()) {
                            message.push_str(&format!("; a Defender task stopped: {reason}"));
                        }
                    }
                }
                StepReport::new(StepState::Progressing, "Rolling", message)
            }
        }
    }

    fn push_create_service(&mut self, task_definition: Option<String>) {
        let d = self.desired;
        self.actions.push(Action::CreateService {
            cluster: d.cluster_name.clone(),
            name: d.service_name.clone(),
            task_definition,
            client_token: client_token(&d.uid, &[&d.cluster_name, &d.service_name], 32),
            tags: d.tags.clone(),
        });
    }

    fn plan_defenders(&mut self) -> StepReport {
        let Some(defenders) = &self.observed.defenders else {
            if let Some(outage) = &self.observed.console_unavailable {
                return StepReport::new(
                    StepState::Progressing,
                    outage.reason,
                    format!("cannot ask the Console which Defenders are connected: {}", outage.message),
                );
            }
            self.needs.insert(Need::Defenders);
            return StepReport::new(
                StepState::Progressing,
                "Checking",
                "asking the Console which Defenders are connected",
            );
        };
        if defenders.iter().any(|d| d.connected && d.cloud_metadata.resource_id.is_empty())
            && self.observed.instance_hostnames.is_none()
        {
            self.needs.insert(Need::InstanceHostnames);
        }
        let connected = connected_instances(defenders, self.observed.instance_hostnames.as_ref());
        let active = self.active_instances();
        let missing: Vec<&str> =
            active.iter().map(|ci| ci.ec2_instance_id.as_str()).filter(|id| !connected.contains(id)).collect();
        if missing.is_empty() {
            StepReport::new(
                StepState::Ready,
                "AllConnected",
                format!("{} of {} instances have a connected Defender", active.len(), active.len()),
            )
        } else {
            StepReport::new(
                StepState::Progressing,
                "WaitingForDefenders",
                format!(
                    "{} of {} instances have a connected Defender; missing: {}",
                    active.len() - missing.len(),
                    active.len(),
                    list(&missing)
                ),
            )
        }
    }

    /// Removes what the spec no longer names, in teardown order: services first; task-definition
    /// families once no service of ours runs them; Auto Scaling groups once the current workers
    /// are ready (or workers are no longer managed); launch templates and configurations once no
    /// group of ours launches from them. Returns what it still waits for.
    fn plan_stale(&mut self, steps: &Steps) -> Option<String> {
        let d = self.desired;
        let o = self.observed;
        let names = stale_names(d, &o.recorded.owned, self.workers.launch_configuration_name.as_deref());
        if names.is_empty() {
            return None;
        }
        let Some(stale) = &o.stale else {
            self.needs.insert(Need::Stale);
            return Some("looking for what the spec no longer names".into());
        };
        let mut waiting = vec![];
        let mut remove = vec![];
        for s in stale.services.iter().filter(|s| owned_by(&s.tags, &d.uid)) {
            match s.status.as_str() {
                "ACTIVE" => {
                    remove.push(TeardownAction::DeleteService { cluster: d.cluster_name.clone(), name: s.name.clone() })
                }
                "DRAINING" => waiting.push(format!("service {} to drain", s.name)),
                _ => {}
            }
        }
        let services_gone = stale.services.iter().all(|s| s.status == "INACTIVE" || !owned_by(&s.tags, &d.uid));
        // The current service has left the stale families once it runs the current family.
        let service_moved = o
            .service
            .as_ref()
            .is_some_and(|s| crate::aws::ecs::family_of(&s.task_definition) == Some(d.task_family.as_str()))
            && steps.service.ready();
        if !stale.task_definitions.is_empty() {
            if services_gone && service_moved {
                remove.extend(
                    stale
                        .task_definitions
                        .iter()
                        .filter(|td| td.active && owned_by(&td.tags, &d.uid))
                        .map(|td| TeardownAction::DeregisterTaskDefinition { arn: td.arn.clone() }),
                );
            } else {
                waiting.push("the service to leave the old task-definition family".into());
            }
        }
        let workers_settled = d.workers.is_none() || steps.workers.ready();
        for g in stale.auto_scaling_groups.iter().filter(|g| owned_by(&g.tags, &d.uid)) {
            if g.status.is_some() {
                waiting.push(format!("Auto Scaling group {} to be deleted", g.name));
            } else if workers_settled {
                remove.push(TeardownAction::DeleteAutoScalingGroup { name: g.name.clone() });
                waiting.push(format!("Auto Scaling group {} to be deleted", g.name));
            } else {
                waiting.push(format!("the new workers before deleting Auto Scaling group {}", g.name));
            }
        }
        let groups_gone = stale.auto_scaling_groups.iter().all(|g| !owned_by(&g.tags, &d.uid));
        let current = o.auto_scaling_group.as_ref();
        for lt in stale.launch_templates.iter().filter(|lt| owned_by(&lt.tags, &d.uid)) {
            let in_use = current.is_some_and(|g| g.launch_template_id.as_deref() == Some(lt.id.as_str()));
            if groups_gone && !in_use {
                remove.push(TeardownAction::DeleteLaunchTemplate { id: lt.id.clone(), name: lt.name.clone() });
            } else {
                waiting.push(format!("no group to launch from launch template {}", lt.name));
            }
        }
        // Launch configurations cannot be tagged: the name we derived and recorded is the proof.
        for lc in &stale.launch_configurations {
            let in_use = current.is_some_and(|g| g.launch_configuration_name.as_deref() == Some(lc.name.as_str()));
            let refreshed = current.is_some_and(|g| {
                g.instances.iter().all(|i| i.launch_configuration_name.as_deref() != Some(lc.name.as_str()))
            });
            if groups_gone && !in_use && (refreshed || current.is_none()) {
                remove.push(TeardownAction::DeleteLaunchConfiguration { name: lc.name.clone() });
            } else {
                waiting.push(format!("no instance to run launch configuration {}", lc.name));
            }
        }
        // The install bundle's secret and our execution role, once the running revision is the
        // current one (which no longer refers to them).
        let revision_moved = steps.task_definition.ready() && steps.service.ready();
        for sec in stale.secrets.iter().filter(|s| owned_by(&s.tags, &d.uid)) {
            if revision_moved {
                remove.push(TeardownAction::DeleteSecret {
                    arn: sec.arn.clone(),
                    name: sec.name.clone(),
                    deletion: d.secret_deletion,
                });
            } else {
                waiting.push(format!("the Defenders to leave secret {}", sec.name));
            }
        }
        // Replaced revisions of the current family, once the service runs only the current one.
        // (A revision recorded as replaced is current again when the register it was written
        // ahead for never happened and the spec went back: never retired then.)
        let current_arn = o.task_definition.as_ref().map(|td| td.arn.as_str());
        for td in
            stale.old_revisions.iter().filter(|td| owned_by(&td.tags, &d.uid) && Some(td.arn.as_str()) != current_arn)
        {
            if revision_moved {
                remove.push(TeardownAction::DeregisterTaskDefinition { arn: td.arn.clone() });
            } else {
                waiting.push(format!("the Defenders to leave revision {}:{}", td.family, td.revision));
            }
        }
        for role in stale.execution_roles.iter().filter(|r| owned_by(&r.tags, &d.uid)) {
            if revision_moved {
                remove.push(TeardownAction::DeleteExecutionRole { name: role.name.clone() });
            } else {
                waiting.push(format!("the Defenders to leave execution role {}", role.name));
            }
        }
        self.actions.extend(remove.into_iter().map(Action::Remove));
        if waiting.is_empty() {
            None
        } else {
            Some(format!("removing what the spec no longer names: waiting for {}", waiting.join(", ")))
        }
    }

    /// `status.owned` after this plan: what was recorded, plus the current names of what exists
    /// or is being created, less what was found gone.
    fn owned_after(&self) -> OwnedResources {
        let d = self.desired;
        let o = self.observed;
        let mut owned = o.recorded.owned.clone();
        let add = |list: &mut Vec<String>, name: &str| {
            if !list.iter().any(|n| n == name) {
                list.push(name.to_string());
            }
        };
        for a in &self.actions {
            match a {
                Action::CreateCluster { name, .. } => add(&mut owned.clusters, name),
                Action::CreateLaunchTemplate(t) => add(&mut owned.launch_templates, &t.instance.name),
                Action::CreateLaunchConfiguration(lc) => add(&mut owned.launch_configurations, &lc.name),
                Action::CreateAutoScalingGroup(g) => add(&mut owned.auto_scaling_groups, &g.name),
                Action::RegisterTaskDefinition { family, .. } => {
                    add(&mut owned.task_families, family);
                    // Recorded before the new revision exists (write-ahead), so a crash right
                    // after the register cannot forget the one it replaces.
                    if let Some(td) = o
                        .task_definition
                        .as_ref()
                        .filter(|td| &td.family == family && td.active && owned_by(&td.tags, &d.uid))
                    {
                        add(&mut owned.old_revisions, &td.arn);
                    }
                }
                Action::CreateService { name, .. } => add(&mut owned.services, name),
                Action::CreateSecret { name, .. } => add(&mut owned.secrets, name),
                Action::CreateExecutionRole(r) => add(&mut owned.execution_roles, &r.name),
                _ => {}
            }
        }
        if o.cluster.as_ref().is_some_and(|c| owned_by(&c.tags, &d.uid)) {
            add(&mut owned.clusters, &d.cluster_name);
        }
        if let Some(sec) = o.defender_secret.as_ref().filter(|s| owned_by(&s.tags, &d.uid)) {
            add(&mut owned.secrets, &sec.name);
        }
        if let Some(r) = o.execution_role.as_ref().filter(|r| owned_by(&r.tags, &d.uid)) {
            add(&mut owned.execution_roles, &r.name);
        }
        if o.service.as_ref().is_some_and(|s| owned_by(&s.tags, &d.uid) && s.status != "INACTIVE") {
            add(&mut owned.services, &d.service_name);
        }
        if o.task_definition.as_ref().is_some_and(|td| owned_by(&td.tags, &d.uid)) {
            add(&mut owned.task_families, &d.task_family);
        }
        if let Some(w) = &d.workers {
            if o.auto_scaling_group.as_ref().is_some_and(|g| owned_by(&g.tags, &d.uid)) {
                add(&mut owned.auto_scaling_groups, &w.asg_name);
            }
            if o.launch_template.as_ref().is_some_and(|lt| owned_by(&lt.tags, &d.uid)) {
                add(&mut owned.launch_templates, &w.name);
            }
            if let (Some(Some(lc)), Some(name)) = (&o.launch_configuration, &self.workers.launch_configuration_name)
                && &lc.name == name
            {
                add(&mut owned.launch_configurations, name);
            }
        }
        if let Some(stale) = &o.stale {
            let drop = |list: &mut Vec<String>, gone: &[String]| list.retain(|n| !gone.contains(n));
            drop(&mut owned.services, &stale.gone_services);
            drop(&mut owned.task_families, &stale.gone_task_families);
            drop(&mut owned.auto_scaling_groups, &stale.gone_auto_scaling_groups);
            drop(&mut owned.launch_templates, &stale.gone_launch_templates);
            drop(&mut owned.launch_configurations, &stale.gone_launch_configurations);
            drop(&mut owned.secrets, &stale.gone_secrets);
            drop(&mut owned.execution_roles, &stale.gone_execution_roles);
            drop(&mut owned.old_revisions, &stale.gone_old_revisions);
        }
        if !self.registering()
            && let Some(td) = &o.task_definition
        {
            owned.old_revisions.retain(|arn| arn != &td.arn);
        }
        owned
    }
}

/// Lifecycle states of instances on their way out of a group.
fn is_leaving(state: &str) -> bool {
    state.starts_with("Terminat") || state.starts_with("Detach") || state == "Standby"
}

/// Why the resolved launch inputs cannot make workers, if they cannot.
fn launch_input_failure(inputs: &LaunchInputs) -> Option<StepReport> {
    if let Err(why) = &inputs.image_id {
        return Some(StepReport::new(StepState::Failed, "ImageNotFound", why.clone()));
    }
    if !inputs.missing_security_groups.is_empty() {
        return Some(StepReport::new(
            StepState::Failed,
            "SecurityGroupNotFound",
            format!("security groups not found: {}", inputs.missing_security_groups.join(", ")),
        ));
    }
    if !inputs.missing_subnets.is_empty() {
        return Some(StepReport::new(
            StepState::Failed,
            "SubnetNotFound",
            format!("subnets not found: {}", inputs.missing_subnets.join(", ")),
        ));
    }
    if inputs.subnet_ids.is_empty() {
        return Some(StepReport::new(
            StepState::Failed,
            "NoSubnets",
            "no subnets: the account has no default VPC with default subnets; set workers.autoScalingGroup.subnetIds",
        ));
    }
    None
}

/// Why the first change would fail or take something that is not ours: a name taken, or an
/// instance type, instance profile or key pair that would make every launch fail.
fn prerequisite_failure(w: Option<&DesiredWorkers>, p: &Prerequisites) -> Option<StepReport> {
    if !p.names_taken.is_empty() {
        return Some(StepReport::new(
            StepState::Failed,
            "NameTaken",
            format!(
                "names this resource would create are taken by something it did not create: {}; choose other names (the field in parentheses) or remove what holds them",
                p.names_taken.join("; ")
            ),
        ));
    }
    let w = w?;
    if !p.instance_type_exists {
        return Some(StepReport::new(
            StepState::Failed,
            "InstanceTypeNotFound",
            format!("EC2 offers no instance type {} in this region", w.instance_type),
        ));
    }
    if !p.instance_profile_exists {
        return Some(StepReport::new(
            StepState::Failed,
            "InstanceProfileNotFound",
            format!(
                "IAM instance profile {} does not exist; create it (the guide's ecsInstanceRole) or set workers.instanceProfile",
                w.instance_profile
            ),
        ));
    }
    if p.key_pair_exists == Some(false) {
        return Some(StepReport::new(
            StepState::Failed,
            "KeyPairNotFound",
            format!("EC2 key pair {} does not exist in this region", w.key_name.as_deref().unwrap_or_default()),
        ));
    }
    None
}

/// Whether the group is configured to launch from `launch`.
fn group_launches(g: &AutoScalingGroup, launch: &LaunchSource) -> bool {
    match launch {
        LaunchSource::Template { name, version } => {
            g.launch_template_name.as_deref() == Some(name.as_str())
                && version.is_some()
                && g.launch_template_version.as_deref() == version.map(|v| v.to_string()).as_deref()
        }
        LaunchSource::Configuration { name } => g.launch_configuration_name.as_deref() == Some(name.as_str()),
    }
}

/// Whether an instance was launched from `launch`.
fn instance_runs(i: &crate::aws::autoscaling::AsgInstance, launch: &LaunchSource) -> bool {
    match launch {
        // A renamed template's version 1 is not the old template's version 1.
        LaunchSource::Template { name, version: Some(v) } => {
            i.launch_template_name.as_deref() == Some(name.as_str())
                && i.launch_template_version.as_deref() == Some(v.to_string().as_str())
        }
        LaunchSource::Template { version: None, .. } => false,
        LaunchSource::Configuration { name } => i.launch_configuration_name.as_deref() == Some(name.as_str()),
    }
}

/// Container instances running a RUNNING task of `task_definition`.
fn running_on<'a>(o: &'a Observed, task_definition: &str) -> BTreeSet<&'a str> {
    o.tasks
        .iter()
        .filter(|t| t.last_status == "RUNNING" && t.task_definition_arn == task_definition)
        .filter_map(|t| t.container_instance_arn.as_deref())
        .collect()
}

/// Connected Defenders among the active instances.
pub fn count_connected(observed: &Observed) -> Option<i32> {
    let connected = connected_instances(observed.defenders.as_ref()?, observed.instance_hostnames.as_ref());
    Some(
        observed
            .container_instances
            .iter()
            .filter(|ci| ci.status == "ACTIVE" && connected.contains(ci.ec2_instance_id.as_str()))
            .count() as i32,
    )
}

/// EC2 instance ids with a connected Defender: by the instance id the Defender reports, else by its
/// host name (an instance's private DNS name, or its first label).
fn connected_instances<'a>(
    defenders: &'a [Defender],
    hostnames: Option<&'a std::collections::BTreeMap<String, String>>,
) -> BTreeSet<&'a str> {
    let by_host = |host: &str| -> Option<&'a str> {
        let short = |h: &str| h.split('.').next().unwrap_or_default().to_ascii_lowercase();
        hostnames?
            .iter()
            .find(|(_, dns)| !dns.is_empty() && (dns.eq_ignore_ascii_case(host) || short(dns) == short(host)))
            .map(|(id, _)| id.as_str())
    };
    defenders
        .iter()
        .filter(|d| d.connected)
        .filter_map(|d| match d.cloud_metadata.resource_id.as_str() {
            "" => by_host(&d.hostname),
            id => Some(id),
        })
        .collect()
}

fn launch_kind(kind: WorkerKind) -> &'static str {
    match kind {
        WorkerKind::LaunchTemplate => "launch template",
        WorkerKind::LaunchConfiguration => "launch configuration",
    }
}

/// `family:revision` of a task-definition ARN, for messages.
pub fn short_td(arn: &str) -> &str {
    arn.rsplit_once('/').map(|(_, s)| s).unwrap_or(arn)
}

/// At most five items, then a count.
fn list(items: &[&str]) -> String {
    if items.len() <= 5 { items.join(", ") } else { format!("{} and {} more", items[..5].join(", "), items.len() - 5) }
}

#[cfg(test)]
mod tests {
    //! One test per observed state of the world: the actions planned, the step reports, the needs.
    use super::*;
    use crate::{
        aws::{
            autoscaling::{AsgInstance, InstanceRefresh, ScalingActivity},
            ec2::{LaunchTemplate, LaunchTemplateVersion},
            ecs::*,
        },
        fixtures,
        validate::validate,
    };

    const UID: &str = "uid-demo";
    const TD_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/demo-defender:1";
    const VERSION: &str = "34.03.138";

    fn desired() -> Desired {
        validate(&fixtures::sample("demo")).unwrap()
    }

    fn ours() -> Tags {
        desired().tags
    }

    fn cluster(tags: Tags) -> Cluster {
        Cluster {
            arn: "arn:aws:ecs:us-east-1:123456789012:cluster/demo".into(),
            name: "demo".into(),
            status: "ACTIVE".into(),
            registered_container_instances: 0,
            active_services: 0,
            running_tasks: 0,
            pending_tasks: 0,
            tags,
        }
    }

    fn inputs() -> LaunchInputs {
        LaunchInputs {
            image_id: Ok("ami-0123456789abcdef0".into()),
            security_group_ids: vec![],
            missing_security_groups: vec![],
            subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
            missing_subnets: vec![],
        }
    }

    fn hash_of(d: &Desired) -> String {
        launch_hash(d.workers.as_ref().unwrap(), "ami-0123456789abcdef0", &[])
    }

    fn lt() -> LaunchTemplate {
        LaunchTemplate {
            id: "lt-1".into(),
            name: "demo-workers".into(),
            default_version: 1,
            latest_version: 1,
            tags: ours(),
        }
    }

    fn lt_version(number: i64, hash: &str) -> LaunchTemplateVersion {
        LaunchTemplateVersion { number, description: Some(version_description(hash)) }
    }

    fn asg(instances: usize) -> AutoScalingGroup {
        AutoScalingGroup {
            name: "demo-workers".into(),
            arn: "arn:asg".into(),
            min_size: 1,
            max_size: 2,
            desired_capacity: 2,
            instances: (0..instances)
                .map(|i| AsgInstance {
                    id: format!("i-{i}"),
                    lifecycle_state: "InService".into(),
                    launch_template_name: Some("demo-workers".into()),
                    launch_template_version: Some("1".into()),
                    launch_configuration_name: None,
                })
                .collect(),
            subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
            launch_template_id: Some("lt-1".into()),
            launch_template_name: Some("demo-workers".into()),
            launch_template_version: Some("1".into()),
            launch_configuration_name: None,
            status: None,
            tags: ours(),
        }
    }

    fn instances(n: usize) -> Vec<ContainerInstance> {
        (0..n)
            .map(|i| ContainerInstance {
                arn: format!("ci-{i}"),
                ec2_instance_id: format!("i-{i}"),
                status: "ACTIVE".into(),
            })
            .collect()
    }

    const SECRET_ARN: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecs-defender/demo-1a2b3c4d/install-bundle-AbCdEf";
    const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/ecs-defender/demo-defender-exec";

    /// The Console's output for `version`: its bundle follows the version.
    fn generated(version: &str) -> GeneratedTaskDefinition {
        generated_with(version, &format!("bundle-{version}"))
    }

    fn generated_with(version: &str, bundle: &str) -> GeneratedTaskDefinition {
        crate::reconcile::observe::build_generated(
            serde_json::json!({"family": "x", "containerDefinitions": [{
                "name": "twistlock_defender",
                "image": format!("defender:{version}"),
                "environment": [{"name": "INSTALL_BUNDLE", "value": bundle}],
            }]}),
            "demo-defender",
            version.into(),
        )
    }

    fn secret_name() -> String {
        desired().secrets.secrets_manager().unwrap().name.clone()
    }

    fn role_name() -> String {
        match &desired().secrets.secrets_manager().unwrap().execution_role {
            ExecutionRole::Create { name } => name.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// The secret holding the bundle of `g` as its current version.
    fn secret_holding(g: &GeneratedTaskDefinition) -> Secret {
        let empty = Secret {
            arn: SECRET_ARN.into(),
            name: secret_name(),
            current_version: None,
            versions: vec![],
            deleted: false,
            tags: ours(),
        };
        let (_, value) = rewrite_for_secrets_manager(g, SECRET_ARN, ROLE_ARN).unwrap();
        let v = secret_version_id(UID, &value, &empty);
        Secret { current_version: Some(v.clone()), versions: vec![v], ..empty }
    }

    /// The revision registered from `g`: the bundle from the secret, tagged as the operator does.
    fn task_definition(g: &GeneratedTaskDefinition) -> TaskDefinition {
        let (rewritten, _) = rewrite_for_secrets_manager(g, SECRET_ARN, ROLE_ARN).unwrap();
        let mut tags = ours();
        tags.insert(tags::DIGEST.into(), rewritten.digest.clone());
        tags.insert(tags::CONSOLE_VERSION.into(), g.console_version.clone());
        tags.insert(tags::INPUTS.into(), desired().generator_inputs_hash);
        tags.insert(tags::SECRET_VERSION.into(), secret_holding(g).current_version.unwrap());
        TaskDefinition {
            arn: TD_ARN.into(),
            family: "demo-defender".into(),
            revision: 1,
            active: true,
            tags,
            bundle: BundleSource::Secret(SECRET_ARN.into()),
            execution_role_arn: Some(ROLE_ARN.into()),
        }
    }

    fn role() -> crate::aws::iam::Role {
        crate::aws::iam::Role { arn: ROLE_ARN.into(), name: role_name(), tags: ours() }
    }

    fn service(td: &str) -> Service {
        Service {
            arn: "arn:aws:ecs:us-east-1:123456789012:service/demo/demo-defender".into(),
            name: "demo-defender".into(),
            status: "ACTIVE".into(),
            task_definition: td.into(),
            daemon: true,
            desired: 2,
            running: 2,
            deployments: vec![],
            events: vec![],
            tags: ours(),
        }
    }

    fn tasks(n: usize, td: &str) -> Vec<Task> {
        (0..n)
            .map(|i| Task {
                arn: format!("task-{i}"),
                container_instance_arn: Some(format!("ci-{i}")),
                task_definition_arn: td.into(),
                last_status: "RUNNING".into(),
                stopped_reason: None,
            })
            .collect()
    }

    fn defenders(n: usize) -> Vec<Defender> {
        (0..n)
            .map(|i| Defender {
                hostname: format!("ip-{i}"),
                connected: true,
                cluster: "demo".into(),
                version: VERSION.into(),
                cloud_metadata: crate::prisma::CloudMetadata { resource_id: format!("i-{i}") },
            })
            .collect()
    }

    fn owned() -> OwnedResources {
        OwnedResources {
            clusters: vec!["demo".into()],
            services: vec!["demo-defender".into()],
            task_families: vec!["demo-defender".into()],
            auto_scaling_groups: vec!["demo-workers".into()],
            launch_templates: vec!["demo-workers".into()],
            launch_configurations: vec![],
            secrets: vec![secret_name()],
            execution_roles: vec![role_name()],
            old_revisions: vec![],
        }
    }

    /// The world after a complete, converged deployment, as a reconcile right after it sees it.
    fn converged() -> Observed {
        let g = generated(VERSION);
        Observed {
            cluster: Some(cluster(ours())),
            launch_template: Some(lt()),
            launch_template_default: Some(lt_version(1, &hash_of(&desired()))),
            auto_scaling_group: Some(asg(2)),
            container_instances: instances(2),
            task_definition: Some(task_definition(&g)),
            service: Some(service(TD_ARN)),
            tasks: tasks(2, TD_ARN),
            defender_secret: Some(secret_holding(&g)),
            execution_role: Some(role()),
            execution_role_policy: Some(execution_role_policy(SECRET_ARN)),
            console_version: Some(VERSION.into()),
            launch_inputs: Some(inputs()),
            recorded: Recorded {
                observed_generation: Some(1),
                cluster_arn: Some("arn:aws:ecs:us-east-1:123456789012:cluster/demo".into()),
                service_arn: Some("arn:aws:ecs:us-east-1:123456789012:service/demo/demo-defender".into()),
                auto_scaling_group_arn: Some("arn:asg".into()),
                task_definition_arn: Some(TD_ARN.into()),
                owned: owned(),
                workers_changing: false,
            },
            defenders: Some(defenders(2)),
            ..Default::default()
        }
    }

    fn names(p: &Plan) -> Vec<&'static str> {
        p.actions.iter().map(Action::name).collect()
    }

    fn needs(p: &Plan) -> Vec<Need> {
        p.needs.iter().copied().collect()
    }

    fn with_spec(f: impl FnOnce(&mut crate::crd::EcsDefenderDeploymentSpec)) -> Desired {
        let mut edd = fixtures::sample("demo");
        f(&mut edd.spec);
        edd.metadata.generation = Some(2);
        validate(&edd).unwrap()
    }

    fn checked() -> Prerequisites {
        Prerequisites {
            instance_type_exists: true,
            instance_profile_exists: true,
            names_taken: vec![],
            key_pair_exists: None,
        }
    }

    /// An empty world after the checks before the first change.
    fn preflighted() -> Observed {
        Observed {
            console_version: Some("34.03.138".into()),
            generated: Some(generated("34.03.138")),
            launch_inputs: Some(inputs()),
            prerequisites: Some(checked()),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_is_created_before_the_console_and_launch_inputs_are_checked() {
        let p = plan(&desired(), &Observed::default());
        assert!(p.actions.is_empty());
        assert_eq!(
            needs(&p),
            [Need::LaunchInputs, Need::Prerequisites, Need::ConsoleVersion, Need::GeneratedTaskDefinition]
        );
        assert_eq!(p.steps.cluster.reason, "Checking");
        // Without workers, the names and the Console are still checked first.
        let p = plan(&with_spec(|s| s.workers = None), &Observed::default());
        assert!(p.actions.is_empty());
        assert_eq!(needs(&p), [Need::Prerequisites, Need::ConsoleVersion, Need::GeneratedTaskDefinition]);
    }

    #[test]
    fn an_adopted_cluster_gets_the_same_checks_before_the_first_change_in_it() {
        let adopt = with_spec(|s| s.cluster.adopt = true);
        let foreign = Cluster { tags: Default::default(), ..cluster(ours()) };
        let o = Observed { cluster: Some(foreign.clone()), ..Default::default() };
        let p = plan(&adopt, &o);
        assert!(p.actions.is_empty(), "{:?}", names(&p));
        assert_eq!(p.steps.cluster.reason, "Checking");
        let mut o = Observed { cluster: Some(foreign), ..preflighted() };
        o.prerequisites.as_mut().unwrap().names_taken =
            vec!["service demo-defender in cluster demo (service.name)".into()];
        let p = plan(&adopt, &o);
        assert!(p.actions.is_empty(), "{:?}", names(&p));
        assert_eq!((p.steps.cluster.state, p.steps.cluster.reason), (StepState::Failed, "NameTaken"));
        assert!(p.steps.cluster.message.contains("(service.name)"), "{}", p.steps.cluster.message);
        // Checked: the workers come next.
        o.prerequisites = Some(checked());
        assert_eq!(names(&plan(&adopt, &o)), ["CreateLaunchTemplate", "CreateAutoScalingGroup"]);
    }

    #[test]
    fn a_failed_check_stops_before_the_first_change() {
        type Breaks = fn(&mut Observed);
        let cases: [(Breaks, &str); 6] = [
            (|o| o.prerequisites.as_mut().unwrap().instance_type_exists = false, "InstanceTypeNotFound"),
            (|o| o.prerequisites.as_mut().unwrap().names_taken = vec!["launch template x".into()], "NameTaken"),
            (|o| o.launch_inputs.as_mut().unwrap().image_id = Err("no AMI".into()), "ImageNotFound"),
            (|o| o.launch_inputs.as_mut().unwrap().missing_subnets = vec!["subnet-x".into()], "SubnetNotFound"),
            (|o| o.prerequisites.as_mut().unwrap().instance_profile_exists = false, "InstanceProfileNotFound"),
            (|o| o.prerequisites.as_mut().unwrap().key_pair_exists = Some(false), "KeyPairNotFound"),
        ];
        for (break_it, reason) in cases {
            let mut o = preflighted();
            break_it(&mut o);
            let p = plan(&desired(), &o);
            assert!(p.actions.is_empty(), "{reason}: {:?}", names(&p));
            assert_eq!((p.steps.cluster.state, p.steps.cluster.reason), (StepState::Failed, reason));
        }
    }

    #[test]
    fn empty_world_creates_the_cluster_first() {
        let p = plan(&desired(), &preflighted());
        assert_eq!(names(&p), ["CreateCluster"]);
        assert_eq!(p.steps.cluster.state, StepState::Progressing);
        assert_eq!(p.steps.workers.state, StepState::Blocked);
        assert!(p.needs.is_empty());
        let Action::CreateCluster { name, tags } = &p.actions[0] else { unreachable!() };
        assert_eq!(name, "demo");
        assert_eq!(tags[tags::OWNER], UID);
        assert!(p.drift.is_empty(), "a first creation is no drift");
    }

    #[test]
    fn workers_need_launch_inputs_before_anything_is_created() {
        let o = Observed { cluster: Some(cluster(ours())), ..Default::default() };
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(needs(&p), [Need::LaunchInputs]);
    }

    #[test]
    fn launch_template_and_group_are_created_together() {
        let o = Observed { cluster: Some(cluster(ours())), launch_inputs: Some(inputs()), ..Default::default() };
        // The instance profile and key pair are looked at before the group is first created.
        assert_eq!(needs(&plan(&desired(), &o)), [Need::Prerequisites]);
        let o = Observed { prerequisites: Some(checked()), ..o };
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["CreateLaunchTemplate", "CreateAutoScalingGroup"]);
        let Action::CreateLaunchTemplate(lt) = &p.actions[0] else { unreachable!() };
        assert!(lt.instance.user_data.contains("ECS_CLUSTER=demo"));
        assert_eq!(lt.instance.image_id, "ami-0123456789abcdef0");
        assert_eq!(lt.instance.associate_public_ip_address, None, "unset: not sent, the subnet decides");
        assert_eq!(lt.description, version_description(&hash_of(&desired())));
        let Action::CreateAutoScalingGroup(g) = &p.actions[1] else { unreachable!() };
        assert_eq!(g.subnet_ids, ["subnet-a", "subnet-b"], "the default VPC's subnets");
        assert_eq!((g.min_size, g.max_size, g.desired_capacity), (1, 2, 2));
        assert_eq!(g.launch, LaunchSource::Template { name: "demo-workers".into(), version: Some(1) });
        // The same inputs give the same idempotency token.
        assert_eq!(plan(&desired(), &o).actions, p.actions);
        assert_eq!(p.owned.launch_templates, ["demo-workers"]);
        assert_eq!(p.owned.auto_scaling_groups, ["demo-workers"]);
    }

    #[test]
    fn an_existing_launch_template_is_not_created_again() {
        let o = Observed {
            cluster: Some(cluster(ours())),
            launch_template: Some(lt()),
            launch_template_default: Some(lt_version(1, &hash_of(&desired()))),
            launch_inputs: Some(inputs()),
            prerequisites: Some(checked()),
            ..Default::default()
        };
        assert_eq!(names(&plan(&desired(), &o)), ["CreateAutoScalingGroup"]);
    }

    #[test]
    fn waits_for_container_instances_and_says_why() {
        let mut o = converged();
        o.container_instances = instances(1);
        o.task_definition = None;
        o.service = None;
        let p = plan(&desired(), &o);
        assert_eq!(p.steps.workers.reason, "WaitingForContainerInstances");
        assert!(p.steps.workers.message.starts_with("1 of 2 container instances"), "{}", p.steps.workers.message);
        assert_eq!(
            needs(&p),
            [Need::ScalingActivities, Need::GeneratedTaskDefinition],
            "the Defender goes ahead once workers exist"
        );
        o.scaling_activities = Some(vec![ScalingActivity {
            status_code: "Failed".into(),
            status_message: Some("Invalid IAM Instance Profile name. Launching EC2 instance failed.".into()),
            description: Some("Launching a new EC2 instance.  Status Reason: ...".into()),
        }]);
        let p = plan(&desired(), &o);
        assert!(
            p.steps.workers.message.ends_with(
                "the newest scaling activity failed: Invalid IAM Instance Profile name. Launching EC2 instance failed."
            ),
            "{}",
            p.steps.workers.message
        );
    }

    #[test]
    fn sizes_and_subnets_change_in_one_update() {
        let d = with_spec(|s| {
            let asg = &mut s.workers.as_mut().unwrap().auto_scaling_group;
            asg.max_size = 3;
            asg.desired_capacity = 3;
            asg.subnet_ids = vec!["subnet-c".into()];
        });
        let mut o = converged();
        o.launch_inputs.as_mut().unwrap().subnet_ids = vec!["subnet-c".into()];
        let p = plan(&d, &o);
        assert_eq!(
            p.actions,
            [Action::UpdateAutoScalingGroup(AutoScalingGroupUpdate {
                name: "demo-workers".into(),
                sizes: Some((1, 3, 3)),
                subnet_ids: Some(vec!["subnet-c".into()]),
                launch: None,
            })]
        );
        assert!(p.drift.is_empty(), "a spec change is no drift");
    }

    #[test]
    fn a_group_resized_outside_is_drift() {
        let mut o = converged();
        o.auto_scaling_group.as_mut().unwrap().desired_capacity = 1;
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["UpdateAutoScalingGroup"]);
        assert_eq!(p.drift.len(), 1);
        assert!(p.drift[0].1.contains("resized"), "{:?}", p.drift);
    }

    #[test]
    fn a_resize_is_drift_even_when_the_last_reconcile_saw_an_instance_leave() {
        // The reconcile before saw the old sizes but one instance already gone: not Ready, still drift.
        let mut o = converged();
        o.auto_scaling_group.as_mut().unwrap().desired_capacity = 1;
        o.recorded.workers_changing = false;
        let p = plan(&desired(), &o);
        assert_eq!(p.drift.len(), 1, "{:?}", p.drift);
        // The last reconcile was changing the group itself (say its update was throttled): not drift.
        o.recorded.workers_changing = true;
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["UpdateAutoScalingGroup"]);
        assert!(p.drift.is_empty(), "{:?}", p.drift);
    }

    #[test]
    fn new_launch_data_makes_a_version_points_the_group_and_refreshes() {
        let d = with_spec(|s| s.workers.as_mut().unwrap().instance_type = "t3.large".into());
        let o = converged();
        let p = plan(&d, &o);
        assert_eq!(needs(&p), [Need::LaunchTemplateVersions], "the default is not the wanted launch data");
        let mut o = converged();
        o.launch_template_versions = Some(vec![lt_version(1, &hash_of(&desired()))]);
        let p = plan(&d, &o);
        assert_eq!(
            names(&p),
            ["CreateLaunchTemplateVersion", "SetDefaultLaunchTemplateVersion", "UpdateAutoScalingGroup"]
        );
        let Action::UpdateAutoScalingGroup(u) = &p.actions[2] else { unreachable!() };
        assert_eq!(u.launch, Some(LaunchSource::Template { name: "demo-workers".into(), version: None }));
        assert_eq!(u.sizes, None);
        // Next round: version 2 is the default and the group points at it; instances are on 1.
        let new_hash = launch_hash(d.workers.as_ref().unwrap(), "ami-0123456789abcdef0", &[]);
        let mut o = converged();
        o.launch_template_default = Some(lt_version(2, &new_hash));
        o.auto_scaling_group.as_mut().unwrap().launch_template_version = Some("2".into());
        let p = plan(&d, &o);
        assert_eq!(needs(&p), [Need::InstanceRefreshes]);
        o.instance_refreshes = Some(vec![]);
        let p = plan(&d, &o);
        assert_eq!(
            p.actions,
            [Action::StartInstanceRefresh { name: "demo-workers".into(), min_healthy_percentage: 90 }]
        );
        assert_eq!(p.workers.instances_up_to_date, Some(0));
        // While it runs: wait, and say how far it is.
        o.instance_refreshes = Some(vec![InstanceRefresh {
            id: "r-1".into(),
            status: "InProgress".into(),
            status_reason: None,
            percentage_complete: Some(50),
            instances_to_update: Some(1),
        }]);
        let p = plan(&d, &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.workers.reason, "Refreshing");
        assert!(p.steps.workers.message.contains("50% complete"), "{}", p.steps.workers.message);
        // The Defender is kept current meanwhile.
        assert_eq!(p.steps.task_definition.state, StepState::Ready);
        // Done: every instance on version 2.
        for i in &mut o.auto_scaling_group.as_mut().unwrap().instances {
            i.launch_template_version = Some("2".into());
        }
        o.instance_refreshes = None;
        let p = plan(&d, &o);
        assert!(p.actions.is_empty() && p.needs.is_empty(), "{:?} {:?}", p.actions, p.needs);
        assert_eq!(p.workers.instances_up_to_date, Some(2));
    }

    #[test]
    fn rollout_none_leaves_running_instances() {
        let d = with_spec(|s| {
            let w = s.workers.as_mut().unwrap();
            w.instance_type = "t3.large".into();
            w.rollout.strategy = RolloutStrategy::None;
        });
        let new_hash = launch_hash(d.workers.as_ref().unwrap(), "ami-0123456789abcdef0", &[]);
        let mut o = converged();
        o.launch_template_default = Some(lt_version(2, &new_hash));
        o.auto_scaling_group.as_mut().unwrap().launch_template_version = Some("2".into());
        let p = plan(&d, &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.workers.state, StepState::Ready);
        assert!(p.steps.workers.message.contains("2 instances run older launch data"));
    }

    #[test]
    fn a_default_version_changed_outside_is_set_back() {
        let mut o = converged();
        o.launch_template_default = Some(lt_version(3, "someone-elses"));
        o.launch_template_versions = Some(vec![lt_version(1, &hash_of(&desired())), lt_version(3, "someone-elses")]);
        let p = plan(&desired(), &o);
        assert_eq!(
            p.actions,
            [Action::SetDefaultLaunchTemplateVersion {
                id: "lt-1".into(),
                name: "demo-workers".into(),
                version: Some(1)
            }]
        );
        assert_eq!(p.drift.len(), 1);
    }

    #[test]
    fn a_launch_configuration_is_named_after_its_content_and_owner() {
        let d = with_spec(|s| s.workers.as_mut().unwrap().kind = WorkerKind::LaunchConfiguration);
        let o = Observed {
            cluster: Some(cluster(ours())),
            launch_inputs: Some(inputs()),
            prerequisites: Some(checked()),
            ..Default::default()
        };
        let p = plan(&d, &o);
        assert_eq!(needs(&p), [Need::LaunchConfiguration]);
        let o = Observed { launch_configuration: Some(None), ..o };
        let p = plan(&d, &o);
        assert_eq!(names(&p), ["CreateLaunchConfiguration", "CreateAutoScalingGroup"]);
        let Action::CreateLaunchConfiguration(lc) = &p.actions[0] else { unreachable!() };
        let w = d.workers.as_ref().unwrap();
        assert!(lc.name.starts_with(&format!("demo-workers-{}-", w.owner_hash)), "{}", lc.name);
        assert_ne!(lc.name, "demo-workers", "never the bare name a person may have used");
        assert_eq!(p.owned.launch_configurations, std::slice::from_ref(&lc.name));
    }

    fn outage() -> crate::prisma::ConsoleOutage {
        crate::prisma::ConsoleOutage {
            reason: "ConsoleUnavailable",
            message: "the Console failed version (503): down; retrying with backoff".into(),
            retry_in: std::time::Duration::from_secs(4),
        }
    }

    #[test]
    fn a_deleted_cluster_of_ours_is_created_again_as_drift() {
        let mut o = converged();
        o.cluster = None;
        o.prerequisites = Some(checked());
        o.generated = Some(generated(VERSION));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["CreateCluster"]);
        assert_eq!(p.drift.len(), 1, "{:?}", p.drift);
        assert_eq!(p.drift[0].0, "RecreateCluster");
        assert!(p.drift[0].1.contains("cluster demo was deleted outside the operator"), "{:?}", p.drift);
        // A cluster never created before is no drift.
        o.recorded = Recorded::default();
        assert!(plan(&desired(), &o).drift.is_empty());
    }

    #[test]
    fn a_console_that_does_not_answer_holds_up_only_what_needs_it() {
        // Before the first change the Console's login must have been checked: nothing is created.
        let mut o = Observed { console_version: None, console_unavailable: Some(outage()), ..preflighted() };
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty(), "{:?}", names(&p));
        assert_eq!(p.steps.cluster.reason, "ConsoleUnavailable");
        assert!(p.steps.cluster.message.contains("checked before anything is created"), "{}", p.steps.cluster.message);
        // Once something was created (here the cluster went since), the AWS checks suffice.
        o.recorded.owned = owned();
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["CreateCluster"]);
        assert!(p.needs.is_empty(), "{:?}", p.needs);
        // Workers ready, nothing registered yet: the task definition waits for the Console, and
        // both Console steps say why.
        let mut o = converged();
        o.task_definition = None;
        o.service = None;
        o.tasks = vec![];
        o.console_version = None;
        o.defenders = None;
        o.recorded = Recorded::default();
        o.console_unavailable = Some(outage());
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty(), "{:?}", names(&p));
        assert!(p.needs.is_empty(), "{:?}", p.needs);
        assert_eq!(p.steps.workers.state, StepState::Ready);
        for step in [&p.steps.task_definition, &p.steps.defenders] {
            assert_eq!(step.reason, "ConsoleUnavailable", "{step:?}");
            assert_ne!(step.state, StepState::Failed, "an outage is not for a person to fix");
        }
        assert_eq!(p.steps.service.reason, "Waiting");
    }

    #[test]
    fn a_console_outage_at_a_resync_keeps_the_revision_and_changes_nothing() {
        let mut o = converged();
        o.console_version = None;
        o.defenders = None;
        o.console_unavailable = Some(outage());
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty(), "{:?}", names(&p));
        assert!(p.needs.is_empty(), "{:?}", p.needs);
        let td = &p.steps.task_definition;
        assert_eq!((td.state, td.reason), (StepState::Progressing, "ConsoleUnavailable"));
        assert!(td.message.contains("demo-defender:1 stays in use"), "{}", td.message);
        assert_eq!(p.steps.service.state, StepState::Ready, "the service is still checked against AWS");
        assert_eq!(p.steps.defenders.reason, "ConsoleUnavailable");
        // The version answered, the generator did not: the same.
        o.console_version = Some("34.04.100".into());
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty() && p.needs.is_empty());
        assert_eq!(p.steps.task_definition.reason, "ConsoleUnavailable");
    }

    #[test]
    fn task_definition_asks_the_console_only_when_needed() {
        let mut o = converged();
        o.task_definition = None;
        o.service = None;
        o.tasks = vec![];
        o.console_version = None;
        o.defenders = None;
        o.recorded = Recorded::default();
        let p = plan(&desired(), &o);
        assert_eq!(needs(&p), [Need::ConsoleVersion]);
        o.console_version = Some(VERSION.into());
        let p = plan(&desired(), &o);
        assert_eq!(needs(&p), [Need::GeneratedTaskDefinition]);
        o.generated = Some(generated(VERSION));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["RegisterTaskDefinition", "CreateService"]);
        let Action::CreateService { task_definition, client_token, .. } = &p.actions[1] else { unreachable!() };
        assert_eq!(task_definition, &None, "the service runs the revision registered just before");
        assert!(client_token.len() <= 36);
        let Action::RegisterTaskDefinition { tags, generated, .. } = &p.actions[0] else { unreachable!() };
        assert_eq!(tags[tags::DIGEST], generated.digest);
        assert_eq!(tags[tags::INPUTS], desired().generator_inputs_hash);
        assert_eq!(tags[tags::CONSOLE_VERSION], VERSION);
    }

    #[test]
    fn converged_world_plans_nothing() {
        let p = plan(&desired(), &converged());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.needs.is_empty(), "a converged resource asked for {:?}", p.needs);
        for (kind, step) in p.steps.all() {
            assert_eq!(step.state, StepState::Ready, "{kind}: {step:?}");
        }
        assert!(p.drift.is_empty() && p.removing.is_none());
        assert_eq!(p.owned, owned());
    }

    #[test]
    fn converged_but_defenders_unknown_asks_the_console_for_them() {
        let mut o = converged();
        o.defenders = None;
        let p = plan(&desired(), &o);
        assert_eq!(needs(&p), [Need::Defenders]);
        o.defenders = Some(defenders(1));
        let p = plan(&desired(), &o);
        assert_eq!(p.steps.defenders.message, "1 of 2 instances have a connected Defender; missing: i-1");
    }

    #[test]
    fn a_console_upgrade_regenerates_and_rolls_the_service() {
        let mut o = converged();
        o.console_version = Some("34.04.001".into());
        let p = plan(&desired(), &o);
        assert_eq!(needs(&p), [Need::GeneratedTaskDefinition]);
        o.generated = Some(generated("34.04.001"));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["PutSecretValue", "RegisterTaskDefinition", "UpdateService"]);
        let Action::PutSecretValue { version_id, .. } = &p.actions[0] else { unreachable!() };
        let Action::RegisterTaskDefinition { tags, defender_secret, .. } = &p.actions[1] else { unreachable!() };
        assert_eq!(&tags[tags::SECRET_VERSION], version_id, "the revision records the version it starts with");
        assert_eq!(defender_secret.as_ref().unwrap().version_id.as_ref(), Some(version_id));
    }

    #[test]
    fn a_replaced_revision_is_recorded_before_the_register_and_deregistered_once_unused() {
        let mut o = converged();
        o.console_version = Some("34.04.001".into());
        o.generated = Some(generated("34.04.001"));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["PutSecretValue", "RegisterTaskDefinition", "UpdateService"]);
        assert_eq!(p.owned.old_revisions, [TD_ARN], "written ahead, before revision 2 exists");

        // Revision 2 registered, the service still runs revision 1: the old one is kept.
        let mut td1 = converged().task_definition.unwrap();
        let td2_arn = TD_ARN.replace(":1", ":2");
        let mut o = converged();
        {
            let td = o.task_definition.as_mut().unwrap();
            td.arn = td2_arn.clone();
            td.revision = 2;
        }
        o.recorded.owned.old_revisions = vec![TD_ARN.into()];
        o.recorded.task_definition_arn = Some(td2_arn.clone());
        o.stale = Some(Stale { old_revisions: vec![td1.clone()], ..Default::default() });
        let p = plan(&desired(), &o);
        assert_eq!(p.steps.task_definition.state, StepState::Ready, "{:?}", p.steps);
        assert_eq!(names(&p), ["UpdateService"]);
        assert!(p.removing.as_ref().is_some_and(|r| r.contains("revision demo-defender:1")), "{:?}", p.removing);
        assert_eq!(p.owned.old_revisions, [TD_ARN]);

        // The service and every task moved to revision 2: revision 1 goes.
        o.service = Some(service(&td2_arn));
        o.tasks = tasks(2, &td2_arn);
        let p = plan(&desired(), &o);
        assert_eq!(p.actions, [Action::Remove(TeardownAction::DeregisterTaskDefinition { arn: TD_ARN.into() })]);

        // The register written ahead for never happened and the spec went back: revision 1 is
        // current again, and neither retired nor kept on the list.
        let mut o = converged();
        o.recorded.owned.old_revisions = vec![TD_ARN.into()];
        o.stale = Some(Stale { old_revisions: vec![td1.clone()], ..Default::default() });
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.owned.old_revisions.is_empty());

        // Once it is INACTIVE it leaves status.
        td1.active = false;
        o.stale = Some(Stale { gone_old_revisions: vec![TD_ARN.into()], ..Default::default() });
        assert!(plan(&desired(), &o).owned.old_revisions.is_empty());
    }

    #[test]
    fn the_same_output_from_a_new_console_only_retags() {
        let mut o = converged();
        o.console_version = Some("34.04.001".into());
        let mut g = generated(VERSION);
        g.console_version = "34.04.001".into();
        o.generated = Some(g);
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["TagTaskDefinition"], "no new revision for the same definition");
        let Action::TagTaskDefinition { tags, .. } = &p.actions[0] else { unreachable!() };
        assert_eq!(tags[tags::CONSOLE_VERSION], "34.04.001");
    }

    #[test]
    fn a_spec_change_regenerates_whatever_status_says() {
        let d = with_spec(|s| s.defender.options.privileged = Some(false));
        let mut o = converged();
        // Status bookkeeping says this generation was seen: irrelevant, AWS's tags decide.
        o.recorded.observed_generation = Some(2);
        assert_eq!(needs(&plan(&d, &o)), [Need::GeneratedTaskDefinition]);
    }

    #[test]
    fn service_on_an_old_revision_is_updated_and_rolling_is_reported() {
        let mut o = converged();
        o.service = Some(service("arn:old:0"));
        let p = plan(&desired(), &o);
        assert_eq!(
            p.actions,
            [Action::UpdateService {
                cluster: "demo".into(),
                name: "demo-defender".into(),
                task_definition: Some(TD_ARN.into()),
                force_new_deployment: false,
            }]
        );
        assert_eq!(p.drift.len(), 1, "the service was pointed elsewhere: drift");
        let mut o = converged();
        o.tasks = tasks(1, TD_ARN);
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.service.reason, "Rolling");
        assert!(p.steps.service.message.contains("waiting for: i-1"), "{}", p.steps.service.message);
        assert_eq!(needs(&p), [Need::StoppedTasks]);
    }

    #[test]
    fn a_defender_that_cannot_start_is_explained() {
        let mut o = converged();
        o.tasks = tasks(1, TD_ARN);
        o.service.as_mut().unwrap().events = vec![
            "(service demo-defender) was unable to place a task because no container instance met all of its requirements.".into(),
        ];
        o.stopped_tasks = Some(vec![Task {
            arn: "t".into(),
            container_instance_arn: None,
            task_definition_arn: TD_ARN.into(),
            last_status: "STOPPED".into(),
            stopped_reason: Some("CannotPullContainerError: pull access denied".into()),
        }]);
        let m = plan(&desired(), &o).steps.service.message;
        assert!(m.contains("unable to place a task"), "{m}");
        assert!(m.contains("a Defender task stopped: CannotPullContainerError: pull access denied"), "{m}");
    }

    #[test]
    fn a_deleted_service_is_recreated_as_drift() {
        let mut o = converged();
        o.service.as_mut().unwrap().status = "INACTIVE".into();
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["CreateService"]);
        assert_eq!(p.drift.len(), 1);
    }

    #[test]
    fn a_draining_service_is_waited_for_not_recreated() {
        let mut o = converged();
        o.service.as_mut().unwrap().status = "DRAINING".into();
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.service.reason, "ServiceDraining");
    }

    #[test]
    fn what_others_own_is_never_touched() {
        let mut o = converged();
        o.cluster = Some(cluster(Tags::new()));
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!((p.steps.cluster.state, p.steps.cluster.reason), (StepState::Failed, "ClusterNotOwned"));

        let mut o = converged();
        o.launch_template.as_mut().unwrap().tags = Tags::new();
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.workers.reason, "LaunchTemplateNotOwned");

        let mut o = converged();
        o.service.as_mut().unwrap().tags = Tags::new();
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.service.reason, "ServiceNotOwned");
    }

    #[test]
    fn adoption_uses_a_foreign_cluster_and_requires_it() {
        let mut edd = fixtures::sample("demo");
        edd.spec.cluster.adopt = true;
        let d = validate(&edd).unwrap();
        let p = plan(&d, &Observed::default());
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.cluster.reason, "ClusterNotFound");
        let mut o = converged();
        o.cluster = Some(cluster(Tags::new()));
        assert_eq!(plan(&d, &o).steps.cluster.state, StepState::Ready);
    }

    #[test]
    fn bad_launch_inputs_stall_before_any_change() {
        let mut i = inputs();
        i.image_id = Err("SSM parameter /x does not exist in us-east-1".into());
        let o = Observed { cluster: Some(cluster(ours())), launch_inputs: Some(i), ..Default::default() };
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!((p.steps.workers.state, p.steps.workers.reason), (StepState::Failed, "ImageNotFound"));
        let mut i = inputs();
        i.missing_security_groups = vec!["pc-security-group".into()];
        let o = Observed { cluster: Some(cluster(ours())), launch_inputs: Some(i), ..Default::default() };
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.workers.message, "security groups not found: pc-security-group");
        let mut i = inputs();
        i.missing_subnets = vec!["subnet-0dead".into()];
        let o = Observed { cluster: Some(cluster(ours())), launch_inputs: Some(i), ..Default::default() };
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(
            (p.steps.workers.reason, p.steps.workers.message.as_str()),
            ("SubnetNotFound", "subnets not found: subnet-0dead")
        );
    }

    #[test]
    fn removed_workers_are_deleted_in_order() {
        let d = with_spec(|s| s.workers = None);
        let mut o = converged();
        o.launch_template = None;
        o.auto_scaling_group = None;
        let p = plan(&d, &o);
        assert_eq!(p.steps.workers.reason, "NotManaged");
        assert_eq!(needs(&p), [Need::Stale]);
        assert!(p.removing.is_some(), "not Ready while old workers remain");
        o.stale = Some(Stale { auto_scaling_groups: vec![asg(2)], launch_templates: vec![lt()], ..Default::default() });
        let p = plan(&d, &o);
        assert_eq!(p.actions, [Action::Remove(TeardownAction::DeleteAutoScalingGroup { name: "demo-workers".into() })]);
        // The group is gone: the template goes, and both leave status.owned.
        o.stale = Some(Stale {
            gone_auto_scaling_groups: vec!["demo-workers".into()],
            launch_templates: vec![lt()],
            ..Default::default()
        });
        let p = plan(&d, &o);
        assert_eq!(
            p.actions,
            [Action::Remove(TeardownAction::DeleteLaunchTemplate { id: "lt-1".into(), name: "demo-workers".into() })]
        );
        assert!(p.owned.auto_scaling_groups.is_empty());
        o.stale = Some(Stale { gone_launch_templates: vec!["demo-workers".into()], ..Default::default() });
        o.recorded.owned.auto_scaling_groups.clear();
        let p = plan(&d, &o);
        assert!(p.actions.is_empty() && p.removing.is_none());
        assert!(p.owned.launch_templates.is_empty());
    }

    #[test]
    fn a_renamed_service_replaces_the_old_one() {
        let d = with_spec(|s| s.service.name = Some("renamed".into()));
        let mut o = converged();
        o.service = None;
        let p = plan(&d, &o);
        assert_eq!(names(&p), ["CreateService"]);
        assert_eq!(needs(&p), [Need::Stale]);
        o.stale = Some(Stale { services: vec![service(TD_ARN)], ..Default::default() });
        let p = plan(&d, &o);
        assert_eq!(names(&p), ["CreateService", "DeleteService"]);
        assert!(p.owned.services.contains(&"renamed".to_string()));
    }

    #[test]
    fn an_old_family_is_deregistered_once_the_service_left_it() {
        let d = with_spec(|s| s.defender.task_name = Some("new-family".into()));
        let mut old_td = converged().task_definition.unwrap();
        old_td.family = "demo-defender".into();
        let mut o = converged();
        o.stale = Some(Stale { task_definitions: vec![old_td], ..Default::default() });
        o.task_definition = None;
        o.generated = Some(generated(VERSION));
        let p = plan(&d, &o);
        assert_eq!(names(&p), ["RegisterTaskDefinition", "UpdateService"], "old family kept while in use");
        assert!(p.removing.is_some());
    }

    #[test]
    fn defenders_known_by_hostname_only_are_matched_to_their_instances() {
        let mut o = converged();
        let mut ds = defenders(2);
        for d in &mut ds {
            d.hostname = format!("ip-10-0-0-{}.ec2.internal", d.cloud_metadata.resource_id.trim_start_matches("i-"));
            d.cloud_metadata.resource_id.clear();
        }
        o.defenders = Some(ds);
        let p = plan(&desired(), &o);
        assert_eq!(needs(&p), [Need::InstanceHostnames]);
        o.instance_hostnames = Some(
            [
                ("i-0".to_string(), "ip-10-0-0-0.ec2.internal".to_string()),
                ("i-1".into(), "ip-10-0-0-1.ec2.internal".into()),
            ]
            .into(),
        );
        let p = plan(&desired(), &o);
        assert_eq!(p.steps.defenders.state, StepState::Ready, "{:?}", p.steps.defenders);
        assert_eq!(count_connected(&o), Some(2));
    }

    // Storage SecretsManager (the fixture's): the bundle lives in a secret of ours.

    /// A world where the cluster, workers and service exist, but nothing for the bundle yet.
    fn before_secrets() -> Observed {
        let mut o = converged();
        o.task_definition = None;
        o.service = None;
        o.tasks = vec![];
        o.defender_secret = None;
        o.execution_role = None;
        o.execution_role_policy = None;
        o.console_version = None;
        o.defenders = None;
        o.recorded = Recorded::default();
        o
    }

    #[test]
    fn the_secret_and_role_come_first_without_asking_the_console() {
        let p = plan(&desired(), &before_secrets());
        assert_eq!(names(&p), ["CreateSecret", "CreateExecutionRole"]);
        assert!(p.needs.is_empty(), "no Console call before the secret exists: {:?}", p.needs);
        assert_eq!(
            (p.steps.task_definition.state, p.steps.task_definition.reason),
            (StepState::Progressing, "CreatingSecret")
        );
        let Action::CreateSecret { name, tags, .. } = &p.actions[0] else { unreachable!() };
        assert_eq!(name, &secret_name());
        assert!(name.starts_with("ecs-defender/demo-") && name.ends_with("/install-bundle"), "{name}");
        assert_eq!(tags[tags::OWNER], UID);
        let Action::CreateExecutionRole(role) = &p.actions[1] else { unreachable!() };
        assert_eq!((role.name.as_str(), role.path.as_str()), (role_name().as_str(), "/ecs-defender/"));
        assert!(role.name.len() <= 64);
        let trust: serde_json::Value = serde_json::from_str(&role.assume_role_policy).unwrap();
        assert_eq!(trust, execution_role_trust_policy());
        assert_eq!(role.tags[tags::OWNER], UID);
        assert_eq!(p.owned.secrets, [secret_name()]);
        assert_eq!(p.owned.execution_roles, [role_name()]);
        // The same world plans the same (deterministic names; create calls that find them are no-ops).
        assert_eq!(plan(&desired(), &before_secrets()).actions, p.actions);
    }

    #[test]
    fn once_both_exist_the_bundle_goes_to_the_secret_and_the_revision_refers_to_it() {
        let mut o = before_secrets();
        o.defender_secret =
            Some(Secret { current_version: None, versions: vec![], ..secret_holding(&generated(VERSION)) });
        o.execution_role = Some(role());
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(needs(&p), [Need::ConsoleVersion]);
        o.console_version = Some(VERSION.into());
        o.generated = Some(generated(VERSION));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["PutExecutionRolePolicy", "PutSecretValue", "RegisterTaskDefinition", "CreateService"]);
        let Action::PutExecutionRolePolicy { role, document } = &p.actions[0] else { unreachable!() };
        assert_eq!(role, &role_name());
        assert_eq!(serde_json::from_str::<serde_json::Value>(document).unwrap(), execution_role_policy(SECRET_ARN));
        let Action::PutSecretValue { arn, version_id, value, .. } = &p.actions[1] else { unreachable!() };
        assert_eq!((arn.as_str(), value.0.as_str()), (SECRET_ARN, "bundle-34.03.138"));
        let Action::RegisterTaskDefinition { generated: g, tags, defender_secret, .. } = &p.actions[2] else {
            unreachable!()
        };
        let json = serde_json::to_string(&g.definition).unwrap();
        assert!(!json.contains("bundle-34.03.138"), "the revision holds the bundle: {json}");
        assert_eq!(g.definition["containerDefinitions"][0]["secrets"][0]["valueFrom"], SECRET_ARN);
        assert_eq!(g.definition["executionRoleArn"], ROLE_ARN);
        assert_eq!(tags[tags::DIGEST], g.digest);
        assert_eq!(&tags[tags::SECRET_VERSION], version_id);
        assert_eq!(
            defender_secret,
            &Some(DefenderSecretStatus { arn: SECRET_ARN.into(), version_id: Some(version_id.clone()) })
        );
        // The plan's Debug (logs) never shows the bundle.
        assert!(!format!("{:?}", p.actions).contains("bundle-34.03.138"));
    }

    #[test]
    fn a_crash_after_the_put_does_not_put_again() {
        let mut o = before_secrets();
        o.defender_secret = Some(secret_holding(&generated(VERSION)));
        o.execution_role = Some(role());
        o.execution_role_policy = Some(execution_role_policy(SECRET_ARN));
        o.console_version = Some(VERSION.into());
        o.generated = Some(generated(VERSION));
        assert_eq!(names(&plan(&desired(), &o)), ["RegisterTaskDefinition", "CreateService"]);
    }

    #[test]
    fn a_new_bundle_alone_updates_the_secret_and_restarts_the_defenders_without_a_new_revision() {
        // The Console upgraded, the image is pinned (defender.options.image): only the bundle differs.
        let mut o = converged();
        o.console_version = Some("34.04.001".into());
        let mut g = generated_with(VERSION, "bundle-of-34.04.001");
        g.console_version = "34.04.001".into();
        o.generated = Some(g);
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["PutSecretValue", "UpdateService", "TagTaskDefinition"]);
        let Action::PutSecretValue { version_id, .. } = &p.actions[0] else { unreachable!() };
        assert_eq!(
            p.actions[1],
            Action::UpdateService {
                cluster: "demo".into(),
                name: "demo-defender".into(),
                task_definition: Some(TD_ARN.into()),
                force_new_deployment: true,
            }
        );
        let Action::TagTaskDefinition { tags, .. } = &p.actions[2] else { unreachable!() };
        assert_eq!(&tags[tags::SECRET_VERSION], version_id);
        assert_eq!(tags[tags::CONSOLE_VERSION], "34.04.001");
        assert!(p.steps.task_definition.message.contains("restart with the new install bundle"));
    }

    #[test]
    fn an_unchanged_console_writes_no_secret_and_registers_nothing() {
        // Generated again (say the spec's generation moved) with the same bundle: only the record.
        let mut o = converged();
        o.console_version = Some("34.04.001".into());
        let mut g = generated(VERSION);
        g.console_version = "34.04.001".into();
        o.generated = Some(g);
        assert_eq!(names(&plan(&desired(), &o)), ["TagTaskDefinition"]);
    }

    #[test]
    fn a_secret_version_put_outside_makes_the_operator_put_its_bundle_back() {
        let mut o = converged();
        let s = o.defender_secret.as_mut().unwrap();
        let ours = s.current_version.clone().unwrap();
        s.current_version = Some("someone-elses-version-0000000000000".into());
        s.versions.push("someone-elses-version-0000000000000".into());
        let p = plan(&desired(), &o);
        assert_eq!(needs(&p), [Need::GeneratedTaskDefinition], "the revision no longer starts with our bundle");
        o.generated = Some(generated(VERSION));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["PutSecretValue", "UpdateService", "TagTaskDefinition"]);
        let Action::PutSecretValue { version_id, .. } = &p.actions[0] else { unreachable!() };
        assert_ne!(version_id, &ours, "the old token is taken: a fresh one becomes current");
    }

    #[test]
    fn a_secret_deleted_outside_is_restored_or_made_again() {
        let mut o = converged();
        o.defender_secret.as_mut().unwrap().deleted = true;
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["RestoreSecret"]);
        assert_eq!(p.drift.len(), 1);
        // Gone for good: created again; its new ARN makes a new revision once the bundle is in.
        let mut o = converged();
        o.defender_secret = None;
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["CreateSecret"]);
        assert_eq!(p.drift.len(), 1, "{:?}", p.drift);
        let mut o = converged();
        o.defender_secret = Some(Secret {
            arn: format!("{SECRET_ARN}2"),
            current_version: None,
            versions: vec![],
            ..secret_holding(&generated(VERSION))
        });
        o.execution_role_policy = Some(execution_role_policy(&format!("{SECRET_ARN}2")));
        let p = plan(&desired(), &o);
        assert_eq!(needs(&p), [Need::GeneratedTaskDefinition]);
        o.generated = Some(generated(VERSION));
        assert_eq!(names(&plan(&desired(), &o)), ["PutSecretValue", "RegisterTaskDefinition", "UpdateService"]);
    }

    #[test]
    fn a_role_policy_changed_outside_is_set_back() {
        let mut o = converged();
        o.execution_role_policy = Some(serde_json::json!({"Statement": []}));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["PutExecutionRolePolicy"]);
        assert_eq!(p.drift.len(), 1);
    }

    #[test]
    fn a_secret_or_role_of_someone_else_is_never_used() {
        let mut o = before_secrets();
        o.defender_secret = Some(Secret { tags: Tags::new(), ..secret_holding(&generated(VERSION)) });
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(
            (p.steps.task_definition.state, p.steps.task_definition.reason),
            (StepState::Failed, "SecretNotOwned")
        );
        let mut o = before_secrets();
        o.execution_role = Some(crate::aws::iam::Role { tags: Tags::new(), ..role() });
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty(), "no secret made for a stalled resource: {:?}", p.actions);
        assert_eq!(p.steps.task_definition.reason, "ExecutionRoleNotOwned");
    }

    #[test]
    fn a_role_the_user_names_is_used_as_is() {
        let d = with_spec(|s| {
            s.defender.secrets.create_execution_role = false;
            s.defender.secrets.execution_role_arn = Some("arn:aws:iam::123456789012:role/mine".into());
        });
        let mut o = before_secrets();
        let p = plan(&d, &o);
        assert_eq!(names(&p), ["CreateSecret"], "no role of ours");
        o.defender_secret =
            Some(Secret { current_version: None, versions: vec![], ..secret_holding(&generated(VERSION)) });
        o.console_version = Some(VERSION.into());
        o.generated = Some(generated(VERSION));
        let p = plan(&d, &o);
        assert_eq!(names(&p), ["PutSecretValue", "RegisterTaskDefinition", "CreateService"]);
        let Action::RegisterTaskDefinition { generated: g, .. } = &p.actions[1] else { unreachable!() };
        assert_eq!(g.definition["executionRoleArn"], "arn:aws:iam::123456789012:role/mine");
        assert!(p.owned.execution_roles.is_empty());
    }

    #[test]
    fn inline_registers_the_consoles_definition_as_it_is() {
        let d = with_spec(|s| {
            s.defender.secrets =
                crate::crd::DefenderSecretsSpec { storage: crate::crd::SecretStorage::Inline, ..Default::default() }
        });
        let mut o = before_secrets();
        let p = plan(&d, &o);
        assert!(p.actions.is_empty());
        assert_eq!(needs(&p), [Need::ConsoleVersion], "no secret, no role");
        o.console_version = Some(VERSION.into());
        o.generated = Some(generated(VERSION));
        let p = plan(&d, &o);
        assert_eq!(names(&p), ["RegisterTaskDefinition", "CreateService"]);
        let Action::RegisterTaskDefinition { generated: g, tags, defender_secret, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(g, &generated(VERSION), "registered as generated");
        assert_eq!(g.definition["containerDefinitions"][0]["environment"][0]["value"], "bundle-34.03.138");
        assert!(!tags.contains_key(tags::SECRET_VERSION) && defender_secret.is_none());
        // Inline hashes the inputs as before storage existed: revisions registered then stay current.
        let options = serde_json::to_string(&d.generator_options).unwrap();
        assert_eq!(d.generator_inputs_hash, short_hash(&[&options], 64));
        assert_ne!(d.generator_inputs_hash, desired().generator_inputs_hash);
    }

    #[test]
    fn a_switch_to_inline_removes_the_secret_and_role_once_the_defenders_left_them() {
        let d = with_spec(|s| {
            s.defender.secrets =
                crate::crd::DefenderSecretsSpec { storage: crate::crd::SecretStorage::Inline, ..Default::default() }
        });
        let mut o = converged();
        o.defender_secret = None;
        o.execution_role = None;
        o.execution_role_policy = None;
        let p = plan(&d, &o);
        assert_eq!(needs(&p), [Need::Stale, Need::GeneratedTaskDefinition], "the inputs changed");
        o.stale = Some(Stale {
            secrets: vec![secret_holding(&generated(VERSION))],
            execution_roles: vec![role()],
            ..Default::default()
        });
        o.generated = Some(generated(VERSION));
        let p = plan(&d, &o);
        assert_eq!(names(&p), ["RegisterTaskDefinition", "UpdateService"], "kept while the Defenders use them");
        assert!(p.removing.as_deref().unwrap().contains("the Defenders to leave secret"), "{:?}", p.removing);
        // The Inline revision runs everywhere: both go, the secret with the spec's recovery window.
        let mut inline_td = task_definition(&generated(VERSION));
        inline_td.tags.insert(tags::INPUTS.into(), d.generator_inputs_hash.clone());
        inline_td.tags.insert(tags::DIGEST.into(), generated(VERSION).digest);
        inline_td.bundle = BundleSource::Inline;
        inline_td.execution_role_arn = None;
        o.task_definition = Some(inline_td);
        o.generated = None;
        let p = plan(&d, &o);
        assert_eq!(
            p.actions,
            [
                Action::Remove(TeardownAction::DeleteSecret {
                    arn: SECRET_ARN.into(),
                    name: secret_name(),
                    deletion: crate::aws::secretsmanager::SecretDeletion::RecoveryWindow(7),
                }),
                Action::Remove(TeardownAction::DeleteExecutionRole { name: role_name() }),
            ]
        );
        o.stale = Some(Stale {
            gone_secrets: vec![secret_name()],
            gone_execution_roles: vec![role_name()],
            ..Default::default()
        });
        let p = plan(&d, &o);
        assert!(p.owned.secrets.is_empty() && p.owned.execution_roles.is_empty(), "{:?}", p.owned);
    }
}
