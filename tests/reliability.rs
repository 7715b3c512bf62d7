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

    // The watch is back within seconds: a resource created now is picked up at once.
    h.create(&h.sample("after")).await.unwrap();
    eventually(Duration::from_secs(10), || async { h.api.get("after").await.ok()?.status.map(|_| ()) })
        .await
        .expect("a resource created after the API server returned got no status within 10 s");
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
