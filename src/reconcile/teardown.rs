//! Teardown when the resource is deleted: (IO) observe what this resource owns, (pure) plan the
//! next step in reverse order of creation, (IO) carry it out. Each step waits, by requeue, until
//! AWS has finished the previous one: service gone -> our task-definition revisions deregistered
//! -> Auto Scaling group force-deleted and gone -> launch template or configuration -> cluster, if
//! we created it and it holds nothing else.
//!
//! Needs no valid spec and no Console: names come from status (recorded ids) and, failing that,
//! from the spec's fields as they are. Ownership is proven by our owner tag, so nothing we did
//! not create is touched. "Already gone" is success.

use crate::{
    aws::{
        AwsClients, AwsError,
        autoscaling::{AutoScalingGroup, LaunchConfiguration},
        ec2::LaunchTemplate,
        ecs::{Cluster, Service, TaskDefinition},
        tags,
    },
    crd::{EcsDefenderDeployment, WorkerKind},
};

/// The names teardown looks for.
#[derive(Clone, Debug, PartialEq)]
pub struct TeardownTargets {
    pub uid: String,
    pub cluster: String,
    pub service: String,
    pub task_family: String,
    pub asg: Option<String>,
    pub launch_template: Option<String>,
    pub launch_configuration: Option<String>,
    /// Workers were managed: container instances left in the cluster are ours, still deregistering.
    pub managed_workers: bool,
}

impl TeardownTargets {
    pub fn of(edd: &EcsDefenderDeployment) -> Self {
        let status = edd.status.clone().unwrap_or_default();
        let spec = &edd.spec;
        let name = edd.metadata.name.clone().unwrap_or_default();
        let cluster =
            status.cluster_name.clone().or_else(|| spec.cluster.name.clone().filter(|n| !n.is_empty())).unwrap_or(name);
        let service = status
            .service_arn
            .as_deref()
            .and_then(|a| a.rsplit('/').next())
            .map(str::to_string)
            .unwrap_or_else(|| spec.service.name.clone());
        let task_family = status
            .task_definition_arn
            .as_deref()
            .and_then(crate::aws::ecs::family_of)
            .map(str::to_string)
            .unwrap_or_else(|| spec.defender.task_name.clone());
        let w = spec.workers.as_ref();
        let asg = status
            .auto_scaling_group_arn
            .as_deref()
            .and_then(|a| a.rsplit_once("autoScalingGroupName/").map(|(_, n)| n.to_string()))
            .or_else(|| w.map(|w| w.auto_scaling_group.name.clone()));
        let launch_template = w.filter(|w| w.kind == WorkerKind::LaunchTemplate).map(|w| w.name.clone());
        let launch_configuration = status
            .launch_configuration_name
            .clone()
            .or_else(|| w.filter(|w| w.kind == WorkerKind::LaunchConfiguration).map(|w| w.name.clone()));
        Self {
            uid: edd.metadata.uid.clone().unwrap_or_default(),
            cluster,
            service,
            task_family,
            asg,
            launch_template,
            launch_configuration,
            managed_workers: w.is_some() || status.auto_scaling_group_arn.is_some(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TeardownObserved {
    pub cluster: Option<Cluster>,
    pub service: Option<Service>,
    pub task_definitions: Vec<TaskDefinition>,
    pub auto_scaling_group: Option<AutoScalingGroup>,
    pub launch_template: Option<LaunchTemplate>,
    pub launch_configuration: Option<LaunchConfiguration>,
    /// Recorded in status: we created the launch configuration (they carry no tags).
    pub launch_configuration_recorded: bool,
    pub cluster_created_recorded: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TeardownAction {
    DeleteService { cluster: String, name: String },
    DeregisterTaskDefinition { arn: String },
    DeleteAutoScalingGroup { name: String },
    DeleteLaunchTemplate { id: String, name: String },
    DeleteLaunchConfiguration { name: String },
    DeleteCluster { name: String },
}

impl TeardownAction {
    pub fn name(&self) -> &'static str {
        match self {
            Self::DeleteService { .. } => "DeleteService",
            Self::DeregisterTaskDefinition { .. } => "DeregisterTaskDefinition",
            Self::DeleteAutoScalingGroup { .. } => "DeleteAutoScalingGroup",
            Self::DeleteLaunchTemplate { .. } => "DeleteLaunchTemplate",
            Self::DeleteLaunchConfiguration { .. } => "DeleteLaunchConfiguration",
            Self::DeleteCluster { .. } => "DeleteCluster",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TeardownPlan {
    pub actions: Vec<TeardownAction>,
    /// What teardown waits for; `None` with no actions means done.
    pub waiting: Option<String>,
}

impl TeardownPlan {
    pub fn done(&self) -> bool {
        self.actions.is_empty() && self.waiting.is_none()
    }
}

fn owned(t: &crate::aws::Tags, uid: &str) -> bool {
    t.get(tags::OWNER).is_some_and(|o| o == uid)
}

/// (pure) The next teardown step.
pub fn plan_teardown(t: &TeardownTargets, o: &TeardownObserved) -> TeardownPlan {
    let act = |a: TeardownAction, why: String| TeardownPlan { actions: vec![a], waiting: Some(why) };
    // 1. The service: delete, then wait until ECS has drained it.
    if let Some(s) = o.service.as_ref().filter(|s| owned(&s.tags, &t.uid)) {
        match s.status.as_str() {
            "ACTIVE" => {
                return act(
                    TeardownAction::DeleteService { cluster: t.cluster.clone(), name: s.name.clone() },
                    format!("deleting service {}", s.name),
                );
            }
            "DRAINING" => {
                return TeardownPlan { actions: vec![], waiting: Some(format!("service {} is draining", s.name)) };
            }
            _ => {}
        }
    }
    // 2. Our task-definition revisions.
    let revisions: Vec<TeardownAction> = o
        .task_definitions
        .iter()
        .filter(|td| td.active && owned(&td.tags, &t.uid))
        .map(|td| TeardownAction::DeregisterTaskDefinition { arn: td.arn.clone() })
        .collect();
    if !revisions.is_empty() {
        return TeardownPlan { actions: revisions, waiting: Some("deregistering task definitions".into()) };
    }
    // 3. The Auto Scaling group, force-deleted (its instances terminate), then gone.
    if let Some(g) = o.auto_scaling_group.as_ref().filter(|g| owned(&g.tags, &t.uid)) {
        if g.status.is_none() {
            return act(
                TeardownAction::DeleteAutoScalingGroup { name: g.name.clone() },
                format!("deleting Auto Scaling group {}", g.name),
            );
        }
        return TeardownPlan {
            actions: vec![],
            waiting: Some(format!(
                "Auto Scaling group {} is being deleted ({} instances left)",
                g.name,
                g.instances.len()
            )),
        };
    }
    // 4. What it launched from.
    let mut launch = vec![];
    if let Some(lt) = o.launch_template.as_ref().filter(|lt| owned(&lt.tags, &t.uid)) {
        launch.push(TeardownAction::DeleteLaunchTemplate { id: lt.id.clone(), name: lt.name.clone() });
    }
    if let Some(lc) = o.launch_configuration.as_ref().filter(|_| o.launch_configuration_recorded) {
        launch.push(TeardownAction::DeleteLaunchConfiguration { name: lc.name.clone() });
    }
    if !launch.is_empty() {
        return TeardownPlan { actions: launch, waiting: Some("deleting the launch template or configuration".into()) };
    }
    // 5. The cluster, only if we created it and it holds nothing else.
    if let Some(c) = &o.cluster
        && (owned(&c.tags, &t.uid) || o.cluster_created_recorded)
    {
        if c.active_services > 0 || c.running_tasks + c.pending_tasks > 0 && !t.managed_workers {
            // Someone else's services or tasks live there: leave the cluster.
            return TeardownPlan { actions: vec![], waiting: None };
        }
        if c.registered_container_instances > 0 {
            if t.managed_workers {
                return TeardownPlan {
                    actions: vec![],
                    waiting: Some(format!(
                        "{} container instances are still registered in cluster {}",
                        c.registered_container_instances, c.name
                    )),
                };
            }
            return TeardownPlan { actions: vec![], waiting: None };
        }
        return act(TeardownAction::DeleteCluster { name: c.name.clone() }, format!("deleting cluster {}", c.name));
    }
    TeardownPlan { actions: vec![], waiting: None }
}

/// (IO) What this resource owns, by name.
pub async fn describe_owned(
    aws: &AwsClients,
    t: &TeardownTargets,
    edd: &EcsDefenderDeployment,
) -> Result<TeardownObserved, AwsError> {
    let status = edd.status.clone().unwrap_or_default();
    let mut o = TeardownObserved {
        launch_configuration_recorded: status.launch_configuration_name.is_some(),
        cluster_created_recorded: status.cluster_created == Some(true),
        ..Default::default()
    };
    o.cluster = aws.describe_cluster(&t.cluster).await?;
    if o.cluster.is_some() {
        o.service = aws.describe_service(&t.cluster, &t.service).await?;
    }
    if o.service.as_ref().is_none_or(|s| s.status == "INACTIVE") {
        for arn in aws.list_task_definitions(&t.task_family).await? {
            if let Some(td) = aws.describe_task_definition(&arn).await? {
                o.task_definitions.push(td);
            }
        }
    }
    if let Some(name) = &t.asg {
        o.auto_scaling_group = aws.describe_auto_scaling_group(name).await?;
    }
    if let Some(name) = &t.launch_template {
        o.launch_template = aws.describe_launch_template(name).await?;
    }
    if let Some(name) = &t.launch_configuration {
        o.launch_configuration = aws.describe_launch_configuration(name).await?;
    }
    Ok(o)
}

/// (IO) Carries out the step; returns what it did.
pub async fn execute(
    aws: &AwsClients,
    actions: &[TeardownAction],
) -> Result<Vec<(&'static str, String)>, (&'static str, AwsError)> {
    let mut done = vec![];
    for a in actions {
        let r = match a {
            TeardownAction::DeleteService { cluster, name } => {
                aws.delete_service(cluster, name).await.map(|_| format!("deleted service {name}"))
            }
            TeardownAction::DeregisterTaskDefinition { arn } => aws
                .deregister_task_definition(arn)
                .await
                .map(|_| format!("deregistered task definition {}", arn.rsplit('/').next().unwrap_or(arn))),
            TeardownAction::DeleteAutoScalingGroup { name } => aws
                .delete_auto_scaling_group(name)
                .await
                .map(|_| format!("deleting Auto Scaling group {name} and its instances")),
            TeardownAction::DeleteLaunchTemplate { id, name } => {
                aws.delete_launch_template(id).await.map(|_| format!("deleted launch template {name}"))
            }
            TeardownAction::DeleteLaunchConfiguration { name } => {
                aws.delete_launch_configuration(name).await.map(|_| format!("deleted launch configuration {name}"))
            }
            TeardownAction::DeleteCluster { name } => {
                aws.delete_cluster(name).await.map(|_| format!("deleted cluster {name}"))
            }
        };
        match r {
            Ok(msg) => done.push((a.name(), msg)),
            Err(e) => return Err((a.name(), e)),
        }
    }
    Ok(done)
}
