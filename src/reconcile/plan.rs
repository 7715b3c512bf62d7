//! (pure) What to do next, from what is wanted and what is there: `plan(&Desired, &Observed)`.
//!
//! No I/O here. The plan is data: an ordered list of [`Action`]s (each one idempotent), a report
//! per step for the status conditions, and the observations the plan still needs (`needs`), which
//! the driver fetches before planning again. Each step acts only when the previous one holds:
//! cluster -> workers -> task definition -> service -> Defenders connected.
//! A converged resource plans no action.

use std::collections::BTreeSet;

use crate::{
    aws::{
        InstanceSpec, Tags,
        autoscaling::{
            AutoScalingGroup, LaunchConfiguration, LaunchSource, NewAutoScalingGroup, NewLaunchConfiguration,
        },
        ec2::{LaunchTemplate, NewLaunchTemplate},
        ecs::{Cluster, ContainerInstance, Service, Task, TaskDefinition},
        tags,
    },
    crd::WorkerKind,
    prisma::Defender,
    validate::{Desired, client_token},
};

/// What observe found. `None` in the optional observations means "not looked at yet".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub cluster: Option<Cluster>,
    pub launch_template: Option<LaunchTemplate>,
    pub launch_configuration: Option<LaunchConfiguration>,
    pub auto_scaling_group: Option<AutoScalingGroup>,
    pub container_instances: Vec<ContainerInstance>,
    /// The family's current revision, when there is one.
    pub task_definition: Option<TaskDefinition>,
    pub service: Option<Service>,
    pub tasks: Vec<Task>,
    /// The Console's version (one cheap call per reconcile).
    pub console_version: Option<String>,
    /// The digest and Console version recorded in status by an earlier reconcile.
    pub recorded: Recorded,
    pub launch_inputs: Option<LaunchInputs>,
    pub generated: Option<GeneratedTaskDefinition>,
    pub defenders: Option<Vec<Defender>>,
}

/// What earlier reconciles wrote to status that planning uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    pub observed_generation: Option<i64>,
    pub console_version: Option<String>,
    pub task_definition_digest: Option<String>,
}

/// Inputs needed only to create workers.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchInputs {
    /// The AMI id, or why there is none.
    pub image_id: Result<String, String>,
    pub security_group_ids: Vec<String>,
    pub missing_security_groups: Vec<String>,
    pub subnet_ids: Vec<String>,
    /// Subnets the spec names that do not exist.
    pub missing_subnets: Vec<String>,
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

/// Observations the plan needs before it can go further.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// AMI id, security group ids, subnets: to create workers.
    LaunchInputs,
    /// The Console's version.
    ConsoleVersion,
    /// A freshly generated task definition from the Console.
    GeneratedTaskDefinition,
    /// The Console's list of Defenders.
    Defenders,
}

/// One idempotent change in AWS.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateCluster {
        name: String,
        tags: Tags,
    },
    CreateLaunchTemplate(NewLaunchTemplate),
    CreateLaunchConfiguration(NewLaunchConfiguration),
    CreateAutoScalingGroup(NewAutoScalingGroup),
    UpdateAutoScalingGroupSize {
        name: String,
        min: i32,
        max: i32,
        desired: i32,
    },
    RegisterTaskDefinition {
        family: String,
        generated: GeneratedTaskDefinition,
        tags: Tags,
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
    },
}

impl Action {
    /// A stable PascalCase name (Event reason, log field).
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateCluster { .. } => "CreateCluster",
            Action::CreateLaunchTemplate(_) => "CreateLaunchTemplate",
            Action::CreateLaunchConfiguration(_) => "CreateLaunchConfiguration",
            Action::CreateAutoScalingGroup(_) => "CreateAutoScalingGroup",
            Action::UpdateAutoScalingGroupSize { .. } => "UpdateAutoScalingGroup",
            Action::RegisterTaskDefinition { .. } => "RegisterTaskDefinition",
            Action::CreateService { .. } => "CreateService",
            Action::UpdateService { .. } => "UpdateService",
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
        use crate::reconcile::status::conditions as c;
        [
            (c::CLUSTER_READY, &self.cluster),
            (c::WORKERS_READY, &self.workers),
            (c::TASK_DEFINITION_READY, &self.task_definition),
            (c::SERVICE_READY, &self.service),
            (c::DEFENDERS_CONNECTED, &self.defenders),
        ]
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub needs: BTreeSet<Need>,
    pub steps: Steps,
}

/// Plans the next changes. Pure.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let mut p = Planner { desired, observed, actions: vec![], needs: BTreeSet::new() };
    let cluster = p.plan_cluster();
    let workers = if cluster.state == StepState::Ready { p.plan_workers() } else { StepReport::blocked("the cluster") };
    let task_definition =
        if workers.state == StepState::Ready { p.plan_task_definition() } else { StepReport::blocked("the workers") };
    let service = if task_definition.state == StepState::Ready || p.registering() {
        p.plan_service()
    } else {
        StepReport::blocked("the task definition")
    };
    let defenders =
        if service.state == StepState::Ready { p.plan_defenders() } else { StepReport::blocked("the service") };
    Plan { actions: p.actions, needs: p.needs, steps: Steps { cluster, workers, task_definition, service, defenders } }
}

struct Planner<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    actions: Vec<Action>,
    needs: BTreeSet<Need>,
}

fn owned_by(tags: &Tags, uid: &str) -> bool {
    tags.get(tags::OWNER).is_some_and(|o| o == uid)
}

impl Planner<'_> {
    fn registering(&self) -> bool {
        self.actions.iter().any(|a| matches!(a, Action::RegisterTaskDefinition { .. }))
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
                self.actions.push(Action::CreateCluster { name: d.cluster_name.clone(), tags: d.tags.clone() });
                StepReport::new(StepState::Progressing, "Creating", format!("creating cluster {}", d.cluster_name))
            }
            Some(c) if !d.adopt_cluster && !owned_by(&c.tags, &d.uid) => StepReport::new(
                StepState::Failed,
                "ClusterNotOwned",
                format!(
                    "cluster {} already exists and was not created by this resource; set cluster.adopt: true to deploy Defenders into it",
                    c.name
                ),
            ),
            Some(c) if c.status != "ACTIVE" => StepReport::new(
                StepState::Progressing,
                "ClusterNotActive",
                format!("cluster {} is {}", c.name, c.status),
            ),
            Some(c) => StepReport::new(StepState::Ready, "Active", format!("cluster {} is active", c.name)),
        }
    }

    fn active_instances(&self) -> Vec<&ContainerInstance> {
        self.observed.container_instances.iter().filter(|ci| ci.status == "ACTIVE").collect()
    }

    fn plan_workers(&mut self) -> StepReport {
        let d = self.desired;
        let active = self.active_instances().len() as i32;
        let Some(w) = &d.workers else {
            return StepReport::new(
                StepState::Ready,
                "NotManaged",
                format!(
                    "workers are not managed by this resource; the cluster has {active} active container instances"
                ),
            );
        };
        let o = self.observed;
        // The launch template or configuration.
        let launch_exists = match w.kind {
            WorkerKind::LaunchTemplate => match &o.launch_template {
                Some(lt) if !owned_by(&lt.tags, &d.uid) => {
                    return StepReport::new(
                        StepState::Failed,
                        "LaunchTemplateNotOwned",
                        format!(
                            "launch template {} exists and was not created by this resource; choose another workers.name",
                            lt.name
                        ),
                    );
                }
                Some(_) => true,
                None => false,
            },
            WorkerKind::LaunchConfiguration => o.launch_configuration.is_some(),
        };
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
        if !launch_exists || asg.is_none() {
            let Some(inputs) = &o.launch_inputs else {
                self.needs.insert(Need::LaunchInputs);
                return StepReport::new(
                    StepState::Progressing,
                    "Creating",
                    "resolving the AMI, security groups and subnets",
                );
            };
            let image_id = match &inputs.image_id {
                Ok(id) => id.clone(),
                Err(why) => return StepReport::new(StepState::Failed, "ImageNotFound", why.clone()),
            };
            if !inputs.missing_security_groups.is_empty() {
                return StepReport::new(
                    StepState::Failed,
                    "SecurityGroupNotFound",
                    format!("security groups not found: {}", inputs.missing_security_groups.join(", ")),
                );
            }
            if !inputs.missing_subnets.is_empty() {
                return StepReport::new(
                    StepState::Failed,
                    "SubnetNotFound",
                    format!("subnets not found: {}", inputs.missing_subnets.join(", ")),
                );
            }
            if inputs.subnet_ids.is_empty() {
                return StepReport::new(
                    StepState::Failed,
                    "NoSubnets",
                    "no subnets: the account has no default VPC with default subnets; set workers.autoScalingGroup.subnetIds",
                );
            }
            if !launch_exists {
                let instance = InstanceSpec {
                    name: w.name.clone(),
                    image_id: image_id.clone(),
                    instance_type: w.instance_type.clone(),
                    instance_profile: w.instance_profile.clone(),
                    security_group_ids: inputs.security_group_ids.clone(),
                    key_name: w.key_name.clone(),
                    associate_public_ip_address: w.associate_public_ip_address,
                    user_data: w.user_data.clone(),
                };
                self.actions.push(match w.kind {
                    WorkerKind::LaunchTemplate => Action::CreateLaunchTemplate(NewLaunchTemplate {
                        client_token: client_token(&d.uid, &[&w.name, &image_id, &w.user_data, &w.instance_type], 64),
                        tags: d.tags.clone(),
                        instance,
                    }),
                    WorkerKind::LaunchConfiguration => Action::CreateLaunchConfiguration(instance),
                });
            }
            if asg.is_none() {
                self.actions.push(Action::CreateAutoScalingGroup(NewAutoScalingGroup {
                    name: w.asg_name.clone(),
                    min_size: w.min_size,
                    max_size: w.max_size,
                    desired_capacity: w.desired_capacity,
                    launch: match w.kind {
                        WorkerKind::LaunchTemplate => LaunchSource::Template { name: w.name.clone() },
                        WorkerKind::LaunchConfiguration => LaunchSource::Configuration { name: w.name.clone() },
                    },
                    subnet_ids: if w.subnet_ids.is_empty() { inputs.subnet_ids.clone() } else { w.subnet_ids.clone() },
                    tags: d.tags.clone(),
                }));
            }
            return StepReport::new(
                StepState::Progressing,
                "Creating",
                format!("creating the {} and Auto Scaling group {}", launch_kind(w.kind), w.asg_name),
            );
        }
        let g = asg.expect("checked above");
        if (g.min_size, g.max_size, g.desired_capacity) != (w.min_size, w.max_size, w.desired_capacity) {
            self.actions.push(Action::UpdateAutoScalingGroupSize {
                name: g.name.clone(),
                min: w.min_size,
                max: w.max_size,
                desired: w.desired_capacity,
            });
            return StepReport::new(
                StepState::Progressing,
                "Scaling",
                format!(
                    "resizing Auto Scaling group {} to min {} / max {} / desired {}",
                    g.name, w.min_size, w.max_size, w.desired_capacity
                ),
            );
        }
        if active < w.desired_capacity {
            return StepReport::new(
                StepState::Progressing,
                "WaitingForContainerInstances",
                format!(
                    "{active} of {} container instances registered in cluster {} ({} instances in the Auto Scaling group)",
                    w.desired_capacity,
                    d.cluster_name,
                    g.instances.len()
                ),
            );
        }
        StepReport::new(StepState::Ready, "InstancesRegistered", format!("{active} container instances registered"))
    }

    fn plan_task_definition(&mut self) -> StepReport {
        let d = self.desired;
        let o = self.observed;
        let current = o.task_definition.as_ref().filter(|td| td.active && owned_by(&td.tags, &d.uid));
        let current_digest = current.and_then(|td| td.tags.get(tags::DIGEST));
        if o.console_version.is_none() {
            self.needs.insert(Need::ConsoleVersion);
            return StepReport::new(StepState::Progressing, "Checking", "asking the Console for its version");
        }
        // Ask the Console again only when something that shapes its output changed: our spec
        // (generation), the Console's version, or the registered revision is not the one we recorded.
        let fresh = match (&o.recorded.console_version, &o.console_version) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => false,
        } && o.recorded.observed_generation == Some(d.generation)
            && current_digest.is_some()
            && current_digest == o.recorded.task_definition_digest.as_ref();
        if fresh && o.generated.is_none() {
            let td = current.expect("fresh implies current");
            return StepReport::new(
                StepState::Ready,
                "Registered",
                format!("task definition {}:{} is current", td.family, td.revision),
            );
        }
        let Some(generated) = &o.generated else {
            self.needs.insert(Need::GeneratedTaskDefinition);
            return StepReport::new(
                StepState::Progressing,
                "Generating",
                "asking the Console for the Defender task definition",
            );
        };
        if current_digest == Some(&generated.digest) {
            let td = current.expect("digest implies current");
            return StepReport::new(
                StepState::Ready,
                "Registered",
                format!("task definition {}:{} is current", td.family, td.revision),
            );
        }
        let mut tags = d.tags.clone();
        tags.insert(tags::DIGEST.into(), generated.digest.clone());
        tags.insert(tags::CONSOLE_VERSION.into(), generated.console_version.clone());
        self.actions.push(Action::RegisterTaskDefinition {
            family: d.task_family.clone(),
            generated: generated.clone(),
            tags,
        });
        StepReport::new(
            StepState::Progressing,
            "Registering",
            format!(
                "registering a new revision of task definition {} (Console {})",
                d.task_family, generated.console_version
            ),
        )
    }

    fn plan_service(&mut self) -> StepReport {
        let d = self.desired;
        let o = self.observed;
        // The revision the service should run: the one being registered now, or the current one.
        let target: Option<String> =
            if self.registering() { None } else { o.task_definition.as_ref().map(|t| t.arn.clone()) };
        match &o.service {
            None => {
                self.push_create_service(target);
                StepReport::new(
                    StepState::Progressing,
                    "Creating",
                    format!("creating DAEMON service {}", d.service_name),
                )
            }
            Some(s) if s.status == "INACTIVE" => {
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
                    self.actions.push(Action::UpdateService {
                        cluster: d.cluster_name.clone(),
                        name: s.name.clone(),
                        task_definition: target,
                    });
                    return StepReport::new(
                        StepState::Progressing,
                        "Updating",
                        format!("rolling service {} to the new task definition", s.name),
                    );
                }
                let active = self.active_instances();
                let on_current: BTreeSet<&str> = o
                    .tasks
                    .iter()
                    .filter(|t| t.last_status == "RUNNING" && t.task_definition_arn == s.task_definition)
                    .filter_map(|t| t.container_instance_arn.as_deref())
                    .collect();
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
                    StepReport::new(
                        StepState::Ready,
                        "AllInstancesRunning",
                        format!("all {} container instances run {}", active.len(), short_td(&s.task_definition)),
                    )
                } else {
                    StepReport::new(
                        StepState::Progressing,
                        "Rolling",
                        format!(
                            "{} of {} instances run the current Defender task; waiting for: {}",
                            active.len() - missing.len(),
                            active.len(),
                            list(&missing)
                        ),
                    )
                }
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
            self.needs.insert(Need::Defenders);
            return StepReport::new(
                StepState::Progressing,
                "Checking",
                "asking the Console which Defenders are connected",
            );
        };
        let connected = connected_instances(defenders);
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
}

/// Connected Defenders among the active instances.
pub fn count_connected(observed: &Observed) -> Option<i32> {
    let connected = connected_instances(observed.defenders.as_ref()?);
    Some(
        observed
            .container_instances
            .iter()
            .filter(|ci| ci.status == "ACTIVE" && connected.contains(ci.ec2_instance_id.as_str()))
            .count() as i32,
    )
}

/// EC2 instance ids with a connected Defender.
fn connected_instances(defenders: &[Defender]) -> BTreeSet<&str> {
    defenders.iter().filter(|d| d.connected).map(|d| d.cloud_metadata.resource_id.as_str()).collect()
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
        aws::{autoscaling::AutoScalingGroup, ec2::LaunchTemplate, ecs::*},
        fixtures,
        validate::validate,
    };

    const UID: &str = "uid-demo";
    const TD_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/pc-defender:1";

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

    fn lt() -> LaunchTemplate {
        LaunchTemplate {
            id: "lt-1".into(),
            name: "pc-worker-node".into(),
            default_version: 1,
            latest_version: 1,
            tags: ours(),
        }
    }

    fn asg(instances: usize) -> AutoScalingGroup {
        AutoScalingGroup {
            name: "pc-worker-autoscaling".into(),
            arn: "arn:asg".into(),
            min_size: 1,
            max_size: 2,
            desired_capacity: 2,
            instances: (0..instances).map(|i| (format!("i-{i}"), "InService".into())).collect(),
            launch_template_id: Some("lt-1".into()),
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

    fn generated(version: &str) -> GeneratedTaskDefinition {
        crate::reconcile::observe::build_generated(
            serde_json::json!({"family": "x", "containerDefinitions": [{"name": "twistlock_defender", "image": format!("defender:{version}")}]}),
            "pc-defender",
            version.into(),
        )
    }

    fn task_definition(digest: &str) -> TaskDefinition {
        let mut tags = ours();
        tags.insert(tags::DIGEST.into(), digest.into());
        TaskDefinition { arn: TD_ARN.into(), family: "pc-defender".into(), revision: 1, active: true, tags }
    }

    fn service(td: &str) -> Service {
        Service {
            arn: "arn:svc".into(),
            name: "pc-defender".into(),
            status: "ACTIVE".into(),
            task_definition: td.into(),
            daemon: true,
            desired: 2,
            running: 2,
            deployments: vec![],
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
            })
            .collect()
    }

    fn defenders(n: usize) -> Vec<Defender> {
        (0..n)
            .map(|i| Defender {
                hostname: format!("ip-{i}"),
                connected: true,
                cluster: "demo".into(),
                version: "34.03.138".into(),
                cloud_metadata: crate::prisma::CloudMetadata { resource_id: format!("i-{i}") },
            })
            .collect()
    }

    /// The world after a complete, converged deployment, as a reconcile right after it sees it.
    fn converged() -> Observed {
        let g = generated("34.03.138");
        Observed {
            cluster: Some(cluster(ours())),
            launch_template: Some(lt()),
            auto_scaling_group: Some(asg(2)),
            container_instances: instances(2),
            task_definition: Some(task_definition(&g.digest)),
            service: Some(service(TD_ARN)),
            tasks: tasks(2, TD_ARN),
            console_version: Some("34.03.138".into()),
            recorded: Recorded {
                observed_generation: Some(1),
                console_version: Some("34.03.138".into()),
                task_definition_digest: Some(g.digest),
            },
            defenders: Some(defenders(2)),
            ..Default::default()
        }
    }

    fn names(p: &Plan) -> Vec<&'static str> {
        p.actions.iter().map(Action::name).collect()
    }

    #[test]
    fn empty_world_creates_the_cluster_first() {
        let p = plan(&desired(), &Observed::default());
        assert_eq!(names(&p), ["CreateCluster"]);
        assert_eq!(p.steps.cluster.state, StepState::Progressing);
        assert_eq!(p.steps.workers.state, StepState::Blocked);
        assert!(p.needs.is_empty());
        let Action::CreateCluster { name, tags } = &p.actions[0] else { unreachable!() };
        assert_eq!(name, "demo");
        assert_eq!(tags[tags::OWNER], UID);
    }

    #[test]
    fn workers_need_launch_inputs_before_anything_is_created() {
        let o = Observed { cluster: Some(cluster(ours())), ..Default::default() };
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.needs.iter().copied().collect::<Vec<_>>(), [Need::LaunchInputs]);
    }

    #[test]
    fn launch_template_and_group_are_created_together() {
        let o = Observed { cluster: Some(cluster(ours())), launch_inputs: Some(inputs()), ..Default::default() };
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["CreateLaunchTemplate", "CreateAutoScalingGroup"]);
        let Action::CreateLaunchTemplate(lt) = &p.actions[0] else { unreachable!() };
        assert!(lt.instance.user_data.contains("ECS_CLUSTER=demo"));
        assert_eq!(lt.instance.image_id, "ami-0123456789abcdef0");
        let Action::CreateAutoScalingGroup(g) = &p.actions[1] else { unreachable!() };
        assert_eq!(g.subnet_ids, ["subnet-a", "subnet-b"], "the default VPC's subnets");
        assert_eq!((g.min_size, g.max_size, g.desired_capacity), (1, 2, 2));
        assert_eq!(g.launch, LaunchSource::Template { name: "pc-worker-node".into() });
        // The same inputs give the same idempotency token.
        assert_eq!(plan(&desired(), &o).actions, p.actions);
    }

    #[test]
    fn an_existing_launch_template_is_not_created_again() {
        let o = Observed {
            cluster: Some(cluster(ours())),
            launch_template: Some(lt()),
            launch_inputs: Some(inputs()),
            ..Default::default()
        };
        assert_eq!(names(&plan(&desired(), &o)), ["CreateAutoScalingGroup"]);
    }

    #[test]
    fn waits_for_container_instances_and_names_the_count() {
        let o = Observed {
            cluster: Some(cluster(ours())),
            launch_template: Some(lt()),
            auto_scaling_group: Some(asg(2)),
            container_instances: instances(1),
            ..Default::default()
        };
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty() && p.needs.is_empty());
        assert_eq!(p.steps.workers.reason, "WaitingForContainerInstances");
        assert!(p.steps.workers.message.starts_with("1 of 2 container instances"), "{}", p.steps.workers.message);
        assert_eq!(p.steps.task_definition.state, StepState::Blocked);
    }

    #[test]
    fn a_resized_group_is_updated() {
        let mut edd = fixtures::sample("demo");
        edd.spec.workers.as_mut().unwrap().auto_scaling_group.max_size = 3;
        edd.spec.workers.as_mut().unwrap().auto_scaling_group.desired_capacity = 3;
        let o = converged();
        let p = plan(&validate(&edd).unwrap(), &o);
        assert_eq!(
            p.actions,
            [Action::UpdateAutoScalingGroupSize { name: "pc-worker-autoscaling".into(), min: 1, max: 3, desired: 3 }]
        );
    }

    #[test]
    fn task_definition_asks_the_console_only_when_needed() {
        let mut o = converged();
        o.task_definition = None;
        o.service = None;
        o.tasks = vec![];
        o.console_version = None;
        o.recorded = Recorded::default();
        o.defenders = None;
        let p = plan(&desired(), &o);
        assert_eq!(p.needs.iter().copied().collect::<Vec<_>>(), [Need::ConsoleVersion]);
        o.console_version = Some("34.03.138".into());
        let p = plan(&desired(), &o);
        assert_eq!(p.needs.iter().copied().collect::<Vec<_>>(), [Need::GeneratedTaskDefinition]);
        o.generated = Some(generated("34.03.138"));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["RegisterTaskDefinition", "CreateService"]);
        let Action::CreateService { task_definition, client_token, .. } = &p.actions[1] else { unreachable!() };
        assert_eq!(task_definition, &None, "the service runs the revision registered just before");
        assert!(client_token.len() <= 36);
        let Action::RegisterTaskDefinition { tags, generated, .. } = &p.actions[0] else { unreachable!() };
        assert_eq!(tags[tags::DIGEST], generated.digest);
    }

    #[test]
    fn converged_world_plans_nothing() {
        let p = plan(&desired(), &converged());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.needs.is_empty(), "a converged resource asked for {:?}", p.needs);
        for (kind, step) in p.steps.all() {
            assert_eq!(step.state, StepState::Ready, "{kind}: {step:?}");
        }
    }

    #[test]
    fn converged_but_defenders_unknown_asks_the_console_for_them() {
        let mut o = converged();
        o.defenders = None;
        let p = plan(&desired(), &o);
        assert_eq!(p.needs.iter().copied().collect::<Vec<_>>(), [Need::Defenders]);
        o.defenders = Some(defenders(1));
        let p = plan(&desired(), &o);
        assert_eq!(p.steps.defenders.message, "1 of 2 instances have a connected Defender; missing: i-1");
    }

    #[test]
    fn a_console_upgrade_regenerates_and_rolls_the_service() {
        let mut o = converged();
        o.console_version = Some("34.04.001".into());
        let p = plan(&desired(), &o);
        assert_eq!(p.needs.iter().copied().collect::<Vec<_>>(), [Need::GeneratedTaskDefinition]);
        o.generated = Some(generated("34.04.001"));
        let p = plan(&desired(), &o);
        assert_eq!(names(&p), ["RegisterTaskDefinition", "UpdateService"]);
        // The same Console output as registered: nothing to do.
        o.generated = Some(generated("34.03.138"));
        assert!(plan(&desired(), &o).actions.is_empty());
    }

    #[test]
    fn a_spec_change_regenerates() {
        let mut o = converged();
        o.recorded.observed_generation = Some(0);
        assert_eq!(plan(&desired(), &o).needs.iter().copied().collect::<Vec<_>>(), [Need::GeneratedTaskDefinition]);
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
                name: "pc-defender".into(),
                task_definition: Some(TD_ARN.into())
            }]
        );
        let mut o = converged();
        o.tasks = tasks(1, TD_ARN);
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.service.reason, "Rolling");
        assert!(p.steps.service.message.contains("waiting for: i-1"), "{}", p.steps.service.message);
    }

    #[test]
    fn a_draining_service_is_waited_for_not_recreated() {
        let mut o = converged();
        o.service.as_mut().unwrap().status = "DRAINING".into();
        let p = plan(&desired(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.service.reason, "ServiceDraining");
        o.service.as_mut().unwrap().status = "INACTIVE".into();
        assert_eq!(names(&plan(&desired(), &o)), ["CreateService"]);
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
    fn without_workers_the_existing_nodes_are_used() {
        let mut edd = fixtures::sample("demo");
        edd.spec.workers = None;
        let d = validate(&edd).unwrap();
        let mut o = converged();
        o.launch_template = None;
        o.auto_scaling_group = None;
        let p = plan(&d, &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.steps.workers.reason, "NotManaged");
        assert!(p.steps.defenders.state == StepState::Ready);
    }
}
