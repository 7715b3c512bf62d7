//! Teardown when the resource is deleted: (IO) observe what this resource owns, (pure) plan the
//! next step in reverse order of creation, (IO) carry it out. Each step waits, by requeue, until
//! AWS has finished the previous one: services gone -> our task-definition revisions deregistered
//! -> the install bundle's secret and our execution role (nothing refers to them any more) ->
//! Auto Scaling groups force-deleted and gone -> launch templates and configurations -> cluster,
//! if we created it and it holds nothing else.
//!
//! Needs no valid spec and no Console: names come from `status.owned` (everything created and not
//! yet deleted, old names after a rename included) and from the names the spec derives as it is.
//! Ownership is proven by our owner tag (launch configurations, which cannot be tagged, by the
//! name we derived and recorded), so nothing we did not create is touched. "Already gone" is
//! success.

use crate::{
    aws::{
        AwsClients, AwsError,
        autoscaling::{AutoScalingGroup, LaunchConfiguration},
        ec2::LaunchTemplate,
        ecs::{Cluster, Service, TaskDefinition},
        iam::Role,
        secretsmanager::{Secret, SecretDeletion},
        tags::owned_by,
    },
    crd::{EcsDefenderDeployment, SecretStorage, WorkerKind},
    validate::{
        EXECUTION_ROLE_POLICY, default_defender_name, default_worker_name, execution_role_name, secret_deletion,
        secret_name, short_hash,
    },
};

/// The names teardown looks for.
#[derive(Clone, Debug, PartialEq)]
pub struct TeardownTargets {
    pub uid: String,
    pub cluster: String,
    pub services: Vec<String>,
    pub task_families: Vec<String>,
    pub auto_scaling_groups: Vec<String>,
    pub launch_templates: Vec<String>,
    /// Only names we recorded: a launch configuration cannot carry our tag.
    pub launch_configurations: Vec<String>,
    /// Workers were managed: container instances left in the cluster are ours, still deregistering.
    pub managed_workers: bool,
    /// The install bundle's secrets (only looked for when the spec or status names one, so an
    /// `Inline` resource needs no Secrets Manager permission to go).
    pub secrets: Vec<String>,
    pub secret_deletion: SecretDeletion,
    /// Execution roles we created.
    pub execution_roles: Vec<String>,
}

impl TeardownTargets {
    pub fn of(edd: &EcsDefenderDeployment) -> Self {
        let status = edd.status.clone().unwrap_or_default();
        let spec = &edd.spec;
        let name = edd.metadata.name.clone().unwrap_or_default();
        let cluster =
            status.cluster_name.clone().or_else(|| spec.cluster.name.clone().filter(|n| !n.is_empty())).unwrap_or(name);
        let mut owned = status.owned.clone();
        let add = |list: &mut Vec<String>, n: Option<String>| {
            if let Some(n) = n.filter(|n| !n.is_empty())
                && !list.contains(&n)
            {
                list.push(n);
            }
        };
        // The names the spec derives, in case a create was interrupted before status recorded it.
        add(&mut owned.services, Some(spec.service.name.clone().unwrap_or_else(|| default_defender_name(&cluster))));
        add(&mut owned.services, status.service_arn.as_deref().and_then(|a| a.rsplit('/').next()).map(String::from));
        add(
            &mut owned.task_families,
            Some(spec.defender.task_name.clone().unwrap_or_else(|| default_defender_name(&cluster))),
        );
        add(
            &mut owned.task_families,
            status.task_definition_arn.as_deref().and_then(crate::aws::ecs::family_of).map(String::from),
        );
        let w = spec.workers.as_ref();
        if let Some(w) = w {
            add(
                &mut owned.auto_scaling_groups,
                Some(w.auto_scaling_group.name.clone().unwrap_or_else(|| default_worker_name(&cluster))),
            );
            if w.kind == WorkerKind::LaunchTemplate {
                add(&mut owned.launch_templates, Some(w.name.clone().unwrap_or_else(|| default_worker_name(&cluster))));
            }
        }
        add(
            &mut owned.auto_scaling_groups,
            status
                .auto_scaling_group_arn
                .as_deref()
                .and_then(|a| a.rsplit_once("autoScalingGroupName/").map(|(_, n)| n.to_string())),
        );
        add(&mut owned.launch_configurations, status.launch_configuration_name.clone());
        let secrets = &spec.defender.secrets;
        let owner_hash = short_hash(&[edd.metadata.uid.as_deref().unwrap_or_default()], 8);
        // A spec that names no execution role never got a secret made (it does not validate); a
        // secret made under an earlier spec is in status.owned.
        let role_named = secrets.create_execution_role || secrets.execution_role_arn.is_some();
        if secrets.storage == SecretStorage::SecretsManager && role_named {
            add(&mut owned.secrets, Some(secret_name(&cluster, &owner_hash)));
            if secrets.create_execution_role {
                add(&mut owned.execution_roles, Some(execution_role_name(&cluster, &owner_hash)));
            }
        }
        Self {
            uid: edd.metadata.uid.clone().unwrap_or_default(),
            cluster,
            managed_workers: w.is_some() || !owned.auto_scaling_groups.is_empty(),
            services: owned.services,
            task_families: owned.task_families,
            auto_scaling_groups: owned.auto_scaling_groups,
            launch_templates: owned.launch_templates,
            launch_configurations: owned.launch_configurations,
            secrets: owned.secrets,
            secret_deletion: secret_deletion(secrets),
            execution_roles: owned.execution_roles,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TeardownObserved {
    pub cluster: Option<Cluster>,
    pub services: Vec<Service>,
    pub task_definitions: Vec<TaskDefinition>,
    pub auto_scaling_groups: Vec<AutoScalingGroup>,
    pub launch_templates: Vec<LaunchTemplate>,
    /// Recorded by name in status: ours.
    pub launch_configurations: Vec<LaunchConfiguration>,
    /// Not scheduled for deletion yet.
    pub secrets: Vec<Secret>,
    pub execution_roles: Vec<Role>,
    pub cluster_created_recorded: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TeardownAction {
    DeleteService {
        cluster: String,
        name: String,
    },
    DeregisterTaskDefinition {
        arn: String,
    },
    DeleteAutoScalingGroup {
        name: String,
    },
    DeleteLaunchTemplate {
        id: String,
        name: String,
    },
    DeleteLaunchConfiguration {
        name: String,
    },
    DeleteCluster {
        name: String,
    },
    /// With a recovery window, or at once (`forceDeleteWithoutRecovery`).
    DeleteSecret {
        arn: String,
        name: String,
        deletion: SecretDeletion,
    },
    /// Its inline policy, then the role.
    DeleteExecutionRole {
        name: String,
    },
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
            Self::DeleteSecret { .. } => "DeleteSecret",
            Self::DeleteExecutionRole { .. } => "DeleteExecutionRole",
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

/// (pure) The next teardown step.
pub fn plan_teardown(t: &TeardownTargets, o: &TeardownObserved) -> TeardownPlan {
    let step = |actions: Vec<TeardownAction>, waiting: Vec<String>| TeardownPlan {
        actions,
        waiting: Some(waiting.join(", ")),
    };
    // 1. The services: delete, then wait until ECS has drained them.
    let services: Vec<&Service> = o.services.iter().filter(|s| owned_by(&s.tags, &t.uid)).collect();
    let delete: Vec<TeardownAction> = services
        .iter()
        .filter(|s| s.status == "ACTIVE")
        .map(|s| TeardownAction::DeleteService { cluster: t.cluster.clone(), name: s.name.clone() })
        .collect();
    let draining: Vec<String> =
        services.iter().filter(|s| s.status != "INACTIVE").map(|s| format!("service {} to drain", s.name)).collect();
    if !draining.is_empty() {
        return step(delete, draining);
    }
    // 2. Our task-definition revisions.
    let revisions: Vec<TeardownAction> = o
        .task_definitions
        .iter()
        .filter(|td| td.active && owned_by(&td.tags, &t.uid))
        .map(|td| TeardownAction::DeregisterTaskDefinition { arn: td.arn.clone() })
        .collect();
    if !revisions.is_empty() {
        return step(revisions, vec!["task definitions to be deregistered".into()]);
    }
    // 2b. What the revisions took the install bundle from, and with.
    let mut holders: Vec<TeardownAction> = o
        .secrets
        .iter()
        .filter(|s| owned_by(&s.tags, &t.uid))
        .map(|s| TeardownAction::DeleteSecret { arn: s.arn.clone(), name: s.name.clone(), deletion: t.secret_deletion })
        .collect();
    holders.extend(
        o.execution_roles
            .iter()
            .filter(|r| owned_by(&r.tags, &t.uid))
            .map(|r| TeardownAction::DeleteExecutionRole { name: r.name.clone() }),
    );
    if !holders.is_empty() {
        return step(holders, vec!["the install bundle's secret and execution role to be deleted".into()]);
    }
    // 3. The Auto Scaling groups, force-deleted (their instances terminate), then gone.
    let groups: Vec<&AutoScalingGroup> = o.auto_scaling_groups.iter().filter(|g| owned_by(&g.tags, &t.uid)).collect();
    if !groups.is_empty() {
        let delete = groups
            .iter()
            .filter(|g| g.status.is_none())
            .map(|g| TeardownAction::DeleteAutoScalingGroup { name: g.name.clone() })
            .collect();
        let waiting = groups
            .iter()
            .map(|g| format!("Auto Scaling group {} to be deleted ({} instances left)", g.name, g.instances.len()))
            .collect();
        return step(delete, waiting);
    }
    // 4. What they launched from.
    let mut launch: Vec<TeardownAction> = o
        .launch_templates
        .iter()
        .filter(|lt| owned_by(&lt.tags, &t.uid))
        .map(|lt| TeardownAction::DeleteLaunchTemplate { id: lt.id.clone(), name: lt.name.clone() })
        .collect();
    launch.extend(
        o.launch_configurations.iter().map(|lc| TeardownAction::DeleteLaunchConfiguration { name: lc.name.clone() }),
    );
    if !launch.is_empty() {
        return step(launch, vec!["the launch templates and configurations to be deleted".into()]);
    }
    // 5. The cluster, only if we created it and it holds nothing else.
    if let Some(c) = &o.cluster
        && (owned_by(&c.tags, &t.uid) || o.cluster_created_recorded)
    {
        if c.active_services > 0 || c.running_tasks + c.pending_tasks > 0 && !t.managed_workers {
            // Someone else's services or tasks live there: leave the cluster.
            return TeardownPlan { actions: vec![], waiting: None };
        }
        if c.registered_container_instances > 0 {
            if t.managed_workers {
                return step(
                    vec![],
                    vec![format!(
                        "{} container instances still registered in cluster {} to leave",
                        c.registered_container_instances, c.name
                    )],
                );
            }
            return TeardownPlan { actions: vec![], waiting: None };
        }
        return step(vec![TeardownAction::DeleteCluster { name: c.name.clone() }], vec![format!("cluster {}", c.name)]);
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
    let mut o =
        TeardownObserved { cluster_created_recorded: status.cluster_created == Some(true), ..Default::default() };
    o.cluster = aws.describe_cluster(&t.cluster).await?;
    if o.cluster.is_some() {
        for name in &t.services {
            if let Some(s) = aws.describe_service(&t.cluster, name).await? {
                o.services.push(s);
            }
        }
    }
    if o.services.iter().all(|s| s.status == "INACTIVE") {
        for family in &t.task_families {
            for arn in aws.list_task_definitions(family).await? {
                if let Some(td) = aws.describe_task_definition(&arn).await? {
                    o.task_definitions.push(td);
                }
            }
        }
    }
    for name in &t.auto_scaling_groups {
        o.auto_scaling_groups.extend(aws.describe_auto_scaling_group(name).await?);
    }
    for name in &t.launch_templates {
        o.launch_templates.extend(aws.describe_launch_template(name).await?);
    }
    for name in &t.launch_configurations {
        o.launch_configurations.extend(aws.describe_launch_configuration(name).await?);
    }
    for name in &t.secrets {
        o.secrets.extend(aws.describe_secret(name).await?.filter(|s| !s.deleted));
    }
    for name in &t.execution_roles {
        o.execution_roles.extend(aws.get_role(name).await?);
    }
    Ok(o)
}

/// (IO) Carries out one teardown action; returns what it did.
pub async fn execute_one(aws: &AwsClients, a: &TeardownAction) -> Result<String, AwsError> {
    match a {
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
        TeardownAction::DeleteSecret { arn, name, deletion } => {
            aws.delete_secret(arn, *deletion).await.map(|_| match deletion {
                SecretDeletion::Force => format!("deleted secret {name} without recovery"),
                SecretDeletion::RecoveryWindow(days) => {
                    format!("scheduled secret {name} for deletion (recoverable for {days} days)")
                }
            })
        }
        TeardownAction::DeleteExecutionRole { name } => {
            aws.delete_role_policy(name, EXECUTION_ROLE_POLICY).await?;
            aws.delete_role(name).await.map(|_| format!("deleted execution role {name}"))
        }
    }
}

/// (IO) Carries out the step; returns what it did.
pub async fn execute(
    aws: &AwsClients,
    actions: &[TeardownAction],
) -> Result<Vec<(&'static str, String)>, (&'static str, AwsError)> {
    let mut done = vec![];
    for a in actions {
        match execute_one(aws, a).await {
            Ok(msg) => done.push((a.name(), msg)),
            Err(e) => return Err((a.name(), e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aws::Tags, crd::OwnedResources, fixtures};

    fn ours() -> Tags {
        [(crate::aws::tags::OWNER.to_string(), "uid-demo".to_string())].into()
    }

    fn group(name: &str, status: Option<&str>) -> AutoScalingGroup {
        AutoScalingGroup {
            name: name.into(),
            arn: format!("arn:asg:{name}"),
            min_size: 1,
            max_size: 2,
            desired_capacity: 2,
            instances: vec![],
            subnet_ids: vec![],
            launch_template_id: None,
            launch_template_name: None,
            launch_template_version: None,
            launch_configuration_name: None,
            status: status.map(String::from),
            tags: ours(),
        }
    }

    #[test]
    fn targets_include_old_names_from_status() {
        let mut edd = fixtures::sample("demo");
        edd.status = Some(crate::crd::EcsDefenderDeploymentStatus {
            owned: OwnedResources {
                services: vec!["old-svc".into()],
                auto_scaling_groups: vec!["old-asg".into()],
                launch_configurations: vec!["old-lc-1234abcd-00112233".into()],
                ..Default::default()
            },
            ..Default::default()
        });
        let t = TeardownTargets::of(&edd);
        assert_eq!(t.services, ["old-svc", "demo-defender"]);
        assert_eq!(t.auto_scaling_groups, ["old-asg", "demo-workers"]);
        assert_eq!(t.launch_templates, ["demo-workers"]);
        assert_eq!(t.launch_configurations, ["old-lc-1234abcd-00112233"], "only recorded configurations");
    }

    #[test]
    fn every_group_goes_before_any_launch_template() {
        let t = TeardownTargets::of(&fixtures::sample("demo"));
        let o = TeardownObserved {
            auto_scaling_groups: vec![group("a", None), group("b", Some("Delete in progress"))],
            launch_templates: vec![LaunchTemplate {
                id: "lt-1".into(),
                name: "demo-workers".into(),
                default_version: 1,
                latest_version: 1,
                tags: ours(),
            }],
            ..Default::default()
        };
        let p = plan_teardown(&t, &o);
        assert_eq!(p.actions, [TeardownAction::DeleteAutoScalingGroup { name: "a".into() }]);
        assert!(p.waiting.unwrap().contains("b to be deleted"));
        let o = TeardownObserved { auto_scaling_groups: vec![], ..o };
        assert_eq!(
            plan_teardown(&t, &o).actions,
            [TeardownAction::DeleteLaunchTemplate { id: "lt-1".into(), name: "demo-workers".into() }]
        );
    }

    #[test]
    fn untagged_things_are_left_alone() {
        let t = TeardownTargets::of(&fixtures::sample("demo"));
        let mut g = group("a", None);
        g.tags = Tags::new();
        let o = TeardownObserved { auto_scaling_groups: vec![g], ..Default::default() };
        assert!(plan_teardown(&t, &o).done());
    }

    #[test]
    fn the_secret_and_role_go_after_the_revisions_and_before_the_workers() {
        let mut edd = fixtures::sample("demo");
        edd.spec.defender.secrets.force_delete_without_recovery = true;
        let t = TeardownTargets::of(&edd);
        assert_eq!(t.secrets.len(), 1, "{t:?}");
        assert_eq!(t.execution_roles.len(), 1, "{t:?}");
        assert_eq!(t.secret_deletion, SecretDeletion::Force);
        let secret = Secret {
            arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf".into(),
            name: t.secrets[0].clone(),
            current_version: None,
            versions: vec![],
            deleted: false,
            tags: ours(),
        };
        let role = Role {
            arn: "arn:aws:iam::123456789012:role/ecs-defender/r".into(),
            name: t.execution_roles[0].clone(),
            tags: ours(),
        };
        let td = TaskDefinition { arn: "arn:td:1".into(), active: true, tags: ours(), ..Default::default() };
        let mut o = TeardownObserved {
            task_definitions: vec![td],
            secrets: vec![secret.clone()],
            execution_roles: vec![role.clone()],
            auto_scaling_groups: vec![group("a", None)],
            ..Default::default()
        };
        assert_eq!(
            plan_teardown(&t, &o).actions,
            [TeardownAction::DeregisterTaskDefinition { arn: "arn:td:1".into() }]
        );
        o.task_definitions.clear();
        assert_eq!(
            plan_teardown(&t, &o).actions,
            [
                TeardownAction::DeleteSecret {
                    arn: secret.arn.clone(),
                    name: secret.name.clone(),
                    deletion: SecretDeletion::Force
                },
                TeardownAction::DeleteExecutionRole { name: role.name.clone() },
            ]
        );
        o.secrets.clear();
        o.execution_roles.clear();
        assert_eq!(plan_teardown(&t, &o).actions, [TeardownAction::DeleteAutoScalingGroup { name: "a".into() }]);
        // Not ours: left alone.
        let o = TeardownObserved { secrets: vec![Secret { tags: Tags::new(), ..secret }], ..Default::default() };
        assert!(plan_teardown(&t, &o).done());
    }

    #[test]
    fn an_inline_resource_needs_no_secrets_manager_to_go() {
        let mut edd = fixtures::sample("demo");
        edd.spec.defender.secrets =
            crate::crd::DefenderSecretsSpec { storage: crate::crd::SecretStorage::Inline, ..Default::default() };
        let t = TeardownTargets::of(&edd);
        assert!(t.secrets.is_empty() && t.execution_roles.is_empty(), "{t:?}");
        // Nor one whose spec never validated (no execution role named): nothing was made.
        edd.spec.defender.secrets = Default::default();
        let t = TeardownTargets::of(&edd);
        assert!(t.secrets.is_empty() && t.execution_roles.is_empty(), "{t:?}");
    }
}
