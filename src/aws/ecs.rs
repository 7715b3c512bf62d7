//! ECS calls: clusters, container instances, task definitions, services, tasks.

use aws_sdk_ecs::types::{
    ClusterField, DesiredStatus, LaunchType, SchedulingStrategy, ServiceField, Tag, TaskDefinitionField,
    TaskDefinitionStatus,
};
use aws_smithy_types::body::SdkBody;

use super::{AwsClients, AwsError, Tags};

#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    pub arn: String,
    pub name: String,
    pub status: String,
    pub registered_container_instances: i32,
    pub active_services: i32,
    pub running_tasks: i32,
    pub pending_tasks: i32,
    pub tags: Tags,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInstance {
    pub arn: String,
    pub ec2_instance_id: String,
    pub status: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskDefinition {
    pub arn: String,
    pub family: String,
    pub revision: i32,
    pub active: bool,
    pub tags: Tags,
    /// Where its Defender gets `INSTALL_BUNDLE` (never the value itself).
    pub bundle: BundleSource,
    pub execution_role_arn: Option<String>,
}

/// Where a revision's containers get `INSTALL_BUNDLE` from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BundleSource {
    /// Not looked at (a revision registered by this reconcile) or not set at all.
    #[default]
    None,
    /// In plain text in `environment`.
    Inline,
    /// `secrets[].valueFrom`: a Secrets Manager secret's ARN.
    Secret(String),
}

/// The name of the Defender's install-bundle variable in a Console-generated task definition.
pub const INSTALL_BUNDLE: &str = "INSTALL_BUNDLE";

#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    pub status: String,
    pub task_definition: String,
    pub rollout_state: Option<String>,
    pub running: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub arn: String,
    pub name: String,
    pub status: String,
    pub task_definition: String,
    pub daemon: bool,
    pub desired: i32,
    pub running: i32,
    pub deployments: Vec<Deployment>,
    /// The newest service events' messages, newest first (placement failures show here).
    pub events: Vec<String>,
    pub tags: Tags,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub arn: String,
    pub container_instance_arn: Option<String>,
    pub task_definition_arn: String,
    pub last_status: String,
    /// Why a stopped task stopped (`CannotPullContainerError: ...`).
    pub stopped_reason: Option<String>,
}

fn tags_of(tags: &[Tag]) -> Tags {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect()
}

fn sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

pub(super) fn cluster_of(c: &aws_sdk_ecs::types::Cluster) -> Cluster {
    Cluster {
        arn: c.cluster_arn().unwrap_or_default().to_string(),
        name: c.cluster_name().unwrap_or_default().to_string(),
        status: c.status().unwrap_or_default().to_string(),
        registered_container_instances: c.registered_container_instances_count(),
        active_services: c.active_services_count(),
        running_tasks: c.running_tasks_count(),
        pending_tasks: c.pending_tasks_count(),
        tags: tags_of(c.tags()),
    }
}

impl AwsClients {
    pub async fn describe_cluster(&self, name: &str) -> Result<Option<Cluster>, AwsError> {
        let out = self.finish(
            "ecs:DescribeClusters",
            self.ecs.describe_clusters().clusters(name).include(ClusterField::Tags).send().await,
        )?;
        Ok(out.clusters().iter().find(|c| c.status() != Some("INACTIVE")).map(cluster_of))
    }

    pub async fn create_cluster(&self, name: &str, tags: &Tags) -> Result<Cluster, AwsError> {
        let out = self.finish(
            "ecs:CreateCluster",
            self.ecs.create_cluster().cluster_name(name).set_tags(Some(sdk_tags(tags))).send().await,
        )?;
        let c = out.cluster();
        Ok(Cluster {
            arn: c.and_then(|c| c.cluster_arn()).unwrap_or_default().to_string(),
            name: name.to_string(),
            status: c.and_then(|c| c.status()).unwrap_or("ACTIVE").to_string(),
            registered_container_instances: 0,
            active_services: 0,
            running_tasks: 0,
            pending_tasks: 0,
            tags: tags.clone(),
        })
    }

    pub async fn delete_cluster(&self, name: &str) -> Result<(), AwsError> {
        match self.finish("ecs:DeleteCluster", self.ecs.delete_cluster().cluster(name).send().await) {
            Ok(_) => Ok(()),
            Err(e) if e.code_is("ClusterNotFoundException") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The cluster's container instances (every status but INACTIVE).
    pub async fn list_container_instances(&self, cluster: &str) -> Result<Vec<ContainerInstance>, AwsError> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let out = self.finish(
                "ecs:ListContainerInstances",
                self.ecs.list_container_instances().cluster(cluster).set_next_token(token).send().await,
            )?;
            arns.extend(out.container_instance_arns().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut result = Vec::new();
        for chunk in arns.chunks(100) {
            let out = self.finish(
                "ecs:DescribeContainerInstances",
                self.ecs
                    .describe_container_instances()
                    .cluster(cluster)
                    .set_container_instances(Some(chunk.to_vec()))
                    .send()
                    .await,
            )?;
            result.extend(out.container_instances().iter().map(|ci| ContainerInstance {
                arn: ci.container_instance_arn().unwrap_or_default().to_string(),
                ec2_instance_id: ci.ec2_instance_id().unwrap_or_default().to_string(),
                status: ci.status().unwrap_or_default().to_string(),
            }));
        }
        result.sort_by(|a, b| a.ec2_instance_id.cmp(&b.ec2_instance_id));
        Ok(result)
    }

    /// A task definition by family (its latest ACTIVE revision) or ARN, with its tags.
    pub async fn describe_task_definition(&self, family_or_arn: &str) -> Result<Option<TaskDefinition>, AwsError> {
        let result = self.finish(
            "ecs:DescribeTaskDefinition",
            self.ecs
                .describe_task_definition()
                .task_definition(family_or_arn)
                .include(TaskDefinitionField::Tags)
                .send()
                .await,
        );
        let out = match result {
            Ok(out) => out,
            // ECS answers ClientException "Unable to describe task definition." for unknown ones.
            Err(e) if e.code_is("ClientException") || e.code_is("InvalidParameterException") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(out.task_definition().map(|td| {
            let containers = td.container_definitions();
            let from_secret = containers
                .iter()
                .flat_map(|c| c.secrets())
                .find(|s| s.name() == INSTALL_BUNDLE)
                .map(|s| s.value_from().to_string());
            let inline = containers.iter().flat_map(|c| c.environment()).any(|e| e.name() == Some(INSTALL_BUNDLE));
            TaskDefinition {
                arn: td.task_definition_arn().unwrap_or_default().to_string(),
                family: td.family().unwrap_or_default().to_string(),
                revision: td.revision(),
                active: td.status() == Some(&TaskDefinitionStatus::Active),
                tags: tags_of(out.tags()),
                bundle: match (inline, from_secret) {
                    (true, _) => BundleSource::Inline,
                    (false, Some(arn)) => BundleSource::Secret(arn),
                    (false, None) => BundleSource::None,
                },
                execution_role_arn: td.execution_role_arn().map(str::to_string),
            }
        }))
    }

    /// Registers `definition` (a RegisterTaskDefinition JSON document, as the Console generates it)
    /// exactly as given: the SDK request is built, then its body replaced by the document (plus
    /// `tags`), so no field the SDK's types would not carry is dropped. Returns the new ARN.
    pub async fn register_task_definition(
        &self,
        definition: &serde_json::Value,
        tags: &Tags,
    ) -> Result<TaskDefinition, AwsError> {
        let mut body = definition.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.insert(
                "tags".into(),
                serde_json::Value::Array(tags.iter().map(|(k, v)| serde_json::json!({"key": k, "value": v})).collect()),
            );
        }
        let bytes = serde_json::to_vec(&body).expect("JSON value serializes");
        let family = definition.get("family").and_then(|f| f.as_str()).unwrap_or_default().to_string();
        let out = self.finish(
            "ecs:RegisterTaskDefinition",
            self.ecs
                .register_task_definition()
                .family(&family)
                .customize()
                .mutate_request(move |req| {
                    let len = bytes.len();
                    *req.body_mut() = SdkBody::from(bytes.clone());
                    req.headers_mut().insert("content-length", len.to_string());
                })
                .send()
                .await,
        )?;
        let td = out.task_definition();
        Ok(TaskDefinition {
            arn: td.and_then(|t| t.task_definition_arn()).unwrap_or_default().to_string(),
            family,
            revision: td.map(|t| t.revision()).unwrap_or_default(),
            active: true,
            tags: tags.clone(),
            ..Default::default()
        })
    }

    /// ARNs of the family's ACTIVE revisions.
    pub async fn list_task_definitions(&self, family: &str) -> Result<Vec<String>, AwsError> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let out = self.finish(
                "ecs:ListTaskDefinitions",
                self.ecs
                    .list_task_definitions()
                    .family_prefix(family)
                    .status(TaskDefinitionStatus::Active)
                    .set_next_token(token)
                    .send()
                    .await,
            )?;
            // familyPrefix matches prefixes; keep the family itself only.
            arns.extend(out.task_definition_arns().iter().filter(|a| family_of(a) == Some(family)).cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(arns)
    }

    pub async fn deregister_task_definition(&self, arn: &str) -> Result<(), AwsError> {
        match self.finish(
            "ecs:DeregisterTaskDefinition",
            self.ecs.deregister_task_definition().task_definition(arn).send().await,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code_is("ClientException") || e.code_is("InvalidParameterException") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn describe_service(&self, cluster: &str, name: &str) -> Result<Option<Service>, AwsError> {
        let result = self.finish(
            "ecs:DescribeServices",
            self.ecs.describe_services().cluster(cluster).services(name).include(ServiceField::Tags).send().await,
        );
        let out = match result {
            Ok(out) => out,
            Err(e) if e.code_is("ClusterNotFoundException") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(out.services().first().map(|s| Service {
            arn: s.service_arn().unwrap_or_default().to_string(),
            name: s.service_name().unwrap_or_default().to_string(),
            status: s.status().unwrap_or_default().to_string(),
            task_definition: s.task_definition().unwrap_or_default().to_string(),
            daemon: s.scheduling_strategy() == Some(&SchedulingStrategy::Daemon),
            desired: s.desired_count(),
            running: s.running_count(),
            deployments: s
                .deployments()
                .iter()
                .map(|d| Deployment {
                    status: d.status().unwrap_or_default().to_string(),
                    task_definition: d.task_definition().unwrap_or_default().to_string(),
                    rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
                    running: d.running_count(),
                })
                .collect(),
            events: s.events().iter().take(5).filter_map(|e| e.message().map(str::to_string)).collect(),
            tags: tags_of(s.tags()),
        }))
    }

    /// Creates the DAEMON service on EC2. No desiredCount, placement strategy or maximumPercent:
    /// AWS refuses them for DAEMON services.
    pub async fn create_service(
        &self,
        cluster: &str,
        name: &str,
        task_definition: &str,
        client_token: &str,
        tags: &Tags,
    ) -> Result<Service, AwsError> {
        let out = self.finish(
            "ecs:CreateService",
            self.ecs
                .create_service()
                .cluster(cluster)
                .service_name(name)
                .task_definition(task_definition)
                .launch_type(LaunchType::Ec2)
                .scheduling_strategy(SchedulingStrategy::Daemon)
                .client_token(client_token)
                .set_tags(Some(sdk_tags(tags)))
                .send()
                .await,
        )?;
        let s = out.service();
        Ok(Service {
            arn: s.and_then(|s| s.service_arn()).unwrap_or_default().to_string(),
            name: name.to_string(),
            status: s.and_then(|s| s.status()).unwrap_or("ACTIVE").to_string(),
            task_definition: task_definition.to_string(),
            daemon: true,
            desired: 0,
            running: 0,
            deployments: vec![],
            events: vec![],
            tags: tags.clone(),
        })
    }

    /// Points the service at `task_definition`; with `force_new_deployment`, also when it runs it
    /// already, so every task restarts (and picks up a new secret version).
    pub async fn update_service(
        &self,
        cluster: &str,
        name: &str,
        task_definition: &str,
        force_new_deployment: bool,
    ) -> Result<(), AwsError> {
        let req = self.ecs.update_service().cluster(cluster).service(name).task_definition(task_definition);
        let req = if force_new_deployment { req.force_new_deployment(true) } else { req };
        self.finish("ecs:UpdateService", req.send().await)?;
        Ok(())
    }

    /// Deletes the service; "already gone" counts as success.
    pub async fn delete_service(&self, cluster: &str, name: &str) -> Result<(), AwsError> {
        match self.finish(
            "ecs:DeleteService",
            self.ecs.delete_service().cluster(cluster).service(name).force(true).send().await,
        ) {
            Ok(_) => Ok(()),
            Err(e)
                if e.code_is("ServiceNotFoundException")
                    || e.code_is("ServiceNotActiveException")
                    || e.code_is("ClusterNotFoundException") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The service's tasks (any status ECS still lists).
    pub async fn list_service_tasks(&self, cluster: &str, service: &str) -> Result<Vec<Task>, AwsError> {
        self.list_tasks(cluster, service, None).await
    }

    /// The service's recently stopped tasks, with why they stopped.
    pub async fn list_stopped_service_tasks(&self, cluster: &str, service: &str) -> Result<Vec<Task>, AwsError> {
        self.list_tasks(cluster, service, Some(DesiredStatus::Stopped)).await
    }

    async fn list_tasks(
        &self,
        cluster: &str,
        service: &str,
        desired: Option<DesiredStatus>,
    ) -> Result<Vec<Task>, AwsError> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let out = self.finish(
                "ecs:ListTasks",
                self.ecs
                    .list_tasks()
                    .cluster(cluster)
                    .service_name(service)
                    .set_desired_status(desired.clone())
                    .set_next_token(token)
                    .send()
                    .await,
            )?;
            arns.extend(out.task_arns().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut tasks = Vec::new();
        for chunk in arns.chunks(100) {
            let out = self.finish(
                "ecs:DescribeTasks",
                self.ecs.describe_tasks().cluster(cluster).set_tasks(Some(chunk.to_vec())).send().await,
            )?;
            tasks.extend(out.tasks().iter().map(|t| Task {
                arn: t.task_arn().unwrap_or_default().to_string(),
                container_instance_arn: t.container_instance_arn().map(str::to_string),
                task_definition_arn: t.task_definition_arn().unwrap_or_default().to_string(),
                last_status: t.last_status().unwrap_or_default().to_string(),
                stopped_reason: t.stopped_reason().map(str::to_string),
            }));
        }
        Ok(tasks)
    }

    /// Adds or overwrites tags on an ECS resource (a task definition revision).
    pub async fn tag_resource(&self, arn: &str, tags: &Tags) -> Result<(), AwsError> {
        self.finish(
            "ecs:TagResource",
            self.ecs.tag_resource().resource_arn(arn).set_tags(Some(sdk_tags(tags))).send().await,
        )?;
        Ok(())
    }
}

/// `family` of `arn:aws:ecs:region:account:task-definition/family:revision`.
pub fn family_of(arn: &str) -> Option<&str> {
    arn.rsplit_once("task-definition/")?.1.rsplit_once(':').map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn family_of_arn() {
        assert_eq!(
            super::family_of("arn:aws:ecs:us-east-1:123456789012:task-definition/pc-defender:3"),
            Some("pc-defender")
        );
        assert_eq!(super::family_of("pc-defender"), None);
    }
}
