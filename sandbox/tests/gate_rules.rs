//! The AWS rules the gate adds to moto, each seen through the AWS SDK for Rust as AWS would answer.
//! Every test fails against bare moto; where cheap, the test shows moto's own (wrong) answer too.

mod common;

use std::time::Duration;

use aws_sdk_autoscaling::{
    operation::{
        create_auto_scaling_group::CreateAutoScalingGroupError, delete_auto_scaling_group::DeleteAutoScalingGroupError,
        delete_launch_configuration::DeleteLaunchConfigurationError,
    },
    types::LaunchTemplateSpecification,
};
use aws_sdk_ecs::{
    error::ProvideErrorMetadata,
    operation::{
        create_service::CreateServiceError, delete_cluster::DeleteClusterError, update_service::UpdateServiceError,
    },
    types::{DeploymentConfiguration, LaunchType, SchedulingStrategy},
};
use common::*;

const CLUSTER: &str = "pc-ecs-cluster";

fn daemon(
    env: &Env,
    name: &str,
    td: &str,
) -> aws_sdk_ecs::operation::create_service::builders::CreateServiceFluentBuilder {
    env.ecs
        .create_service()
        .cluster(CLUSTER)
        .service_name(name)
        .task_definition(td)
        .scheduling_strategy(SchedulingStrategy::Daemon)
}

#[tokio::test]
async fn daemon_service_refuses_desired_count_on_create_and_update() {
    let env = start().await;
    create_cluster(&env.ecs, CLUSTER).await;
    register_task_definition(&env.ecs, "pc-defender", &[]).await;

    let err = daemon(&env, "pc-defender", "pc-defender").desired_count(2).send().await.unwrap_err();
    let err = err.into_service_error();
    assert!(matches!(err, CreateServiceError::InvalidParameterException(_)), "{err:?}");
    assert!(err.message().unwrap().starts_with("The daemon scheduling strategy does not support a desired count"));

    daemon(&env, "pc-defender", "pc-defender").send().await.expect("a DAEMON service without desiredCount");
    let err =
        env.ecs.update_service().cluster(CLUSTER).service("pc-defender").desired_count(3).send().await.unwrap_err();
    assert!(matches!(err.as_service_error(), Some(UpdateServiceError::InvalidParameterException(_))), "{err:?}");

    // Bare moto accepts it.
    env.moto_ecs.update_service().cluster(CLUSTER).service("pc-defender").desired_count(3).send().await.unwrap();
}

#[tokio::test]
async fn daemon_service_refuses_maximum_percent_above_100() {
    let env = start().await;
    create_cluster(&env.ecs, CLUSTER).await;
    register_task_definition(&env.ecs, "pc-defender", &[]).await;
    let config = |max| DeploymentConfiguration::builder().maximum_percent(max).minimum_healthy_percent(0).build();

    let err =
        daemon(&env, "pc-defender", "pc-defender").deployment_configuration(config(200)).send().await.unwrap_err();
    let err = err.into_service_error();
    assert!(matches!(err, CreateServiceError::InvalidParameterException(_)), "{err:?}");
    assert!(err.message().unwrap().contains("does not support values above 100 for maximumPercent"));

    daemon(&env, "pc-defender", "pc-defender").deployment_configuration(config(100)).send().await.unwrap();
    let err = env
        .ecs
        .update_service()
        .cluster(CLUSTER)
        .service("pc-defender")
        .deployment_configuration(config(150))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err.as_service_error(), Some(UpdateServiceError::InvalidParameterException(_))), "{err:?}");
}

#[tokio::test]
async fn create_service_on_an_active_name_is_refused_unless_the_client_token_repeats() {
    let env = start().await;
    create_cluster(&env.ecs, CLUSTER).await;
    register_task_definition(&env.ecs, "pc-defender", &[]).await;

    let first = daemon(&env, "pc-defender", "pc-defender").client_token("token-1").send().await.unwrap();
    let first_arn = first.service().unwrap().service_arn().unwrap().to_string();

    let again = daemon(&env, "pc-defender", "pc-defender").client_token("token-1").send().await.unwrap();
    assert_eq!(again.service().unwrap().service_arn(), Some(first_arn.as_str()), "a retry returns the service");

    for token in [Some("token-2"), None] {
        let err = daemon(&env, "pc-defender", "pc-defender").set_client_token(token.map(str::to_string)).send().await;
        let err = err.unwrap_err().into_service_error();
        assert!(matches!(err, CreateServiceError::InvalidParameterException(_)), "{err:?}");
        assert_eq!(err.message(), Some("Creation of service was not idempotent."));
    }
    // Bare moto silently replaces the service.
    env.moto_ecs
        .create_service()
        .cluster(CLUSTER)
        .service_name("pc-defender")
        .task_definition("pc-defender")
        .scheduling_strategy(SchedulingStrategy::Daemon)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn delete_cluster_is_refused_while_services_instances_or_tasks_remain() {
    let env = start_with(|c| c.draining_min = Duration::ZERO).await;
    create_cluster(&env.ecs, CLUSTER).await;
    let td = register_task_definition(&env.ecs, "pc-defender", &[]).await;
    daemon(&env, "pc-defender", "pc-defender").send().await.unwrap();

    let code = |e: aws_sdk_ecs::error::SdkError<DeleteClusterError>| e.into_service_error();
    let err = code(env.ecs.delete_cluster().cluster(CLUSTER).send().await.unwrap_err());
    assert!(matches!(err, DeleteClusterError::ClusterContainsServicesException(_)), "{err:?}");
    assert_eq!(err.message(), Some("The Cluster cannot be deleted while Services are active."));

    env.ecs.delete_service().cluster(CLUSTER).service("pc-defender").send().await.unwrap();
    let ci = register_instance(&env, CLUSTER).await;
    let err = code(env.ecs.delete_cluster().cluster(CLUSTER).send().await.unwrap_err());
    assert!(matches!(err, DeleteClusterError::ClusterContainsContainerInstancesException(_)), "{err:?}");

    env.moto_ecs.deregister_container_instance().cluster(CLUSTER).container_instance(&ci).send().await.unwrap();
    // A task without container instances (Fargate) still blocks deletion.
    let run =
        env.moto_ecs.run_task().cluster(CLUSTER).task_definition(&td).launch_type(LaunchType::Fargate).send().await;
    let task = run.unwrap().tasks()[0].task_arn().unwrap().to_string();
    let err = code(env.ecs.delete_cluster().cluster(CLUSTER).send().await.unwrap_err());
    assert!(matches!(err, DeleteClusterError::ClusterContainsTasksException(_)), "{err:?}");

    env.ecs.stop_task().cluster(CLUSTER).task(&task).send().await.unwrap();
    let deleted = env.ecs.delete_cluster().cluster(CLUSTER).send().await.expect("an empty cluster is deleted");
    assert_eq!(deleted.cluster().unwrap().status(), Some("INACTIVE"));
}

#[tokio::test]
async fn update_and_delete_of_a_deleted_service_are_refused() {
    let env = start_with(|c| c.draining_min = Duration::ZERO).await;
    create_cluster(&env.ecs, CLUSTER).await;
    register_task_definition(&env.ecs, "pc-defender", &[]).await;
    daemon(&env, "pc-defender", "pc-defender").send().await.unwrap();
    env.ecs.delete_service().cluster(CLUSTER).service("pc-defender").send().await.unwrap();

    let err = env.ecs.delete_service().cluster(CLUSTER).service("pc-defender").send().await.unwrap_err();
    // DeleteService does not model the exception; the SDK reports it by its code.
    assert_eq!(err.code(), Some("ServiceNotActiveException"), "{err:?}");
    assert_eq!(err.message(), Some("Service was not ACTIVE."));
    let err = env.ecs.update_service().cluster(CLUSTER).service("pc-defender").force_new_deployment(true).send().await;
    assert!(matches!(err.unwrap_err().as_service_error(), Some(UpdateServiceError::ServiceNotActiveException(_))));
    assert_eq!(describe_service(&env.ecs, CLUSTER, "pc-defender").await.status(), Some("INACTIVE"));

    // Bare moto deletes it again without complaint.
    env.moto_ecs.delete_service().cluster(CLUSTER).service("pc-defender").send().await.unwrap();
}

#[tokio::test]
async fn deleted_service_drains_while_its_tasks_stop_then_goes_inactive() {
    let env = start_with(|c| c.draining_min = Duration::ZERO).await;
    create_cluster(&env.ecs, CLUSTER).await;
    let td = register_task_definition(&env.ecs, "pc-defender", &[]).await;
    daemon(&env, "pc-defender", "pc-defender").send().await.unwrap();
    let ci = register_instance(&env, CLUSTER).await;
    let task = start_service_task(&env, CLUSTER, "pc-defender", &td, &ci).await;

    let deleted = env.ecs.delete_service().cluster(CLUSTER).service("pc-defender").send().await.unwrap();
    assert_eq!(deleted.service().unwrap().status(), Some("DRAINING"));
    // Only the task keeps it DRAINING (draining_min is zero here).
    assert_eq!(describe_service(&env.ecs, CLUSTER, "pc-defender").await.status(), Some("DRAINING"));
    // The race of re-creating a service right after deleting it.
    let err = daemon(&env, "pc-defender", "pc-defender").send().await.unwrap_err().into_service_error();
    assert_eq!(err.message(), Some("Creation of service was not idempotent."));
    // moto itself says INACTIVE at once.
    assert_eq!(describe_service(&env.moto_ecs, CLUSTER, "pc-defender").await.status(), Some("INACTIVE"));

    env.moto_ecs.stop_task().cluster(CLUSTER).task(&task).send().await.unwrap();
    assert_eq!(describe_service(&env.ecs, CLUSTER, "pc-defender").await.status(), Some("INACTIVE"));
    let again = daemon(&env, "pc-defender", "pc-defender").send().await.expect("re-created once INACTIVE");
    assert_eq!(again.service().unwrap().status(), Some("ACTIVE"));
}

async fn launch_template(env: &Env, name: &str) {
    use aws_sdk_ec2::types::RequestLaunchTemplateData;
    env.ec2
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            RequestLaunchTemplateData::builder().image_id(AMI).instance_type("t2.medium".into()).build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
}

fn create_asg(
    env: &Env,
    name: &str,
    min: i32,
    max: i32,
    desired: i32,
) -> aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder {
    env.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            LaunchTemplateSpecification::builder().launch_template_name("pc-worker-node").version("$Latest").build(),
        )
        .availability_zones("us-east-1a")
        .min_size(min)
        .max_size(max)
        .desired_capacity(desired)
}

#[tokio::test]
async fn duplicate_auto_scaling_group_is_refused() {
    let env = start().await;
    launch_template(&env, "pc-worker-node").await;
    create_asg(&env, "pc-worker-autoscaling", 1, 2, 2).send().await.unwrap();
    let err = create_asg(&env, "pc-worker-autoscaling", 1, 2, 2).send().await.unwrap_err();
    assert_eq!(err.code(), Some("AlreadyExists"));
    let err = err.into_service_error();
    assert!(matches!(err, CreateAutoScalingGroupError::AlreadyExistsFault(_)), "{err:?}");
    assert!(err.message().unwrap().contains("already exists"));
}

#[tokio::test]
async fn auto_scaling_group_with_instances_is_deleted_only_with_force() {
    let env = start().await;
    launch_template(&env, "pc-worker-node").await;
    create_asg(&env, "pc-worker-autoscaling", 1, 2, 2).send().await.unwrap();
    let err = env.asg.delete_auto_scaling_group().auto_scaling_group_name("pc-worker-autoscaling").send().await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUse"));
    assert!(matches!(err.into_service_error(), DeleteAutoScalingGroupError::ResourceInUseFault(_)));
    env.asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name("pc-worker-autoscaling")
        .force_delete(true)
        .send()
        .await
        .expect("ForceDelete deletes it");
}

#[tokio::test]
async fn auto_scaling_group_sizes_are_validated() {
    let env = start().await;
    launch_template(&env, "pc-worker-node").await;
    let err = create_asg(&env, "bad-bounds", 3, 2, 2).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    assert_eq!(err.message(), Some("Max bound, 2, must be greater than or equal to min bound, 3"));
    let err = create_asg(&env, "bad-desired", 1, 2, 5).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    assert_eq!(err.message(), Some("Desired capacity:5 must be between the specified min size:1 and max size:2"));

    create_asg(&env, "pc-worker-autoscaling", 1, 2, 1).send().await.unwrap();
    let update = || env.asg.update_auto_scaling_group().auto_scaling_group_name("pc-worker-autoscaling");
    let err = update().min_size(3).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"), "new min above the current max");
    let err = update().desired_capacity(4).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    let err = env
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name("pc-worker-autoscaling")
        .desired_capacity(9)
        .send()
        .await;
    assert_eq!(err.unwrap_err().code(), Some("ValidationError"));
    update().min_size(2).max_size(3).desired_capacity(3).send().await.expect("valid sizes pass");
}

#[tokio::test]
async fn launch_configuration_in_use_is_not_deleted() {
    let env = start().await;
    env.asg
        .create_launch_configuration()
        .launch_configuration_name("pc-worker-node")
        .image_id(AMI)
        .instance_type("t2.medium")
        .send()
        .await
        .unwrap();
    env.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("pc-worker-autoscaling")
        .launch_configuration_name("pc-worker-node")
        .availability_zones("us-east-1a")
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .send()
        .await
        .unwrap();
    let err =
        env.asg.delete_launch_configuration().launch_configuration_name("pc-worker-node").send().await.unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUse"));
    assert_eq!(
        err.message(),
        Some(
            "Cannot delete launch configuration pc-worker-node because it is attached to AutoScalingGroup pc-worker-autoscaling."
        )
    );
    assert!(matches!(err.into_service_error(), DeleteLaunchConfigurationError::ResourceInUseFault(_)));
    env.asg.delete_auto_scaling_group().auto_scaling_group_name("pc-worker-autoscaling").send().await.unwrap();
    env.asg.delete_launch_configuration().launch_configuration_name("pc-worker-node").send().await.expect("unused now");
}

#[tokio::test]
async fn daemon_services_show_counts_deployments_and_task_definition_arns() {
    let env = start().await;
    create_cluster(&env.ecs, CLUSTER).await;
    let td1 = register_task_definition(&env.ecs, "pc-defender", &[]).await;
    let td2 = register_task_definition(&env.ecs, "pc-defender", &[("X", "2")]).await;

    let created = daemon(&env, "pc-defender", "pc-defender:1").send().await.unwrap();
    let svc = created.service().unwrap();
    assert_eq!(svc.task_definition(), Some(td1.as_str()), "a full ARN, not moto's raw 'pc-defender:1'");
    assert_eq!(svc.deployments().len(), 1);
    assert_eq!(svc.deployments()[0].status(), Some("PRIMARY"));
    assert_eq!(svc.deployments()[0].rollout_state().map(|s| s.as_str()), Some("IN_PROGRESS"));

    let cis = [register_instance(&env, CLUSTER).await, register_instance(&env, CLUSTER).await];
    let svc = describe_service(&env.ecs, CLUSTER, "pc-defender").await;
    assert_eq!((svc.desired_count(), svc.running_count()), (2, 0));
    assert_eq!(svc.deployments()[0].rollout_state().map(|s| s.as_str()), Some("IN_PROGRESS"));
    let moto_svc = describe_service(&env.moto_ecs, CLUSTER, "pc-defender").await;
    assert_eq!(moto_svc.desired_count(), 0, "moto's own view");

    let old: Vec<String> = {
        let mut v = Vec::new();
        for ci in &cis {
            v.push(start_service_task(&env, CLUSTER, "pc-defender", &td1, ci).await);
        }
        v
    };
    let svc = describe_service(&env.ecs, CLUSTER, "pc-defender").await;
    assert_eq!((svc.desired_count(), svc.running_count()), (2, 2));
    assert_eq!(svc.deployments()[0].rollout_state().map(|s| s.as_str()), Some("COMPLETED"));

    // A new revision: a new PRIMARY deployment, the old one ACTIVE until its tasks are replaced.
    let updated =
        env.ecs.update_service().cluster(CLUSTER).service("pc-defender").task_definition("pc-defender:2").send().await;
    let svc = updated.unwrap().service().unwrap().clone();
    assert_eq!(svc.task_definition(), Some(td2.as_str()));
    let states: Vec<_> = svc
        .deployments()
        .iter()
        .map(|d| (d.status().unwrap().to_string(), d.task_definition().unwrap().to_string()))
        .collect();
    assert_eq!(states, vec![("PRIMARY".to_string(), td2.clone()), ("ACTIVE".to_string(), td1.clone())]);
    assert_eq!(svc.deployments()[0].rollout_state().map(|s| s.as_str()), Some("IN_PROGRESS"));

    for (ci, task) in cis.iter().zip(&old) {
        env.moto_ecs.stop_task().cluster(CLUSTER).task(task).send().await.unwrap();
        start_service_task(&env, CLUSTER, "pc-defender", &td2, ci).await;
    }
    let svc = describe_service(&env.ecs, CLUSTER, "pc-defender").await;
    assert_eq!(svc.deployments().len(), 1, "the old deployment is gone");
    assert_eq!(svc.deployments()[0].rollout_state().map(|s| s.as_str()), Some("COMPLETED"));
    assert_eq!((svc.desired_count(), svc.running_count()), (2, 2));
}

#[tokio::test]
async fn create_cluster_on_an_existing_name_keeps_it() {
    use aws_sdk_ecs::types::{ClusterSetting, ClusterSettingName, Tag};
    let env = start().await;
    env.ecs
        .create_cluster()
        .cluster_name(CLUSTER)
        .tags(Tag::builder().key("owner").value("me").build())
        .settings(ClusterSetting::builder().name(ClusterSettingName::ContainerInsights).value("enabled").build())
        .send()
        .await
        .unwrap();
    let again = env.ecs.create_cluster().cluster_name(CLUSTER).send().await.unwrap();
    let c = again.cluster().unwrap();
    assert_eq!(c.settings().first().and_then(|s| s.value()), Some("enabled"), "{c:?}");
}

#[tokio::test]
async fn cluster_counts_are_exact() {
    let env = start().await;
    create_cluster(&env.ecs, CLUSTER).await;
    let td = register_task_definition(&env.ecs, "pc-defender", &[]).await;
    daemon(&env, "pc-defender", "pc-defender").send().await.unwrap();
    let cis = [register_instance(&env, CLUSTER).await, register_instance(&env, CLUSTER).await];
    let tasks = [
        start_service_task(&env, CLUSTER, "pc-defender", &td, &cis[0]).await,
        start_service_task(&env, CLUSTER, "pc-defender", &td, &cis[1]).await,
    ];
    env.moto_ecs.stop_task().cluster(CLUSTER).task(&tasks[1]).send().await.unwrap();
    env.moto_ecs.deregister_container_instance().cluster(CLUSTER).container_instance(&cis[1]).send().await.unwrap();

    let counts = |c: &aws_sdk_ecs::types::Cluster| {
        (c.registered_container_instances_count(), c.running_tasks_count(), c.active_services_count())
    };
    let through = env.ecs.describe_clusters().clusters(CLUSTER).send().await.unwrap();
    assert_eq!(counts(&through.clusters()[0]), (1, 1, 1));
    // moto's own counters drift.
    let bare = env.moto_ecs.describe_clusters().clusters(CLUSTER).send().await.unwrap();
    assert_ne!(counts(&bare.clusters()[0]), (1, 1, 1));
}

#[tokio::test]
async fn list_tasks_sees_only_the_named_cluster_even_when_names_share_a_prefix() {
    let env = start().await;
    let td = register_task_definition(&env.ecs, "pc-defender", &[]).await;
    let mut tasks = std::collections::BTreeMap::new();
    for cluster in ["saas", "saassi"] {
        create_cluster(&env.ecs, cluster).await;
        let ci = register_instance(&env, cluster).await;
        tasks.insert(cluster, start_service_task(&env, cluster, "pc-defender", &td, &ci).await);
    }
    let listed = env.ecs.list_tasks().cluster("saas").send().await.unwrap();
    assert_eq!(listed.task_arns(), [tasks["saas"].clone()]);
    let listed = env.ecs.list_tasks().cluster("saassi").send().await.unwrap();
    assert_eq!(listed.task_arns(), [tasks["saassi"].clone()]);
    // moto matches the cluster by substring: `saas` also sees `saassi`'s task.
    let bare = env.moto_ecs.list_tasks().cluster("saas").send().await.unwrap();
    assert_eq!(bare.task_arns().len(), 2);
}

#[tokio::test]
async fn container_secrets_without_an_execution_role_are_refused() {
    use aws_sdk_ecs::types::{ContainerDefinition, Secret};
    let env = start().await;
    let container = || {
        ContainerDefinition::builder()
            .name("d")
            .image("registry.example.com/defender:1")
            .memory(256)
            .secrets(
                Secret::builder()
                    .name("INSTALL_BUNDLE")
                    .value_from("arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf")
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let err =
        env.ecs.register_task_definition().family("d").container_definitions(container()).send().await.unwrap_err();
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("ClientException"), "{err:?}");
    assert!(err.message().unwrap().contains("'executionRoleArn'"), "{err:?}");
    env.ecs
        .register_task_definition()
        .family("d")
        .execution_role_arn("arn:aws:iam::123456789012:role/reader")
        .container_definitions(container())
        .send()
        .await
        .expect("with an execution role");
    // Bare moto accepts it.
    env.moto_ecs.register_task_definition().family("d").container_definitions(container()).send().await.unwrap();
}
