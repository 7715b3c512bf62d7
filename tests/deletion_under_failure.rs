//! Deletion and creation under failure (issue 13, reliability): AWS unreachable in the middle of
//! a teardown keeps the finalizer, says why and finishes after recovery with nothing left in AWS;
//! a Console that never answered holds up everything (its login is checked before the first AWS
//! change); one that stops answering after that holds up only what needs it (the cluster and
//! workers are created), says so with `ConsoleUnavailable` / `ConsoleRateLimited`, is asked again with backoff
//! (not once per requeue), and the resource reaches Ready when the Console returns.

mod common;

use std::time::Duration;

use common::{Harness, eventually, inventory::Inventory};
use kube::api::{DeleteParams, Patch, PatchParams};
use sandbox::{
    console::{Fault as ConsoleFault, FaultRule},
    gate::{Fault, FaultKind},
};

const READY_TIMEOUT: Duration = Duration::from_secs(180);

fn count(h: &Harness, key: &str) -> u64 {
    h.sandbox.gate().counts().get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_unreachable_mid_teardown_keeps_the_finalizer_says_why_and_finishes_after_recovery() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("outage")).await.unwrap();
    h.wait_condition("outage", "Ready", "True", READY_TIMEOUT).await;
    assert_eq!(Inventory::read(&h.sandbox.aws_config().await).await, Inventory::one());

    // The teardown starts (the service is being deleted), then every AWS call fails.
    h.api.delete("outage", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(60), || async { (count(&h, "ecs:DeleteService") >= 1).then_some(()) })
        .await
        .expect("the teardown did not start");
    h.sandbox.gate().add_fault(Fault::new("*", FaultKind::Status(503)));
    let failures_before = h.metric("ecs_defender_operator_reconcile_failures_total{category=\"AwsUnavailable\"}");

    let why = eventually(Duration::from_secs(60), || async {
        h.condition("outage", "Reconciling").await.filter(|c| c.reason == "AwsUnavailable" && c.status == "True")
    })
    .await
    .expect("no AwsUnavailable reason while AWS is down");
    assert!(why.message.starts_with("teardown interrupted: "), "{}", why.message);
    assert!(why.message.contains("retrying with backoff"), "{}", why.message);
    assert!(why.message.contains("spec.deletionPolicy: Orphan"), "{}", why.message);
    let ready = h.condition("outage", "Ready").await.unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "AwsUnavailable"));
    assert!(h.condition("outage", "Stalled").await.is_some_and(|c| c.status == "False"), "an outage is not Stalled");

    // Still there, finalizer and all, for as long as AWS is down.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let edd = h.api.get("outage").await.expect("the resource went while AWS was down");
    assert!(edd.metadata.deletion_timestamp.is_some());
    assert_eq!(edd.metadata.finalizers.unwrap_or_default(), ["ecsdefender.io/teardown"]);
    assert!(
        h.metric("ecs_defender_operator_reconcile_failures_total{category=\"AwsUnavailable\"}") > failures_before,
        "the failed teardown is counted"
    );

    // AWS returns: the teardown finishes and nothing is left.
    h.sandbox.gate().clear_faults();
    h.wait_gone("outage", READY_TIMEOUT).await;
    assert_eq!(Inventory::read(&h.sandbox.aws_config().await).await, Inventory::default());
}

/// Console requests in a window of `seconds`.
async fn console_requests_in(h: &Harness, seconds: u64) -> usize {
    h.sandbox.console().clear_requests();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    h.sandbox.console().requests().len()
}

/// Makes the operator look at `name` now (a resync), as a change of its labels does.
async fn nudge(h: &Harness, name: &str, n: u32) {
    let patch = serde_json::json!({"metadata": {"labels": {"nudge": n.to_string()}}});
    h.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_outage_holds_up_only_what_needs_the_console_and_is_retried_with_backoff() {
    // Resyncs every 2 s, so a Ready resource's glance asks the Console again (at the default 300 s
    // resync a quiet look takes the Console's shared answer, up to half a resync old).
    let h = Harness::start_full(Default::default(), |c| c.steady_requeue = Duration::from_secs(2)).await.unwrap();
    // The Console fails every call, login included, from the start: its login is checked before
    // the first AWS change (a wrong password must cost nothing), so nothing is created yet.
    h.sandbox.console().faults().inject(FaultRule::everywhere(ConsoleFault::ServerError));
    h.create(&h.sample("noconsole")).await.unwrap();
    let waiting = eventually(Duration::from_secs(30), || async {
        h.condition("noconsole", "ClusterReady").await.filter(|c| c.reason == "ConsoleUnavailable")
    })
    .await
    .expect("ClusterReady does not say the Console is unavailable");
    assert!(waiting.message.contains("checked before anything is created"), "{}", waiting.message);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mutations = h.sandbox.gate().calls().iter().filter(|c| c.mutating && c.service != "moto").count();
    assert_eq!(mutations, 0, "an AWS change before the Console's login was checked");

    // The Console answers long enough to check the login, then goes away again once the
    // workers are being created.
    h.sandbox.console().faults().clear();
    eventually(Duration::from_secs(60), || async {
        (count(&h, "autoscaling:CreateAutoScalingGroup") >= 1).then_some(())
    })
    .await
    .expect("the workers were not created");
    h.sandbox.console().faults().inject(FaultRule::everywhere(ConsoleFault::ServerError));

    // The AWS side goes on without it: cluster, workers, the install bundle's secret and role.
    h.wait_condition("noconsole", "WorkersReady", "True", READY_TIMEOUT).await;
    let edd = h.wait_condition("noconsole", "ClusterReady", "True", READY_TIMEOUT).await;
    assert_eq!(edd.status.as_ref().unwrap().container_instances, Some(2));
    let td = eventually(Duration::from_secs(30), || async {
        h.condition("noconsole", "TaskDefinitionReady").await.filter(|c| c.reason == "ConsoleUnavailable")
    })
    .await
    .expect("TaskDefinitionReady does not say the Console is unavailable");
    assert_eq!(td.status, "False");
    assert!(td.message.contains("(500)"), "{}", td.message);
    assert!(td.message.contains("registered once it answers"), "{}", td.message);
    for kind in ["DefendersConnected", "Ready"] {
        let c = h.condition("noconsole", kind).await.unwrap();
        assert_eq!((kind, c.status.as_str(), c.reason.as_str()), (kind, "False", "ConsoleUnavailable"), "{c:?}");
    }
    let reconciling = h.condition("noconsole", "Reconciling").await.unwrap();
    assert_eq!(reconciling.status, "True", "an outage is retried, not Stalled");
    assert!(h.condition("noconsole", "Stalled").await.is_some_and(|c| c.status == "False"));
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 0);
    assert_eq!(count(&h, "ecs:CreateService"), 0);

    // Backoff, not a storm: the converging requeue is 0.5 s here, the Console's backoff grows to
    // 3 s (the harness's max backoff), and one request probes it for every resource.
    let asked = console_requests_in(&h, 9).await;
    println!("Console requests in 9 s of outage: {asked}");
    assert!((1..=6).contains(&asked), "{asked} Console requests in 9 s");

    // The Console returns: Ready, without any change to the spec.
    h.sandbox.console().faults().clear();
    let ready = h.wait_condition("noconsole", "Ready", "True", Duration::from_secs(60)).await;
    assert_eq!(ready.status.unwrap().defenders_connected, Some(2));
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 1);

    // A Ready resource whose Console rate-limits it at a resync: Ready turns False with
    // ConsoleRateLimited; the registered revision stays in use and the service keeps running it.
    h.sandbox.console().faults().inject(FaultRule::everywhere(ConsoleFault::TooManyRequests { retry_after: Some(4) }));
    // A resync comes later than the Console's last shared answer is taken for fresh (1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    nudge(&h, "noconsole", 1).await;
    let ready = eventually(Duration::from_secs(30), || async {
        h.condition("noconsole", "Ready").await.filter(|c| c.status == "False")
    })
    .await
    .expect("Ready stays True while the Console cannot be asked");
    assert_eq!(ready.reason, "ConsoleRateLimited", "{ready:?}");
    let td = h.condition("noconsole", "TaskDefinitionReady").await.unwrap();
    assert_eq!((td.status.as_str(), td.reason.as_str()), ("False", "ConsoleRateLimited"));
    assert!(td.message.contains("stays in use"), "{}", td.message);
    assert!(h.condition("noconsole", "ServiceReady").await.is_some_and(|c| c.status == "True"));
    let dc = h.condition("noconsole", "DefendersConnected").await.unwrap();
    assert_eq!((dc.status.as_str(), dc.reason.as_str()), ("False", "ConsoleRateLimited"));
    // Retry-After is honoured: at most one request per 4 s.
    let asked = console_requests_in(&h, 8).await;
    assert!(asked <= 3, "{asked} Console requests in 8 s with Retry-After: 4");

    h.sandbox.console().faults().clear();
    h.wait_condition("noconsole", "Ready", "True", Duration::from_secs(60)).await;
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 1, "no new revision for an outage");
    assert_eq!(count(&h, "ecs:UpdateService"), 0);
}
