//! Clusters made "by hand" before the operator is installed ([`Sandbox::seed_adopted_clusters`]),
//! as the benchmark's adopting resources find them: seeding goes straight to moto (the gate's log
//! stays empty), each cluster has one ACTIVE container instance, and a DAEMON service created in
//! one through the gate gets a RUNNING task and a connected Defender. The fleet test measures how
//! long N clusters take to all run a Defender (N = `SCALE_CLUSTERS`, 200 by default) and what the
//! ECS world asks of moto afterwards while nothing changes.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use aws_sdk_ecs::types::SchedulingStrategy;
use common::{signed_json, wait_for};
use futures::StreamExt as _;
use sandbox::world::{Sandbox, SandboxOptions};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions { kubernetes: false, ..SandboxOptions::default() }).await.expect("the sandbox starts")
}

/// The Console's ECS task definition, registered through the gate as the operator does.
async fn console_task_definition(sandbox: &Sandbox) -> String {
    let console = sandbox.console();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let td: serde_json::Value = http
        .post(format!("{}/api/v1/defenders/ecs-task.json", console.url()))
        .basic_auth(console.username(), Some(console.password()))
        .json(&serde_json::json!({"consoleAddr": "127.0.0.1", "taskName": "pc-defender", "cluster": ""}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("the Console generates the task definition")
        .json()
        .await
        .unwrap();
    let (status, body) =
        signed_json(&sandbox.aws_endpoint(), "ecs", "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition", td)
            .await;
    assert_eq!(status, 200, "RegisterTaskDefinition: {body}");
    let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
    resp["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_string()
}

async fn daemon_service(ecs: &aws_sdk_ecs::Client, cluster: &str, task_definition: &str) {
    ecs.create_service()
        .cluster(cluster)
        .service_name("pc-defender")
        .task_definition(task_definition)
        .scheduling_strategy(SchedulingStrategy::Daemon)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateService in {cluster}: {e:?}"));
}

/// Clusters with a connected Defender, as the Console lists them.
fn clusters_with_a_defender(sandbox: &Sandbox) -> BTreeSet<String> {
    sandbox.console().defenders().into_iter().filter(|d| d.connected).map(|d| d.cluster).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_clusters_are_adopted_by_a_daemon_service_without_a_gate_call() {
    let sandbox = sandbox().await;
    let started = Instant::now();
    let names = sandbox.seed_adopted_clusters("adopt", 20).await.expect("seeding");
    eprintln!("seeded 20 clusters in {:?}", started.elapsed());
    assert_eq!(names.first().map(String::as_str), Some("adopt-0"));
    assert_eq!(names.len(), 20);
    assert!(sandbox.gate().calls().is_empty(), "seeding went through the gate: {:?}", sandbox.gate().calls());

    let ecs = aws_sdk_ecs::Client::new(&sandbox.aws_config().await);
    let clusters = ecs.describe_clusters().set_clusters(Some(names.clone())).send().await.unwrap();
    assert_eq!(clusters.clusters().len(), 20);
    for c in clusters.clusters() {
        assert_eq!(c.status(), Some("ACTIVE"));
        assert_eq!(c.registered_container_instances_count(), 1, "{:?}", c.cluster_name());
    }
    let cluster = &names[7];
    let arns = ecs.list_container_instances().cluster(cluster).send().await.unwrap().container_instance_arns().to_vec();
    let cis = ecs.describe_container_instances().cluster(cluster).set_container_instances(Some(arns)).send().await;
    let cis = cis.unwrap().container_instances().to_vec();
    assert_eq!(cis.len(), 1);
    assert_eq!(cis[0].status(), Some("ACTIVE"));
    assert!(cis[0].agent_connected());

    let td = console_task_definition(&sandbox).await;
    daemon_service(&ecs, cluster, &td).await;
    let task = wait_for(Duration::from_secs(20), "a RUNNING Defender task in the seeded cluster", || async {
        let arns =
            ecs.list_tasks().cluster(cluster).service_name("pc-defender").send().await.ok()?.task_arns().to_vec();
        if arns.is_empty() {
            return None;
        }
        let resp = ecs.describe_tasks().cluster(cluster).set_tasks(Some(arns)).send().await.ok()?;
        resp.tasks().iter().find(|t| t.last_status() == Some("RUNNING")).cloned()
    })
    .await;
    assert_eq!(task.container_instance_arn(), cis[0].container_instance_arn(), "placed on the seeded instance");
    wait_for(Duration::from_secs(10), "the Defender to connect", || async {
        clusters_with_a_defender(&sandbox).contains(cluster.as_str()).then_some(())
    })
    .await;
    let defenders = sandbox.console().defenders();
    assert_eq!(defenders.len(), 1, "only the cluster with a service runs a Defender: {defenders:?}");
    assert_eq!(Some(defenders[0].instance_id.as_str()), cis[0].ec2_instance_id());
}

/// Requests moto has served so far (its log has one line per request).
fn moto_requests(sandbox: &Sandbox) -> usize {
    let log = std::fs::read_to_string(sandbox.dir().join("moto.log")).unwrap_or_default();
    log.lines().filter(|l| l.contains("\"POST ") || l.contains("\"GET ")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_seeded_clusters_all_run_a_defender() {
    let count: usize = std::env::var("SCALE_CLUSTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let sandbox = sandbox().await;
    let started = Instant::now();
    let names = sandbox.seed_adopted_clusters("fleet", count).await.expect("seeding");
    let seeded = started.elapsed();

    let ecs = aws_sdk_ecs::Client::new(&sandbox.aws_config().await);
    let td = console_task_definition(&sandbox).await;
    let started = Instant::now();
    futures::stream::iter(names.iter())
        .map(|cluster| daemon_service(&ecs, cluster, &td))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let services_created = started.elapsed();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let deadline = Duration::from_secs(30 + count as u64 / 2);
    let mut reported = Instant::now();
    loop {
        let now = clusters_with_a_defender(&sandbox);
        if now == all {
            break;
        }
        if reported.elapsed() >= Duration::from_secs(10) {
            eprintln!("{:.0?}: {} of {count} Defenders connected", started.elapsed(), now.len());
            reported = Instant::now();
        }
        assert!(started.elapsed() < deadline, "only {} of {count} Defenders connected after {deadline:?}", now.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = started.elapsed();

    // Idle: nothing changes; what does the world still ask of moto?
    // Idle for long enough that the slow sweep runs too (it reads clusters untouched for 30 s).
    let idle_after: u64 = std::env::var("SCALE_IDLE_AFTER_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    tokio::time::sleep(Duration::from_secs(idle_after)).await;
    let (before, at) = (moto_requests(&sandbox), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = (moto_requests(&sandbox) - before) as f64 / at.elapsed().as_secs_f64();
    // The Console's Defender list, page by page over HTTP, as the operator reads it.
    let console = sandbox.console();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let (started, mut listed, mut pages) = (Instant::now(), 0, 0);
    loop {
        let page: Vec<serde_json::Value> = http
            .get(format!("{}/api/v1/defenders?connected=true&offset={listed}", console.url()))
            .basic_auth(console.username(), Some(console.password()))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        if page.is_empty() {
            break;
        }
        listed += page.len();
    }
    let listing = started.elapsed();
    eprintln!(
        "{count} clusters: seeded in {seeded:.1?}; {count} DAEMON services created in {services_created:.1?}; \
         all Defenders connected {connected:.1?} after the first CreateService; idle: {idle:.1} moto requests/s; \
         the Console listed {listed} Defenders in {pages} pages in {listing:.1?}"
    );
    assert_eq!(listed, count);
    assert_eq!(sandbox.console().defenders().len(), count);
}
