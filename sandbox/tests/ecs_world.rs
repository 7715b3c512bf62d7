//! The ECS world end to end, through the gate as the operator sees it: an Auto Scaling group whose
//! user data names the cluster yields registered container instances; a DAEMON service runs one
//! Defender per instance, connected in the Console simulator; a new revision rolls onto every
//! instance; wrong user data leaves the cluster empty. The strict rules (issue 9): only instances
//! that reach the internet register; placement honours memory and the agent; images that cannot
//! be pulled stop tasks; terminated instances leave and their replacements join; clusters whose
//! names share a prefix do not see each other's tasks. Secrets (issue 14): a task's
//! `secrets[].valueFrom` is fetched from Secrets Manager with its execution role before it starts
//! (a wrong ARN or a role without the permission stops it with `ResourceInitializationError`), and
//! the Defender connects with the bundle fetched.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{
    Filter, LaunchTemplateInstanceNetworkInterfaceSpecificationRequest, RequestLaunchTemplateData,
};
use aws_sdk_ecs::types::{ContainerInstanceStatus, SchedulingStrategy};
use common::*;
use sandbox::{
    console::{ConsoleConfig, ConsoleSim},
    defender::{DefenderRegistry, DefenderStart},
    ecs_world::{ClusterFaults, EcsWorld, EcsWorldConfig},
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
    Workers::new(name, user_data, size).create(env).await;
}

/// Worker nodes as the operator makes them, with the knobs the strict rules look at.
struct Workers {
    name: String,
    user_data: String,
    size: i32,
    instance_type: &'static str,
    /// The launch template's `AssociatePublicIpAddress` (unset: the subnet decides).
    public_ip: Option<bool>,
    /// `None`: an availability zone of the default VPC.
    subnet: Option<String>,
}

impl Workers {
    fn new(name: &str, user_data: &str, size: i32) -> Workers {
        Workers {
            name: name.into(),
            user_data: user_data.into(),
            size,
            instance_type: "t2.medium",
            public_ip: None,
            subnet: None,
        }
    }

    async fn create(&self, env: &Env) {
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(AMI)
            .instance_type(self.instance_type.into())
            .user_data(&self.user_data);
        if let Some(p) = self.public_ip {
            data = data.network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(p)
                    .build(),
            );
        }
        env.ec2
            .create_launch_template()
            .launch_template_name(&self.name)
            .launch_template_data(data.build())
            .send()
            .await
            .expect("CreateLaunchTemplate");
        let mut asg = env
            .asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(&self.name)
            .launch_template(
                LaunchTemplateSpecification::builder().launch_template_name(&self.name).version("$Latest").build(),
            )
            .min_size(1)
            .max_size(self.size)
            .desired_capacity(self.size);
        asg = match &self.subnet {
            Some(s) => asg.vpc_zone_identifier(s),
            None => asg.availability_zones("us-east-1a"),
        };
        asg.send().await.expect("CreateAutoScalingGroup");
    }
}

/// Waits `n` rounds of the world (enough for every agent to boot and try to register).
async fn rounds(world: &EcsWorld, n: u64) {
    let start = world.rounds();
    wait_for(TIMEOUT, "rounds of the ECS world", || async { (world.rounds() >= start + n).then_some(()) }).await;
}

/// The DAEMON service `pc-defender` on the Console's task definition.
async fn defender_service(env: &Env, console: &ConsoleSim, cluster: &str) {
    console_task_definition(env, console, "").await;
    env.ecs
        .create_service()
        .cluster(cluster)
        .service_name("pc-defender")
        .task_definition("pc-defender")
        .scheduling_strategy(SchedulingStrategy::Daemon)
        .send()
        .await
        .expect("CreateService");
}

/// (container instance, last status, stopped reason) of every task of `cluster` moto holds.
async fn all_tasks(env: &Env, cluster: &str) -> Vec<(String, String, String)> {
    let mut arns = Vec::new();
    for status in [aws_sdk_ecs::types::DesiredStatus::Running, aws_sdk_ecs::types::DesiredStatus::Stopped] {
        let resp = env.moto_ecs.list_tasks().cluster(cluster).desired_status(status).send().await.unwrap();
        arns.extend(resp.task_arns().iter().filter(|a| a.contains(&format!("/{cluster}/"))).cloned());
    }
    if arns.is_empty() {
        return vec![];
    }
    let resp = env.moto_ecs.describe_tasks().cluster(cluster).set_tasks(Some(arns)).send().await.unwrap();
    resp.tasks()
        .iter()
        .map(|t| {
            (
                t.container_instance_arn().unwrap_or_default().to_string(),
                t.last_status().unwrap_or_default().to_string(),
                t.stopped_reason().unwrap_or_default().to_string(),
            )
        })
        .collect()
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

#[tokio::test]
async fn only_instances_that_reach_the_internet_register() {
    let env = start().await;
    let world = world(&env, vec![]).await;
    create_cluster(&env.ecs, CLUSTER).await;

    // The default VPC, the launch template silent: the subnet's MapPublicIpOnLaunch gives a public
    // IP and the default VPC's internet gateway a way out. An explicit `false` (what the operator
    // used to send) leaves the instance without one: the default VPC has no NAT.
    Workers::new("public", &user_data_for(CLUSTER), 1).create(&env).await;
    Workers { public_ip: Some(false), ..Workers::new("private", &user_data_for(CLUSTER), 1) }.create(&env).await;
    let public = asg_instance_ids(&env, "public").await;
    let registered = wait_for(TIMEOUT, "the public instance to register", || async {
        Some(container_instances(&env, CLUSTER).await).filter(|c| !c.is_empty())
    })
    .await;
    assert_eq!(registered, public);
    rounds(&world, 10).await;
    assert_eq!(container_instances(&env, CLUSTER).await, public, "the instance without a public IP never registers");

    // moto's default VPC now looks as AWS makes it: an internet gateway and a default route to it.
    let vpc = env.ec2.describe_vpcs().filters(Filter::builder().name("is-default").values("true").build()).send().await;
    let vpc = vpc.unwrap().vpcs()[0].vpc_id().unwrap().to_string();
    let igws = env
        .ec2
        .describe_internet_gateways()
        .filters(Filter::builder().name("attachment.vpc-id").values(&vpc).build())
        .send()
        .await
        .unwrap();
    assert_eq!(igws.internet_gateways().len(), 1);

    // A private subnet of a new VPC: a public IP is no help without a route out; a NAT route is.
    let new_vpc = env.ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap();
    let new_vpc = new_vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = env
        .ec2
        .create_subnet()
        .vpc_id(&new_vpc)
        .cidr_block("10.0.1.0/24")
        .availability_zone("us-east-1b")
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    Workers {
        public_ip: Some(true),
        subnet: Some(subnet.clone()),
        ..Workers::new("isolated", &user_data_for(CLUSTER), 1)
    }
    .create(&env)
    .await;
    let isolated = asg_instance_ids(&env, "isolated").await;
    rounds(&world, 10).await;
    assert_eq!(container_instances(&env, CLUSTER).await, public, "no route out of the new VPC");

    let eip = env.ec2.allocate_address().send().await.unwrap().allocation_id().unwrap().to_string();
    let nat = env.ec2.create_nat_gateway().subnet_id(&subnet).allocation_id(eip).send().await.unwrap();
    let nat = nat.nat_gateway().unwrap().nat_gateway_id().unwrap().to_string();
    let tables = env
        .ec2
        .describe_route_tables()
        .filters(Filter::builder().name("vpc-id").values(&new_vpc).build())
        .send()
        .await
        .unwrap();
    let main = tables.route_tables()[0].route_table_id().unwrap().to_string();
    env.ec2
        .create_route()
        .route_table_id(main)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(nat)
        .send()
        .await
        .unwrap();
    let want: BTreeSet<String> = public.union(&isolated).cloned().collect();
    wait_for(TIMEOUT, "the instance behind the NAT to register", || async {
        (container_instances(&env, CLUSTER).await == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_defender_whose_instance_loses_its_way_out_disconnects() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.unwrap();
    let world = world(&env, vec![Arc::new(console.clone())]).await;
    create_cluster(&env.ecs, CLUSTER).await;
    workers(&env, "pc-worker-node", &user_data_for(CLUSTER), 1).await;
    defender_service(&env, &console, CLUSTER).await;
    wait_for(TIMEOUT, "a connected Defender", || async {
        (connected_in_console(&console).await.len() == 1).then_some(())
    })
    .await;
    // Someone deletes the default VPC's route to its internet gateway.
    let tables = env.ec2.describe_route_tables().send().await.unwrap();
    let main = tables
        .route_tables()
        .iter()
        .find(|t| t.routes().iter().any(|r| r.gateway_id().is_some_and(|g| g.starts_with("igw-"))))
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    env.ec2.delete_route().route_table_id(&main).destination_cidr_block("0.0.0.0/0").send().await.unwrap();
    wait_for(TIMEOUT, "the Defender to disconnect", || async {
        connected_in_console(&console).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(console.defenders().len(), 1, "known, disconnected");
    rounds(&world, 3).await;
    assert!(connected_in_console(&console).await.is_empty());
}

#[tokio::test]
async fn a_defender_too_big_for_the_instance_is_a_service_event() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.unwrap();
    let world = world(&env, vec![Arc::new(console.clone())]).await;
    create_cluster(&env.ecs, CLUSTER).await;
    // A t2.nano registers less than the 512 MiB the Console's task definition asks for.
    Workers { instance_type: "t2.nano", ..Workers::new("nano", &user_data_for(CLUSTER), 1) }.create(&env).await;
    wait_for(TIMEOUT, "the nano to register", || async {
        (container_instances(&env, CLUSTER).await.len() == 1).then_some(())
    })
    .await;
    defender_service(&env, &console, CLUSTER).await;
    let events = wait_for(TIMEOUT, "an event about placement", || async {
        Some(world.service_events("us-east-1", CLUSTER, "pc-defender")).filter(|e| !e.is_empty())
    })
    .await;
    let msg = &events[0].message;
    assert!(
        msg.starts_with(
            "service pc-defender was unable to place a task because no container instance met all of its requirements. \
             The closest matching container-instance "
        ) && msg.contains(" has insufficient memory available."),
        "{msg}"
    );
    assert!(all_tasks(&env, CLUSTER).await.is_empty(), "nothing started");
    // The same over the control API, for other processes.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let v: serde_json::Value = http
        .get(format!("{}/events?cluster={CLUSTER}&service=pc-defender", world.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v[0]["events"][0]["message"], msg.as_str());
    rounds(&world, 5).await;
    assert_eq!(world.service_events("us-east-1", CLUSTER, "pc-defender").len(), 1, "duplicates are omitted");

    // A bigger instance gets the Defender; the nano still gets none.
    workers(&env, "medium", &user_data_for(CLUSTER), 1).await;
    let medium = asg_instance_ids(&env, "medium").await;
    wait_for(TIMEOUT, "a Defender on the medium instance only", || async {
        let c = connected_in_console(&console).await;
        (c.len() == 1 && c.iter().all(|(i, _)| medium.contains(i))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_stops_the_task_with_the_agents_reason() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.unwrap();
    let world = world(&env, vec![Arc::new(console.clone())]).await;
    create_cluster(&env.ecs, CLUSTER).await;
    workers(&env, "pc-worker-node", &user_data_for(CLUSTER), 1).await;
    wait_for(TIMEOUT, "a container instance", || async {
        (container_instances(&env, CLUSTER).await.len() == 1).then_some(())
    })
    .await;
    // Switched on over the control API, as a test in another process would.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = http
        .put(format!("{}/faults/{CLUSTER}", world.control_url()))
        .json(&serde_json::json!({"cannotPullImage": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::NO_CONTENT);
    defender_service(&env, &console, CLUSTER).await;
    let stopped = wait_for(TIMEOUT, "a stopped task", || async {
        let tasks = all_tasks(&env, CLUSTER).await;
        tasks.into_iter().find(|(_, status, _)| status == "STOPPED")
    })
    .await;
    assert!(stopped.2.starts_with("CannotPullContainerError: "), "{stopped:?}");
    assert!(stopped.2.contains("registry-auth.twistlock.com"), "names the image: {stopped:?}");
    assert!(connected_in_console(&console).await.is_empty());
    // Off again (Rust API): the Defender runs.
    world.set_faults(CLUSTER, ClusterFaults::default());
    wait_for(Duration::from_secs(30), "the Defender after the fault", || async {
        (connected_in_console(&console).await.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_disconnected_agent_gets_no_new_task() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.unwrap();
    let world = world(&env, vec![Arc::new(console.clone())]).await;
    create_cluster(&env.ecs, CLUSTER).await;
    workers(&env, "pc-worker-node", &user_data_for(CLUSTER), 1).await;
    wait_for(TIMEOUT, "a container instance", || async {
        (container_instances(&env, CLUSTER).await.len() == 1).then_some(())
    })
    .await;
    world.set_faults(CLUSTER, ClusterFaults { agent_disconnected: true, ..Default::default() });
    defender_service(&env, &console, CLUSTER).await;
    let events = wait_for(TIMEOUT, "an event", || async {
        Some(world.service_events("us-east-1", CLUSTER, "pc-defender")).filter(|e| !e.is_empty())
    })
    .await;
    assert!(events[0].message.contains("encountered error \"AGENT\""), "{:?}", events[0]);
    assert!(all_tasks(&env, CLUSTER).await.is_empty());
}

#[tokio::test]
async fn terminated_instances_leave_and_their_replacements_join() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.unwrap();
    let _world = world(&env, vec![Arc::new(console.clone())]).await;
    create_cluster(&env.ecs, CLUSTER).await;
    workers(&env, "pc-worker-node", &user_data_for(CLUSTER), 2).await;
    defender_service(&env, &console, CLUSTER).await;
    let before = asg_instance_ids(&env, "pc-worker-node").await;
    wait_for(TIMEOUT, "2 Defenders", || async { (connected_in_console(&console).await.len() == 2).then_some(()) })
        .await;
    let old_arns =
        env.ecs.list_container_instances().cluster(CLUSTER).send().await.unwrap().container_instance_arns().to_vec();

    // As an instance refresh or a scale-in does: one instance terminated, the group replaces it.
    let victim = before.iter().next().unwrap().clone();
    env.asg
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&victim)
        .should_decrement_desired_capacity(false)
        .send()
        .await
        .unwrap();
    let after = wait_for(TIMEOUT, "a replacement instance", || async {
        Some(asg_instance_ids(&env, "pc-worker-node").await).filter(|a| a.len() == 2 && !a.contains(&victim))
    })
    .await;
    wait_for(TIMEOUT, "the cluster to hold exactly the group's instances", || async {
        (container_instances(&env, CLUSTER).await == after).then_some(())
    })
    .await;
    // The victim's container instance is no longer ACTIVE (deregistered), its Defender stopped.
    let described = env
        .moto_ecs
        .describe_container_instances()
        .cluster(CLUSTER)
        .set_container_instances(Some(old_arns))
        .send()
        .await
        .unwrap();
    assert!(
        described
            .container_instances()
            .iter()
            .filter(|c| c.ec2_instance_id() == Some(victim.as_str()))
            .all(|c| c.status() != Some("ACTIVE")),
        "{described:?}"
    );
    let expected: BTreeSet<(String, String)> = after.iter().map(|i| (i.clone(), CLUSTER.to_string())).collect();
    wait_for(TIMEOUT, "Defenders on the new set", || async {
        (connected_in_console(&console).await == expected).then_some(())
    })
    .await;
    assert!(console.defenders().iter().any(|d| d.instance_id == victim && !d.connected), "the old one disconnected");
}

#[tokio::test]
async fn clusters_whose_names_share_a_prefix_each_get_their_defenders() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.unwrap();
    let world = world(&env, vec![Arc::new(console.clone())]).await;
    for cluster in ["saas", "saassi"] {
        create_cluster(&env.ecs, cluster).await;
        workers(&env, &format!("{cluster}-workers"), &user_data_for(cluster), 1).await;
    }
    console_task_definition(&env, &console, "").await;
    for cluster in ["saas", "saassi"] {
        env.ecs
            .create_service()
            .cluster(cluster)
            .service_name("pc-defender")
            .task_definition("pc-defender")
            .scheduling_strategy(SchedulingStrategy::Daemon)
            .send()
            .await
            .unwrap();
    }
    wait_for(TIMEOUT, "a Defender in each cluster", || async {
        let clusters: BTreeSet<String> = connected_in_console(&console).await.into_iter().map(|(_, c)| c).collect();
        (clusters.len() == 2).then_some(())
    })
    .await;
    rounds(&world, 10).await;
    for cluster in ["saas", "saassi"] {
        let tasks = all_tasks(&env, cluster).await;
        assert_eq!(tasks.len(), 1, "one task, never stopped and restarted by the other cluster's round: {tasks:?}");
    }
}

/// The Console's task definition as the operator registers it with storage `SecretsManager`:
/// `INSTALL_BUNDLE` taken from `value_from`, read with `role`. Returns (ARN, the bundle taken out).
async fn secret_task_definition(env: &Env, console: &ConsoleSim, value_from: &str, role: &str) -> (String, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut td: serde_json::Value = http
        .post(format!("{}/api/v1/defenders/ecs-task.json", console.url()))
        .basic_auth(console.username(), Some(console.password()))
        .json(&serde_json::json!({"consoleAddr": "127.0.0.1", "taskName": "pc-defender"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = &mut td["containerDefinitions"][0];
    let env_list = c["environment"].as_array_mut().unwrap();
    let pos = env_list.iter().position(|e| e["name"] == "INSTALL_BUNDLE").unwrap();
    let bundle = env_list.remove(pos)["value"].as_str().unwrap().to_string();
    c["secrets"] = serde_json::json!([{"name": "INSTALL_BUNDLE", "valueFrom": value_from}]);
    td["executionRoleArn"] = serde_json::json!(role);
    let (status, body) =
        signed_json(&env.gate.url(), "ecs", "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition", td).await;
    assert_eq!(status, 200, "RegisterTaskDefinition: {body}");
    let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
    (resp["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_string(), bundle)
}

/// An execution role ECS tasks may assume, with `policy` (if any) inline; returns its ARN.
async fn execution_role(iam: &aws_sdk_iam::Client, name: &str, policy: Option<serde_json::Value>) -> String {
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let role = iam
        .create_role()
        .role_name(name)
        .path("/ecs-defender/")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .expect("CreateRole");
    if let Some(p) = policy {
        iam.put_role_policy().role_name(name).policy_name("read").policy_document(p.to_string()).send().await.unwrap();
    }
    role.role().unwrap().arn().to_string()
}

fn may_read(secret_arn: &str) -> serde_json::Value {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue", "Resource": secret_arn}]})
}

/// The stopped reason of a stopped task of `cluster` on `task_definition`, once there is one.
async fn stopped_reason(env: &Env, cluster: &str, task_definition: &str) -> String {
    wait_for(TIMEOUT, "a stopped task", || async {
        let mut arns = Vec::new();
        let resp =
            env.moto_ecs.list_tasks().cluster(cluster).desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped);
        arns.extend(resp.send().await.unwrap().task_arns().iter().cloned());
        if arns.is_empty() {
            return None;
        }
        let resp = env.moto_ecs.describe_tasks().cluster(cluster).set_tasks(Some(arns)).send().await.unwrap();
        resp.tasks()
            .iter()
            .find(|t| t.task_definition_arn() == Some(task_definition) && t.last_status() == Some("STOPPED"))
            .and_then(|t| t.stopped_reason())
            .map(str::to_string)
    })
    .await
}

#[tokio::test]
async fn a_secret_that_cannot_be_fetched_stops_the_task_and_its_defender_never_connects() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let world = world(&env, vec![Arc::new(console.clone()), recorder.clone()]).await;
    let config = sdk(&env.gate.url(), 3).await;
    let (sm, iam) = (aws_sdk_secretsmanager::Client::new(&config), aws_sdk_iam::Client::new(&config));
    create_cluster(&env.ecs, CLUSTER).await;
    workers(&env, "pc-worker-node", &user_data_for(CLUSTER), 1).await;
    wait_for(TIMEOUT, "a container instance", || async {
        (container_instances(&env, CLUSTER).await.len() == 1).then_some(())
    })
    .await;
    let bundle = console.install_bundle(sandbox::console::CENTRAL_CONSOLE);
    let secret = sm
        .create_secret()
        .name("ecs-defender/pc-ecs-cluster/install-bundle")
        .secret_string(&bundle)
        .send()
        .await
        .expect("CreateSecret");
    let secret_arn = secret.arn().unwrap().to_string();
    let reader = execution_role(&iam, "reader", Some(may_read(&secret_arn))).await;

    // 1. A wrong ARN (another suffix), with a role that may read any of our secrets: Secrets
    //    Manager finds no such secret. (A role allowed the right ARN only is denied first, as IAM
    //    decides before Secrets Manager looks.)
    let wrong = format!("{}-XXXXXX", secret_arn.rsplit_once('-').unwrap().0);
    let any_of_ours =
        execution_role(&iam, "wide", Some(may_read("arn:aws:secretsmanager:*:*:secret:ecs-defender/*"))).await;
    let (td1, _) = secret_task_definition(&env, &console, &wrong, &any_of_ours).await;
    env.ecs
        .create_service()
        .cluster(CLUSTER)
        .service_name("pc-defender")
        .task_definition(&td1)
        .scheduling_strategy(SchedulingStrategy::Daemon)
        .send()
        .await
        .expect("CreateService");
    let reason = stopped_reason(&env, CLUSTER, &td1).await;
    assert!(reason.starts_with("ResourceInitializationError: unable to pull secrets or registry auth: "), "{reason}");
    assert!(reason.contains("ResourceNotFoundException"), "{reason}");
    assert!(reason.contains(&wrong), "names the secret: {reason}");
    assert!(!reason.contains(&bundle), "never the value");
    assert!(connected_in_console(&console).await.is_empty());

    // 2. The right secret, read by a role without the permission.
    let idle = execution_role(&iam, "idle", None).await;
    let (td2, _) = secret_task_definition(&env, &console, &secret_arn, &idle).await;
    env.ecs.update_service().cluster(CLUSTER).service("pc-defender").task_definition(&td2).send().await.unwrap();
    let reason = stopped_reason(&env, CLUSTER, &td2).await;
    assert!(reason.starts_with("ResourceInitializationError: unable to pull secrets or registry auth: "), "{reason}");
    assert!(reason.contains("AccessDeniedException") && reason.contains("secretsmanager:GetSecretValue"), "{reason}");
    assert!(connected_in_console(&console).await.is_empty());

    // 3. Both right: the Defender starts with the bundle fetched from the secret and connects.
    let (td3, taken_out) = secret_task_definition(&env, &console, &secret_arn, &reader).await;
    assert_eq!(taken_out, bundle);
    env.ecs.update_service().cluster(CLUSTER).service("pc-defender").task_definition(&td3).send().await.unwrap();
    wait_for(Duration::from_secs(30), "the Defender with its secret", || async {
        (connected_in_console(&console).await.len() == 1).then_some(())
    })
    .await;
    let started = recorder.connected();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].install_bundle, bundle, "the Defender runs with the secret's value");
    drop(world);
}

#[tokio::test]
async fn a_forced_new_deployment_restarts_the_defenders_with_the_secrets_new_value() {
    let env = start().await;
    let console = ConsoleSim::start(ConsoleConfig::default()).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let _world = world(&env, vec![Arc::new(console.clone()), recorder.clone()]).await;
    let config = sdk(&env.gate.url(), 3).await;
    let (sm, iam) = (aws_sdk_secretsmanager::Client::new(&config), aws_sdk_iam::Client::new(&config));
    create_cluster(&env.ecs, CLUSTER).await;
    workers(&env, "pc-worker-node", &user_data_for(CLUSTER), 2).await;
    let old = console.install_bundle(sandbox::console::CENTRAL_CONSOLE);
    let secret = sm.create_secret().name("ecs-defender/b").secret_string(&old).send().await.unwrap();
    let secret_arn = secret.arn().unwrap().to_string();
    let reader = execution_role(&iam, "reader", Some(may_read(&secret_arn))).await;
    let (td, _) = secret_task_definition(&env, &console, &secret_arn, &reader).await;
    env.ecs
        .create_service()
        .cluster(CLUSTER)
        .service_name("pc-defender")
        .task_definition(&td)
        .scheduling_strategy(SchedulingStrategy::Daemon)
        .send()
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "two Defenders", || async { (recorder.connected().len() == 2).then_some(()) })
        .await;
    // A Console upgrade: a new bundle in the secret; running tasks keep what they started with.
    console.set_version("34.04.200");
    let new = console.install_bundle(sandbox::console::CENTRAL_CONSOLE);
    assert_ne!(new, old);
    sm.put_secret_value().secret_id(&secret_arn).secret_string(&new).send().await.unwrap();
    rounds(&_world, 5).await;
    assert!(recorder.connected().iter().all(|d| d.install_bundle == old), "ECS injects secrets at start only");
    // The same revision, forced: every Defender restarts, one instance at a time, with the new value.
    env.ecs
        .update_service()
        .cluster(CLUSTER)
        .service("pc-defender")
        .task_definition(&td)
        .force_new_deployment(true)
        .send()
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "both Defenders on the new bundle", || async {
        let c = recorder.connected();
        (c.len() == 2 && c.iter().all(|d| d.install_bundle == new)).then_some(())
    })
    .await;
}
