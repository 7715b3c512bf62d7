//! The operator against each plausible Console (`sandbox::console::ConsoleVariant`): where the API
//! reference is [inferred], the Console simulator plays each reading, and the operator must reach
//! Ready with every Defender connected, and stay there without churning revisions. The README's
//! "Console variants" table says which of these the operator survives.

mod common;

use std::time::Duration;

use common::{Harness, eventually, variant_options};
use sandbox::console::ConsoleVariant;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn count(h: &Harness, key: &str) -> u64 {
    h.sandbox.gate().counts().get(key).copied().unwrap_or(0)
}

/// Applies the sample against a Console of `variant` (with a 1 s resync, so the operator looks at
/// the Console again and again) and waits for Ready with two connected Defenders.
async fn ready_against(variant: ConsoleVariant, name: &str) -> Harness {
    let h = Harness::start_full(variant_options(variant), |c| c.steady_requeue = Duration::from_secs(1)).await.unwrap();
    assert_eq!(h.sandbox.console().variant(), variant);
    h.create(&h.sample(name)).await.unwrap();
    let edd = h.wait_condition(name, "Ready", "True", READY_TIMEOUT).await;
    let st = edd.status.unwrap();
    assert_eq!((st.container_instances, st.defenders_connected), (Some(2), Some(2)), "{variant}");
    h
}

/// Ready stays Ready for a few resyncs, and no revision is registered in the meantime.
async fn stays_ready_without_churn(h: &Harness, name: &str) {
    let revisions = count(h, "ecs:RegisterTaskDefinition");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let c = h.condition(name, "Ready").await.unwrap();
    assert_eq!(c.status, "True", "{c:?}");
    assert_eq!(count(h, "ecs:RegisterTaskDefinition"), revisions, "a revision registered while nothing changed");
    assert_eq!(count(h, "ecs:UpdateService"), 0, "the service was updated while nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_documented() {
    let h = ready_against(ConsoleVariant::AsDocumented, "documented").await;
    stays_ready_without_churn(&h, "documented").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_late() {
    let h = ready_against(ConsoleVariant::ClusterLate, "late").await;
    stays_ready_without_churn(&h, "late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_only() {
    let h = ready_against(ConsoleVariant::HostnameOnly, "hostnames").await;
    stays_ready_without_churn(&h, "hostnames").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_bundle() {
    let h = ready_against(ConsoleVariant::FreshBundle, "fresh").await;
    stays_ready_without_churn(&h, "fresh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields() {
    let h = ready_against(ConsoleVariant::UnknownFields, "unknown").await;
    stays_ready_without_churn(&h, "unknown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading() {
    let h = ready_against(ConsoleVariant::Upgrading, "upgrading").await;
    // The Console upgrades itself 5 s after its first task definition: every Defender follows.
    let want = "34.03.139";
    let st = eventually(READY_TIMEOUT, || async {
        let st = h.api.get("upgrading").await.ok()?.status?;
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.console_version.as_deref() == Some(want) && st.defenders_connected == Some(2)).then_some(st)
    })
    .await
    .unwrap_or_else(|| panic!("not rolled to {want}: {:#?}", h.sandbox.console().defenders()));
    assert!(st.defender_image.as_deref().unwrap().contains("34_03_139"), "{:?}", st.defender_image);
    let connected: Vec<_> = h.sandbox.console().defenders().into_iter().filter(|d| d.connected).collect();
    assert!(connected.iter().all(|d| d.version == want), "{connected:?}");
}
