//! Leader election with real operator processes: two `ecs-defender-operator` binaries against one
//! sandbox (real apiserver, AWS SDK -> gate -> moto, ECS world, Console simulator) campaign for
//! one Lease. Exactly one reconciles; the standby makes no AWS call until it takes over; a leader
//! killed mid-create is replaced within the lease duration and the create finishes without any AWS
//! resource existing twice; a leader whose Lease is taken stops reconciling at once.
//!
//! Which process made an AWS call is told by each process's own `/metrics` counters and by the
//! times the gate logged the calls (not by access keys: every process uses the sandbox's).

mod common;

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use common::eventually;
use ecs_defender_operator::crd::{AwsSpec, EcsDefenderDeployment, SecretRef};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use sandbox::world::{Sandbox, SandboxOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

const LEASE: &str = "ecs-defender-operator";
/// Short, so a takeover is quick to wait for; the grace is the renewal margin.
const LEASE_SECONDS: u64 = 6;
const GRACE_SECONDS: u64 = 2;
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One operator process, its HTTP endpoints and its log.
struct Operator {
    name: &'static str,
    child: tokio::process::Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    async fn start(name: &'static str, world: &World, extra_env: &[(&str, &str)]) -> Operator {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-defender-operator"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", world.sandbox.control_plane().kubeconfig())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("OPERATOR_AWS_ENDPOINT_URL", world.sandbox.aws_endpoint())
            .env("REQUEUE_CONVERGING_SECONDS", "1")
            .env("ALLOW_INSECURE_CONSOLE", "true")
            .env("POD_NAME", name)
            .env("LEADER_ELECT_LEASE_NAME", LEASE)
            .env("LEADER_ELECT_LEASE_DURATION_SECONDS", LEASE_SECONDS.to_string())
            .env("LEADER_ELECT_RENEW_GRACE_SECONDS", GRACE_SECONDS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the operator binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        let mut addr_tx = Some(addr_tx);
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // main.rs logs the bound address of /metrics, /healthz, /readyz.
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(addr) = v["fields"]["addr"].as_str()
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let log = log.lock().unwrap().join("\n");
                panic!("{name} did not start; log:\n{log}")
            }
        };
        Operator { name, child, url: format!("http://{addr}"), log }
    }

    /// `/readyz`'s body: `ready: leader` or `ready: standby`.
    async fn readyz(&self) -> Option<String> {
        let resp = reqwest::get(format!("{}/readyz", self.url)).await.ok()?;
        resp.status().is_success().then_some(())?;
        resp.text().await.ok()
    }

    /// Sum of the metric's series (`name` or `name{...}`), from this process's `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn aws_calls(&self) -> f64 {
        self.metric("ecs_defender_operator_aws_calls_total").await
    }

    async fn reconciles(&self) -> f64 {
        self.metric("ecs_defender_operator_reconciles_total").await
    }

    async fn wait_role(&self, role: &str, timeout: Duration) {
        let want = format!("ready: {role}");
        if eventually(timeout, || async { (self.readyz().await.as_deref() == Some(want.as_str())).then_some(()) })
            .await
            .is_none()
        {
            panic!("{} is not {role} after {timeout:?}; log:\n{}", self.name, self.log());
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }
}

/// The sandbox with the CRD and the Secrets a sample needs, and no operator.
struct World {
    sandbox: Sandbox,
    client: Client,
    api: Api<EcsDefenderDeployment>,
}

impl World {
    async fn start() -> World {
        ecs_defender_operator::install_crypto_provider();
        let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let client = sandbox.kube_client().await.unwrap();
        common::install_crd(&client).await.unwrap();
        let console = sandbox.console();
        let console_url = console.url();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        for (name, data) in [
            (
                "pc-console",
                vec![("username", console.username()), ("password", console.password()), ("url", &console_url)],
            ),
            (
                "aws",
                vec![
                    ("AWS_ACCESS_KEY_ID", sandbox::moto::ACCESS_KEY_ID),
                    ("AWS_SECRET_ACCESS_KEY", sandbox::moto::SECRET_ACCESS_KEY),
                ],
            ),
        ] {
            let data: BTreeMap<_, _> = data.into_iter().collect();
            let secret: Secret =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "stringData": data})).unwrap();
            secrets.create(&PostParams::default(), &secret).await.unwrap();
        }
        let api = Api::namespaced(client.clone(), "default");
        World { sandbox, client, api }
    }

    fn sample(&self, name: &str) -> EcsDefenderDeployment {
        let mut edd = ecs_defender_operator::fixtures::sample(name);
        edd.metadata.uid = None;
        edd.metadata.generation = None;
        edd.spec.defender.console.url = self.sandbox.console().url();
        edd.spec.aws =
            Some(AwsSpec { credentials_secret_ref: Some(SecretRef { name: "aws".into() }), ..Default::default() });
        edd
    }

    fn count(&self, key: &str) -> u64 {
        self.sandbox.gate().counts().get(key).copied().unwrap_or(0)
    }

    async fn ready(&self, name: &str) -> bool {
        let Ok(edd) = self.api.get(name).await else { return false };
        edd.status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "default");
        leases.get(LEASE).await.ok()?.spec?.holder_identity
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_duration_and_nothing_is_created_twice() {
    let world = World::start().await;
    // Slow AWS changes down, so the leader is killed while the create is under way.
    const LATENCY: Duration = Duration::from_millis(700);
    for (service, op) in [
        ("ecs", "CreateCluster"),
        ("ec2", "CreateLaunchTemplate"),
        ("autoscaling", "CreateAutoScalingGroup"),
        ("ecs", "RegisterTaskDefinition"),
        ("ecs", "CreateService"),
    ] {
        world
            .sandbox
            .gate()
            .add_fault(sandbox::gate::Fault::new(service, sandbox::gate::FaultKind::Latency(LATENCY)).on(op));
    }

    let mut a = Operator::start("op-a", &world, &[]).await;
    a.wait_role("leader", Duration::from_secs(30)).await;
    let b = Operator::start("op-b", &world, &[]).await;
    b.wait_role("standby", Duration::from_secs(30)).await;
    assert_eq!(world.lease_holder().await.as_deref(), Some("op-a"));

    world.api.create(&PostParams::default(), &world.sample("ha")).await.unwrap();
    // Kill the leader after the cluster and the launch template exist, while the rest is pending.
    eventually(Duration::from_secs(60), || async { (world.count("ec2:CreateLaunchTemplate") >= 1).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("the leader made no progress; log:\n{}", a.log()));
    // Exactly one reconciles: the leader did, the standby has not even looked.
    assert!(a.reconciles().await >= 1.0);
    assert!(a.aws_calls().await >= 2.0);
    assert_eq!(b.reconciles().await, 0.0, "the standby reconciled");
    assert_eq!(b.aws_calls().await, 0.0, "the standby called AWS");
    assert!(!world.ready("ha").await, "killed too late: already Ready");

    a.child.start_kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let killed_wall = SystemTime::now();
    let _ = a.child.wait().await;

    // The standby takes over within the lease duration (plus up to 1 s: kube-lease-manager waits a
    // random 0.1-1 s after an expired Lease so that standbys do not collide), and before that it
    // makes no AWS call at all.
    let mut standby_calls_seen = Vec::new();
    let took_over = loop {
        if b.readyz().await.as_deref() == Some("ready: leader") {
            break killed.elapsed();
        }
        standby_calls_seen.push(b.aws_calls().await);
        assert!(killed.elapsed() < Duration::from_secs(30), "no takeover; op-b log:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took_over_wall = SystemTime::now();
    assert!(
        took_over <= Duration::from_secs(LEASE_SECONDS) + Duration::from_millis(1_500),
        "takeover after {took_over:?} (lease {LEASE_SECONDS}s)"
    );
    assert!(
        standby_calls_seen.iter().all(|n| *n == 0.0),
        "the standby called AWS before leading: {standby_calls_seen:?}"
    );
    // The gate agrees: past the killed leader's last in-flight call, nothing changed AWS until the
    // standby led.
    let quiet_from = killed_wall + LATENCY + Duration::from_millis(500);
    let early: Vec<_> = world
        .sandbox
        .gate()
        .calls()
        .into_iter()
        .filter(|c| c.mutating && c.at > quiet_from && c.at < took_over_wall)
        .map(|c| c.key())
        .collect();
    assert!(early.is_empty(), "AWS changed between the kill and the takeover: {early:?}");
    assert_eq!(world.lease_holder().await.as_deref(), Some("op-b"));

    // The new leader finishes the create.
    let ready = eventually(READY_TIMEOUT, || async { world.ready("ha").await.then_some(()) }).await;
    assert!(ready.is_some(), "not Ready after the takeover; op-b log:\n{}", b.log());
    assert!(b.reconciles().await >= 1.0);
    assert!(b.aws_calls().await >= 1.0);

    // Nothing exists twice, as AWS sees it.
    let aws = sandbox::world::AwsClientsForTests::new(&world.sandbox.aws_config().await);
    let clusters = aws.ecs.list_clusters().send().await.unwrap();
    assert_eq!(clusters.cluster_arns().len(), 1, "{:?}", clusters.cluster_arns());
    assert_eq!(aws.ec2.describe_launch_templates().send().await.unwrap().launch_templates().len(), 1);
    assert_eq!(aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap().auto_scaling_groups().len(), 1);
    let active =
        aws.ecs.list_task_definitions().status(aws_sdk_ecs::types::TaskDefinitionStatus::Active).send().await.unwrap();
    assert_eq!(active.task_definition_arns().len(), 1, "{:?}", active.task_definition_arns());
    assert_eq!(aws.ecs.list_services().cluster("ha").send().await.unwrap().service_arns().len(), 1);
    for key in
        ["ecs:CreateCluster", "ec2:CreateLaunchTemplate", "autoscaling:CreateAutoScalingGroup", "ecs:CreateService"]
    {
        assert_eq!(world.count(key), 1, "{key} called {} times", world.count(key));
    }
    println!("takeover {took_over:?} after SIGKILL (lease {LEASE_SECONDS}s, grace {GRACE_SECONDS}s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_stops_reconciling_at_once() {
    let world = World::start().await;
    // A one-second resync keeps the leader reconciling all the time.
    let a = Operator::start("op-a", &world, &[("RESYNC_SECONDS", "1")]).await;
    a.wait_role("leader", Duration::from_secs(30)).await;
    world.api.create(&PostParams::default(), &world.sample("busy")).await.unwrap();
    let ready = eventually(READY_TIMEOUT, || async { world.ready("busy").await.then_some(()) }).await;
    assert!(ready.is_some(), "not Ready; log:\n{}", a.log());

    // Another holder takes the Lease, freshly renewed (as after a partition the leader did not
    // notice). The leader's next renewal is seconds away; it must not wait for it.
    let leases: Api<Lease> = Api::namespaced(world.client.clone(), "default");
    let now = k8s_openapi::jiff::Timestamp::now();
    let taken = serde_json::json!({"spec": {
        "holderIdentity": "someone-else",
        "acquireTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
        "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
        "leaseDurationSeconds": 60,
    }});
    leases.patch(LEASE, &PatchParams::default(), &Patch::Merge(&taken)).await.unwrap();
    let taken_at = Instant::now();
    a.wait_role("standby", Duration::from_secs(5)).await;
    let stepped_down = taken_at.elapsed();
    assert!(stepped_down < Duration::from_secs(GRACE_SECONDS), "stepped down only after {stepped_down:?}");
    assert_eq!(a.metric("ecs_defender_operator_leader").await, 0.0);

    // Reconciling stopped: allow the one reconcile that may have been in flight, then nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (reconciles, calls) = (a.reconciles().await, a.aws_calls().await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.reconciles().await, reconciles, "reconciles went on after the Lease was lost");
    assert_eq!(a.aws_calls().await, calls, "AWS calls went on after the Lease was lost");
    println!("stepped down {stepped_down:?} after the Lease was taken");
}
