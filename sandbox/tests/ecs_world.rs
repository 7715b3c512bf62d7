//! The ECS world end to end, through the gate as the operator sees it: an Auto Scaling group whose
//! user data names the cluster yields registered container instances; a DAEMON service runs one
//! Defender per instance, connected in the Console simulator; a new revision rolls onto every
//! instance; wrong user data leaves the cluster empty.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use aws_sdk_ecs::types::{ContainerInstanceStatus, SchedulingStrategy};
use common::*;
use sandbox::{
    console::{ConsoleConfig, ConsoleSim},
    defender::{DefenderRegistry, DefenderStart},
    ecs_world::{EcsWorld, EcsWorldConfig},
};

const CLUSTER: &str = "pc-ecs-cluster";
const TIMEOUT: Duration = Duration::from_secs(20);

/// Records the Defenders the world announces.
#[derive(Default)]
struct Recorder {
    connected: Mutex<BTreeMap<String, DefenderStart>>,
    stopped: Mutex<Vec<String>>,
}

impl DefenderRegistry for Recorder {
    fn defender_started(&self, d: &DefenderStart) -> bool {
        self.connected.lock().unwrap().insert(d.instance_id.clone(), d.clone());
        true
    }

    fn defender_stopped(&self, instance_id: &str) {
        self.connected.lock().unwrap().remove(instance_id);
        self.stopped.lock().unwrap().push(instance_id.to_string());
    }
}

impl Recorder {
    fn connected(&self) -> Vec<DefenderStart> {
        self.connected.lock().unwrap().values().cloned().collect()
    }
}

async fn world(env: &Env, registries: Vec<Arc<dyn DefenderRegistry>>) -> EcsWorld {
    let cfg = EcsWorldConfig {
        boot_delay: Duration::from_millis(300),
        tick: Duration::from_millis(100),
        registries,
        ..EcsWorldConfig::new(env.moto.url())
    };
    EcsWorld::start(cfg).await.expect("the ECS world starts")
}

/// A launch template with `user_data` (base64) and an Auto Scaling group of `size` instances on it.
async fn workers(env: &Env, name: &str, user_data: &str, size: i32) {
    env.ec2
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(AMI)
                .instance_type("t2.medium".into())
                .user_data(user_data)
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    env.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(LaunchTemplateSpecification::builder().launch_template_name(name).version("$Latest").build())
        .availability_zones("us-east-1a")
        .min_size(1)
        .max_size(size)
        .desired_capacity(size)
        .send()
        .await
        .expect("CreateAutoScalingGroup");
}

async fn asg_instance_ids(env: &Env, name: &str) -> BTreeSet<String> {
    let resp = env.asg.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await.unwrap();
    resp.auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .filter_map(|i| i.instance_id())
        .map(str::to_string)
        .collect()
}

/// EC2 instance ids of the cluster's container instances.
async fn container_instances(env: &Env, cluster: &str) -> BTreeSet<String> {
    let arns =
        env.ecs.list_container_instances().cluster(cluster).send().await.unwrap().container_instance_arns().to_vec();
    if arns.is_empty() {
        return BTreeSet::new();
    }
    let resp = env.ecs.describe_container_instances().cluster(cluster).set_container_instances(Some(arns)).send().await;
    resp.unwrap().container_instances().iter().filter_map(|c| c.ec2_instance_id()).map(str::to_string).collect()
}

/// The Console's ECS task definition for `cluster_override`, registered in ECS through the gate
/// as the operator would; returns its ARN.
async fn console_task_definition(env: &Env, console: &ConsoleSim, cluster_override: &str) -> String {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let td: serde_json::Value = http
        .post(format!("{}/api/v1/defenders/ecs-task.json", console.url()))
        .basic_auth(console.username(), Some(console.password()))
        .json(&serde_json::json!({"consoleAddr": "127.0.0.1", "taskName": "pc-defender", "cluster": cluster_override}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("the Console generates the task definition")
        .json()
        .await
        .unwrap();
    // Signed for real: the gate checks signatures as AWS does.
    let (status, body) =
        signed_json(&env.gate.url(), "ecs", "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition", td).await;
    assert_eq!(status, 200, "RegisterTaskDefinition: {body}");
    let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
    resp["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_string()
}

/// The Console's Defender list, as the operator reads it.
async fn console_defenders(console: &ConsoleSim) -> Vec<serde_json::Value> {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let list: serde_json::Value = http
        .get(format!("{}/api/v1/defenders", console.url()))
        .basic_auth(console.username(), Some(console.password()))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    list.as_array().cloned().unwrap_or_default()
}

/// `(instance id, cluster)` of the Defenders the Console shows connected.
async fn connected_in_console(console: &ConsoleSim) -> BTreeSet<(String, String)> {
    console.defenders().into_iter().filter(|d| d.connected).map(|d| (d.instance_id, d.cluster)).collect()
}

/// Task definition ARNs of the service's RUNNING tasks, by container instance.
async fn service_tasks(env: &Env) -> Vec<(String, String)> {
    let arns = env
        .moto_ecs
        .list_tasks()
        .cluster(CLUSTER)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
        .send()
        .await;
    let arns = arns.unwrap().task_arns().to_vec();
    if arns.is_empty() {
        return vec![];
    }
    let resp = env.moto_ecs.describe_tasks().cluster(CLUSTER).set_tasks(Some(arns)).send().await.unwrap();
    resp.tasks()
        .iter()
        .filter(|t| t.group() == Some("service:pc-defender") && t.last_status() == Some("RUNNING"))
        .map(|t| (t.container_instance_arn().unwrap().to_string(), t.task_definition_arn().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn auto_scaling_workers_join_and_run_one_connected_defender_each() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.expect("the Console simulator starts");
    let recorder = Arc::new(Recorder::default());
    let _world = world(&env, vec![recorder.clone(), Arc::new(console.clone())]).await;

    // Worker nodes: the ASG's instances register in the cluster their user data names.
    create_cluster(&env.ecs, CLUSTER).await;
    workers(&env, "pc-worker-node", &user_data_for(CLUSTER), 2).await;
    let asg_instances = asg_instance_ids(&env, "pc-worker-node").await;
    assert_eq!(asg_instances.len(), 2);
    let registered = wait_for(TIMEOUT, "2 container instances", || async {
        Some(container_instances(&env, CLUSTER).await).filter(|c| c.len() == 2)
    })
    .await;
    assert_eq!(registered, asg_instances, "exactly the ASG's instances joined");

    // The Defender service: one task per instance, each a connected Defender.
    let td1 = console_task_definition(&env, &console, "").await;
    let created = env
        .ecs
        .create_service()
        .cluster(CLUSTER)
        .service_name("pc-defender")
        .task_definition("pc-defender")
        .scheduling_strategy(SchedulingStrategy::Daemon)
        .client_token("pc-defender-1")
        .send()
        .await
        .expect("CreateService");
    assert_eq!(created.service().unwrap().task_definition(), Some(td1.as_str()));
    let svc = wait_for(TIMEOUT, "the DAEMON service to run 2 tasks", || async {
        let s = describe_service(&env.ecs, CLUSTER, "pc-defender").await;
        let done = s.running_count() == 2
            && s.deployments().first().and_then(|d| d.rollout_state()).map(|r| r.as_str()) == Some("COMPLETED");
        done.then_some(s)
    })
    .await;
    assert_eq!(svc.desired_count(), 2);
    let tasks = service_tasks(&env).await;
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks.iter().map(|(ci, _)| ci).collect::<BTreeSet<_>>().len(), 2, "one per instance: {tasks:?}");

    let defenders =
        wait_for(TIMEOUT, "2 Defenders announced", || async { Some(recorder.connected()).filter(|d| d.len() == 2) })
            .await;
    for d in &defenders {
        assert!(asg_instances.contains(&d.instance_id));
        assert_eq!(
            (d.cluster.as_str(), d.region.as_str(), d.instance_type.as_str()),
            (CLUSTER, "us-east-1", "t2.medium")
        );
        assert!(d.hostname.ends_with(".internal"), "{d:?}");
        assert!(d.ws_address.as_deref().is_some_and(|w| w.contains("127.0.0.1")), "{d:?}");
    }
    let expected: BTreeSet<(String, String)> = asg_instances.iter().map(|i| (i.clone(), CLUSTER.to_string())).collect();
    assert_eq!(connected_in_console(&console).await, expected, "connected in the Console");
    let listed = console_defenders(&console).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|d| d["connected"] == true), "{listed:?}");

    // A new revision (the cluster name overridden) rolls onto every instance.
    let td2 = console_task_definition(&env, &console, "renamed").await;
    let updated =
        env.ecs.update_service().cluster(CLUSTER).service("pc-defender").task_definition("pc-defender:2").send().await;
    let svc = updated.expect("UpdateService").service().unwrap().clone();
    let deployments: Vec<_> = svc
        .deployments()
        .iter()
        .map(|d| (d.status().unwrap(), d.task_definition().unwrap(), d.rollout_state().unwrap().as_str()))
        .collect();
    assert_eq!(deployments, vec![("PRIMARY", td2.as_str(), "IN_PROGRESS"), ("ACTIVE", td1.as_str(), "COMPLETED")]);
    wait_for(TIMEOUT, "the rollout to complete", || async {
        let s = describe_service(&env.ecs, CLUSTER, "pc-defender").await;
        let d = s.deployments();
        (d.len() == 1 && d[0].rollout_state().map(|r| r.as_str()) == Some("COMPLETED") && s.running_count() == 2)
            .then_some(())
    })
    .await;
    let tasks = service_tasks(&env).await;
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|(_, td)| *td == td2), "every instance on the new revision: {tasks:?}");
    let expected: BTreeSet<(String, String)> =
        asg_instances.iter().map(|i| (i.clone(), "renamed".to_string())).collect();
    wait_for(TIMEOUT, "the new Defenders in the Console", || async {
        (connected_in_console(&console).await == expected).then_some(())
    })
    .await;

    // A DRAINING container instance loses its Defender; back to ACTIVE, it gets one again.
    let drained =
        env.ecs.list_container_instances().cluster(CLUSTER).send().await.unwrap().container_instance_arns()[0].clone();
    let set_state = |state: ContainerInstanceStatus| {
        env.ecs.update_container_instances_state().cluster(CLUSTER).container_instances(&drained).status(state).send()
    };
    set_state(ContainerInstanceStatus::Draining).await.unwrap();
    wait_for(TIMEOUT, "the drained instance's task to stop", || async {
        let s = describe_service(&env.ecs, CLUSTER, "pc-defender").await;
        let tasks = service_tasks(&env).await;
        (s.desired_count() == 1 && s.running_count() == 1 && tasks.iter().all(|(ci, _)| *ci != drained)).then_some(())
    })
    .await;
    wait_for(TIMEOUT, "one Defender disconnected", || async {
        (connected_in_console(&console).await.len() == 1).then_some(())
    })
    .await;
    set_state(ContainerInstanceStatus::Active).await.unwrap();
    wait_for(TIMEOUT, "two Defenders again", || async {
        (connected_in_console(&console).await == expected).then_some(())
    })
    .await;

    // Deleting the service stops the Defenders; DRAINING, then INACTIVE.
    let deleted = env.ecs.delete_service().cluster(CLUSTER).service("pc-defender").send().await.unwrap();
    assert_eq!(deleted.service().unwrap().status(), Some("DRAINING"));
    wait_for(TIMEOUT, "the service to be INACTIVE", || async {
        (describe_service(&env.ecs, CLUSTER, "pc-defender").await.status() == Some("INACTIVE")).then_some(())
    })
    .await;
    wait_for(TIMEOUT, "the Defenders to disconnect", || async {
        (recorder.connected().is_empty() && connected_in_console(&console).await.is_empty()).then_some(())
    })
    .await;

    // Terminated instances leave the cluster; then the cluster can go.
    env.asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name("pc-worker-node")
        .force_delete(true)
        .send()
        .await
        .unwrap();
    wait_for(TIMEOUT, "the container instances to leave", || async {
        container_instances(&env, CLUSTER).await.is_empty().then_some(())
    })
    .await;
    env.ecs.delete_cluster().cluster(CLUSTER).send().await.expect("an empty cluster is deleted");
}

#[tokio::test]
async fn wrong_user_data_never_joins_the_cluster() {
    let env = start().await;
    let recorder = Arc::new(Recorder::default());
    let world = world(&env, vec![recorder.clone()]).await;
    create_cluster(&env.ecs, CLUSTER).await;
    workers(&env, "pc-worker-node", &user_data_for("pc-ecs-clstr"), 2).await;
    assert_eq!(asg_instance_ids(&env, "pc-worker-node").await.len(), 2);

    // Long enough for every agent to boot (300 ms) and try to register several times.
    let start = world.rounds();
    wait_for(TIMEOUT, "10 rounds of the ECS world", || async { (world.rounds() >= start + 10).then_some(()) }).await;
    assert!(container_instances(&env, CLUSTER).await.is_empty(), "nothing joins a cluster the user data does not name");
    let cluster = env.ecs.describe_clusters().clusters(CLUSTER).send().await.unwrap().clusters()[0].clone();
    assert_eq!(cluster.registered_container_instances_count(), 0);

    // The agents keep trying the name they were given: once that cluster exists, they join it.
    create_cluster(&env.ecs, "pc-ecs-clstr").await;
    wait_for(TIMEOUT, "the instances in the cluster their user data names", || async {
        (container_instances(&env, "pc-ecs-clstr").await.len() == 2).then_some(())
    })
    .await;
    assert!(container_instances(&env, CLUSTER).await.is_empty());
}
