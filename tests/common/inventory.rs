//! What is in the sandbox's AWS, counted the way a person checking for leftovers would.

/// Counts of live AWS resources of the kinds the operator creates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// ACTIVE clusters.
    pub clusters: usize,
    pub launch_templates: usize,
    pub launch_configurations: usize,
    /// Groups not being deleted.
    pub auto_scaling_groups: usize,
    /// ACTIVE revisions.
    pub task_definitions: usize,
    /// ACTIVE services in ACTIVE clusters.
    pub services: usize,
    /// Secrets not scheduled for deletion.
    pub secrets: usize,
    /// Roles under the operator's path.
    pub roles: usize,
}

impl Inventory {
    pub async fn read(config: &aws_config::SdkConfig) -> Inventory {
        let aws = sandbox::world::AwsClientsForTests::new(config);
        let arns = aws.ecs.list_clusters().send().await.unwrap().cluster_arns().to_vec();
        let clusters = if arns.is_empty() {
            vec![]
        } else {
            aws.ecs.describe_clusters().set_clusters(Some(arns)).send().await.unwrap().clusters().to_vec()
        };
        let active: Vec<String> = clusters
            .iter()
            .filter(|c| c.status() == Some("ACTIVE"))
            .filter_map(|c| c.cluster_name().map(str::to_string))
            .collect();
        let mut services = 0;
        for cluster in &active {
            let arns = aws.ecs.list_services().cluster(cluster).send().await.unwrap().service_arns().to_vec();
            if !arns.is_empty() {
                let out = aws.ecs.describe_services().cluster(cluster).set_services(Some(arns)).send().await.unwrap();
                services += out.services().iter().filter(|s| s.status() == Some("ACTIVE")).count();
            }
        }
        let groups = aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap();
        let secrets = aws.secretsmanager.list_secrets().send().await.unwrap();
        let roles = aws.iam.list_roles().path_prefix("/ecs-defender/").send().await.unwrap();
        let launch_configurations = aws.autoscaling.describe_launch_configurations().send().await.unwrap();
        let task_definitions = aws
            .ecs
            .list_task_definitions()
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap();
        Inventory {
            clusters: active.len(),
            launch_templates: aws.ec2.describe_launch_templates().send().await.unwrap().launch_templates().len(),
            launch_configurations: launch_configurations.launch_configurations().len(),
            auto_scaling_groups: groups.auto_scaling_groups().iter().filter(|g| g.status().is_none()).count(),
            task_definitions: task_definitions.task_definition_arns().len(),
            services,
            secrets: secrets.secret_list().iter().filter(|s| s.deleted_date().is_none()).count(),
            roles: roles.roles().len(),
        }
    }

    /// What one Ready resource with a launch template and Secrets Manager storage owns.
    pub fn one() -> Inventory {
        Self::one_of(ecs_defender_operator::crd::WorkerKind::LaunchTemplate)
    }

    /// What one Ready resource with workers of `kind` and Secrets Manager storage owns.
    pub fn one_of(kind: ecs_defender_operator::crd::WorkerKind) -> Inventory {
        let lt = kind == ecs_defender_operator::crd::WorkerKind::LaunchTemplate;
        Inventory {
            clusters: 1,
            launch_templates: usize::from(lt),
            launch_configurations: usize::from(!lt),
            auto_scaling_groups: 1,
            task_definitions: 1,
            services: 1,
            secrets: 1,
            roles: 1,
        }
    }
}
