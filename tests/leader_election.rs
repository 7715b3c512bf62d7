//! Leader election with real operator processes: two `ecs-defender-operator` binaries against one
//! sandbox (real apiserver, AWS SDK -> gate -> moto, ECS world, Console simulator) campaign for
//! one Lease. Exactly one reconciles; the standby makes no AWS call until it takes over; a leader
//! killed mid-create is replaced within the lease duration and the create finishes without any AWS
//! resource existing twice; a leader whose Lease is taken stops reconciling at once.
//!
//! Which process made an AWS call is told by each process's own `/metrics` counters and by the
//! times the gate logged the calls (not by access keys: every process uses the sandbox's).

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{
    eventually,
    process::{GRACE_SECONDS, LEASE, LEASE_SECONDS, Operator, World},
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

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
