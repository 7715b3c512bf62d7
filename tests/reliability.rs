//! Reliability (issue 13, in part): the operator across a Kubernetes API server restart. While the
//! API server is down `/readyz` says so; after it returns the watches resume within seconds, the
//! interrupted create and delete finish, and nothing is created twice.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, eventually};
use kube::api::DeleteParams;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

fn count(h: &Harness, key: &str) -> u64 {
    h.sandbox.gate().counts().get(key).copied().unwrap_or(0)
}

async fn readyz(h: &Harness) -> u16 {
    reqwest::get(format!("{}/readyz", h.http_url)).await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Stops the API server for `down`, checking `/readyz` fails meanwhile; returns when it serves again.
async fn api_server_outage(h: &Harness, down: Duration) {
    let cp = h.sandbox.control_plane();
    cp.stop_apiserver();
    let failing = eventually(Duration::from_secs(10), || async { (readyz(h).await == 503).then_some(()) }).await;
    assert!(failing.is_some(), "/readyz still answers 200 with the API server down");
    tokio::time::sleep(down).await;
    cp.start_apiserver().await.expect("the API server starts again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_mid_create_and_mid_delete_loses_nothing_and_does_nothing_twice() {
    let h = Harness::start().await.unwrap();
    assert!(eventually(Duration::from_secs(10), || async { (readyz(&h).await == 200).then_some(()) }).await.is_some());
    h.create(&h.sample("restart")).await.unwrap();
    // Mid-create: the cluster exists, the rest does not yet.
    eventually(Duration::from_secs(60), || async { (count(&h, "ecs:CreateCluster") == 1).then_some(()) })
        .await
        .expect("the cluster was not created");
    api_server_outage(&h, Duration::from_secs(3)).await;
    let back = Instant::now();
    eventually(Duration::from_secs(10), || async { (readyz(&h).await == 200).then_some(()) })
        .await
        .expect("/readyz does not recover");

    // The watch is back within seconds: a resource created now is picked up at once (its first
    // AWS read names its cluster).
    h.create(&h.sample("after")).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        let calls = h.sandbox.gate().calls();
        calls
            .iter()
            .any(|c| c.operation == "DescribeClusters" && c.params.values().any(|v| v.contains("after")))
            .then_some(())
    })
    .await
    .expect("a resource created after the API server returned was not looked at within 10 s");
    println!("watch resumed {:?} after the API server returned", back.elapsed());

    h.wait_condition("restart", "Ready", "True", READY_TIMEOUT).await;
    h.wait_condition("after", "Ready", "True", READY_TIMEOUT).await;
    for op in [
        "ecs:CreateCluster",
        "ec2:CreateLaunchTemplate",
        "autoscaling:CreateAutoScalingGroup",
        "ecs:RegisterTaskDefinition",
        "ecs:CreateService",
    ] {
        assert_eq!(count(&h, op), 2, "{op}: one per resource");
    }

    // Mid-delete.
    h.api.delete("restart", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(60), || async { (count(&h, "ecs:DeleteService") >= 1).then_some(()) })
        .await
        .expect("the teardown did not start");
    api_server_outage(&h, Duration::from_secs(3)).await;
    h.wait_gone("restart", READY_TIMEOUT).await;
    let aws = h.aws().await;
    let left = aws.ecs.describe_clusters().clusters("restart").send().await.unwrap();
    assert!(left.clusters().iter().all(|c| c.status() != Some("ACTIVE")), "{left:?}");
    assert!(h.condition("after", "Ready").await.is_some_and(|c| c.status == "True"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_creates_then_a_delete_leaves_nothing_launch_configurations_included() {
    let h = Harness::start().await.unwrap();
    // The group's create takes a while, so the operator dies with the launch configuration made
    // and the reconcile that made it unfinished (its status patch never happens).
    h.sandbox.gate().add_fault(
        sandbox::gate::Fault::new("autoscaling", sandbox::gate::FaultKind::Latency(Duration::from_secs(2)))
            .on("CreateAutoScalingGroup"),
    );
    let mut edd = h.sample("leaky");
    edd.spec.workers.as_mut().unwrap().kind = ecs_defender_operator::crd::WorkerKind::LaunchConfiguration;
    h.create(&edd).await.unwrap();
    eventually(Duration::from_secs(60), || async {
        h.sandbox
            .gate()
            .calls()
            .iter()
            .any(|c| c.operation == "CreateLaunchConfiguration" && c.status == 200)
            .then_some(())
    })
    .await
    .expect("the launch configuration was not created");
    h.restart_operator();
    h.api.delete("leaky", &DeleteParams::default()).await.unwrap();
    h.wait_gone("leaky", READY_TIMEOUT).await;
    let aws = h.aws().await;
    let lcs = aws.autoscaling.describe_launch_configurations().send().await.unwrap();
    assert!(lcs.launch_configurations().is_empty(), "leaked: {:?}", lcs.launch_configurations());
    let groups = aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap();
    assert!(
        groups.auto_scaling_groups().iter().all(|g| g.status().is_some()),
        "a group is left: {:?}",
        groups.auto_scaling_groups()
    );
    let clusters = aws.ecs.describe_clusters().clusters("leaky").send().await.unwrap();
    assert!(clusters.clusters().iter().all(|c| c.status() != Some("ACTIVE")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_that_never_created_anything_is_deleted_at_once_even_when_it_cannot_reach_aws() {
    let h = Harness::start().await.unwrap();
    // An AWS Secret without its secret key: the resource can never call AWS.
    h.put_secret("halfkey", &[("AWS_ACCESS_KEY_ID", "AKIAHALFKEY000000001")]).await.unwrap();
    let mut edd = h.sample("unreachable");
    edd.spec.aws.as_mut().unwrap().credentials_secret_ref =
        Some(ecs_defender_operator::crd::SecretRef { name: "halfkey".into() });
    h.create(&edd).await.unwrap();
    let st = h.wait_condition("unreachable", "Stalled", "True", Duration::from_secs(60)).await;
    let c = st.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(c.reason, "SecretInvalid");
    h.api.delete("unreachable", &DeleteParams::default()).await.unwrap();
    h.wait_gone("unreachable", Duration::from_secs(15)).await;
    assert!(h.sandbox.gate().calls().is_empty(), "AWS was called");
}
