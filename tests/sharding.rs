//! Sharding (issue 12, in part): an operator started with `RESOURCE_SELECTOR` reconciles only the
//! resources whose labels match; a second one with another selector takes the rest, and a
//! selector that is not one stops the binary with a message.

mod common;

use std::time::Duration;

use common::{
    eventually,
    process::{Operator, World},
};
use kube::api::PostParams;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

async fn create_in_shard(world: &World, name: &str, shard: &str) {
    let mut edd = world.sample(name);
    edd.metadata.labels = Some([("shard".to_string(), shard.to_string())].into());
    world.api.create(&PostParams::default(), &edd).await.unwrap();
}

async fn wait_ready(world: &World, name: &str, op: &Operator) {
    if eventually(READY_TIMEOUT, || async { world.ready(name).await.then_some(()) }).await.is_none() {
        panic!("{name} is not Ready; log of {}:\n{}", op.name, op.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_reconciles_only_the_resources_its_selector_matches() {
    let world = World::start().await;
    create_in_shard(&world, "in-a", "a").await;
    create_in_shard(&world, "in-b", "b").await;
    let a = Operator::start("shard-a", &world, &[("LEADER_ELECT", "false"), ("RESOURCE_SELECTOR", "shard=a")]).await;
    wait_ready(&world, "in-a", &a).await;

    // Shard b has no operator yet: its resource is not touched at all (no finalizer, no status,
    // no AWS call naming its cluster).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b_res = world.api.get("in-b").await.unwrap();
    assert!(b_res.metadata.finalizers.unwrap_or_default().is_empty(), "shard a's operator took in-b");
    assert!(b_res.status.is_none(), "shard a's operator wrote in-b's status");
    let named_b = world.sandbox.gate().calls().iter().filter(|c| c.params.values().any(|v| v.contains("in-b"))).count();
    assert_eq!(named_b, 0, "AWS calls for a resource of another shard");

    // Its own operator takes it; the first one goes on ignoring it.
    let b = Operator::start("shard-b", &world, &[("LEADER_ELECT", "false"), ("RESOURCE_SELECTOR", "shard=b")]).await;
    wait_ready(&world, "in-b", &b).await;
    // (Its log names the resources it works on, so a look at the other shard would show.)
    assert!(a.log().contains("\"in-a\""), "{}", a.log());
    assert!(!a.log().contains("in-b"), "shard a's operator looked at in-b:\n{}", a.log());
    assert!(!b.log().contains("\"in-a\""), "shard b's operator looked at in-a:\n{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_that_is_not_one_stops_the_binary_with_a_message() {
    let world = World::start().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-defender-operator"))
        .env_clear()
        .env("KUBECONFIG", world.sandbox.control_plane().kubeconfig())
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("LEADER_ELECT", "false")
        .env("RESOURCE_SELECTOR", "shard==a=b")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("RESOURCE_SELECTOR \"shard==a=b\" is not a label selector"), "{text}");
}
