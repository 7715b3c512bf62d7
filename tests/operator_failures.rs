//! The operator when things go wrong: bad input stalls before any AWS change with a message where
//! the user looks; passing faults (AWS throttling, Console 429) are retried until Ready; teardown
//! works without the Console Secret and with a spec that no longer validates; a missing CRD stops
//! the binary with a hint.

mod common;

use std::time::Duration;

use common::{Harness, eventually};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use sandbox::{
    console::{Fault as ConsoleFault, FaultRule},
    gate::{Fault, FaultKind},
};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stalls_without_any_aws_call_then_recovers() {
    let h = Harness::start().await.unwrap();
    let mut edd = h.sample("nosecret");
    edd.spec.defender.console.credentials_secret_ref.name = "not-there".into();
    h.create(&edd).await.unwrap();
    let st = h.wait_condition("nosecret", "Stalled", "True", Duration::from_secs(30)).await;
    let stalled = st.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, "SecretNotFound");
    assert_eq!(stalled.message, "Secret default/not-there not found");
    assert!(h.sandbox.gate().calls().is_empty(), "AWS was called for a resource that cannot be reconciled");
    assert!(h.condition("nosecret", "Ready").await.is_some_and(|c| c.status == "False"));

    // The user creates the Secret: the resource converges without being touched again.
    let (user, pass) = (h.sandbox.console().username().to_string(), h.sandbox.console().password().to_string());
    let url = h.sandbox.console().url();
    h.put_secret("not-there", &[("username", &user), ("password", &pass), ("url", &url)]).await.unwrap();
    h.wait_condition("nosecret", "Ready", "True", READY_TIMEOUT).await;
    assert!(h.condition("nosecret", "Stalled").await.is_some_and(|c| c.status == "False"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_stalls_with_every_problem_and_no_aws_call() {
    let h = Harness::start().await.unwrap();
    let mut edd = h.sample("invalid");
    // Accepted by the schema, refused by validation.
    edd.spec.defender.console_address = Some("https://console.example.com/path".into());
    edd.spec.workers.as_mut().unwrap().auto_scaling_group.subnet_ids = vec!["sn-123".into()];
    h.create(&edd).await.unwrap();
    let st = h.wait_condition("invalid", "Stalled", "True", Duration::from_secs(30)).await;
    let stalled = st.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, "InvalidSpec");
    assert!(stalled.message.contains("defender.consoleAddress"), "{}", stalled.message);
    assert!(stalled.message.contains("\"sn-123\" is not a subnet id"), "{}", stalled.message);
    assert!(h.sandbox.gate().calls().is_empty(), "AWS was called for an invalid spec");
    // The user also sees it as an Event.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), "default");
    let found = eventually(Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("InvalidSpec") && e.type_.as_deref() == Some("Warning"))
    })
    .await;
    assert!(found.is_some(), "no InvalidSpec Warning event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_console_rate_limits_are_retried_until_ready() {
    let h = Harness::start().await.unwrap();
    // More throttles than the SDK's own 3 attempts absorb: the reconcile fails and backs off.
    h.sandbox.gate().add_fault(Fault::new("ecs", FaultKind::Throttle).on("CreateService").times(4));
    h.sandbox.gate().add_fault(Fault::new("autoscaling", FaultKind::Status(503)).on("CreateAutoScalingGroup").times(4));
    h.sandbox.console().faults().inject(
        FaultRule::on("defenders/ecs-task.json", ConsoleFault::TooManyRequests { retry_after: Some(1) }).times(4),
    );
    h.create(&h.sample("flaky")).await.unwrap();
    let edd = h.wait_condition("flaky", "Ready", "True", READY_TIMEOUT).await;
    assert_eq!(edd.status.unwrap().defenders_connected, Some(2));
    let counts = h.sandbox.gate().counts();
    assert!(counts["ecs:CreateService"] >= 5, "{counts:?}");
    // No duplicates despite the retries.
    let aws = h.aws().await;
    assert_eq!(aws.ecs.list_services().cluster("flaky").send().await.unwrap().service_arns().len(), 1);
    assert_eq!(aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap().auto_scaling_groups().len(), 1);
    // The failures are counted by category and by call outcome.
    assert!(
        h.metric("ecs_defender_operator_reconcile_failures_total{category=\"AwsUnavailable\"}") >= 1.0,
        "{}",
        h.metrics.render()
    );
    assert!(
        h.metric("ecs_defender_operator_aws_calls_total{operation=\"ecs:CreateService\",outcome=\"transient_error\"}")
            >= 1.0
    );
    assert!(
        h.metric("ecs_defender_operator_console_calls_total{operation=\"ecs-task.json\",outcome=\"rate_limited\"}")
            >= 4.0
    );
    assert_eq!(
        h.metric("ecs_defender_operator_aws_calls_total{operation=\"ecs:CreateService\",outcome=\"success\"}"),
        1.0
    );

    // The operator's endpoints.
    let http = reqwest::Client::new();
    let metrics = http.get(format!("{}/metrics", h.http_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ecs_defender_operator_reconciles_total"), "{metrics}");
    assert!(metrics.contains("ecs_defender_operator_reconcile_duration_seconds_bucket"));
    assert_eq!(http.get(format!("{}/healthz", h.http_url)).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{}/readyz", h.http_url)).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_console_credentials_stall_with_a_clear_reason() {
    let h = Harness::start().await.unwrap();
    h.put_secret("pc-console", &[("username", "admin"), ("password", "wrong")]).await.unwrap();
    h.create(&h.sample("badcreds")).await.unwrap();
    let st = h.wait_condition("badcreds", "Stalled", "True", READY_TIMEOUT).await;
    let stalled = st.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, "ConsoleUnauthorized");
    assert!(stalled.message.contains("rejected the credentials"), "{}", stalled.message);
    assert!(!stalled.message.contains("wrong"), "the password leaked into status");
    // The login is checked before the first AWS change: nothing was created.
    let mutations: Vec<_> =
        h.sandbox.gate().calls().into_iter().filter(|c| c.mutating && c.service != "moto").map(|c| c.key()).collect();
    assert!(mutations.is_empty(), "{mutations:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_needs_neither_the_console_secret_nor_a_valid_spec() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("orphaned")).await.unwrap();
    h.wait_condition("orphaned", "Ready", "True", READY_TIMEOUT).await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets.delete("pc-console", &DeleteParams::default()).await.unwrap();
    h.api
        .patch(
            "orphaned",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"defender": {"consoleAddress": "not a host/x"}}})),
        )
        .await
        .unwrap();
    h.wait_condition("orphaned", "Stalled", "True", Duration::from_secs(30)).await;
    h.api.delete("orphaned", &DeleteParams::default()).await.unwrap();
    h.wait_gone("orphaned", Duration::from_secs(120)).await;
    let aws = h.aws().await;
    assert!(aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap().auto_scaling_groups().is_empty());
    let clusters = aws.ecs.describe_clusters().clusters("orphaned").send().await.unwrap();
    assert!(clusters.clusters().iter().all(|c| c.status() != Some("ACTIVE")), "cluster left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_with_a_hint_when_the_crd_is_missing() {
    ecs_defender_operator::install_crypto_provider();
    let cp = sandbox::control_plane::ControlPlane::start().await.unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-defender-operator"))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("METRICS_ADDR", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(format!("{stdout}{stderr}").contains("is the CRD installed?"), "stdout: {stdout}\nstderr: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_resource_is_observed_but_never_changed() {
    let h = Harness::start().await.unwrap();
    let mut edd = h.sample("paused");
    edd.spec.suspend = true;
    h.create(&edd).await.unwrap();
    let found = eventually(Duration::from_secs(30), || async {
        h.condition("paused", "Ready").await.filter(|c| c.reason == "Suspended")
    })
    .await
    .expect("no Suspended condition");
    assert!(found.message.contains("spec.suspend is set"), "{}", found.message);
    assert!(h.sandbox.gate().calls().iter().all(|c| !c.mutating), "a suspended resource changed AWS");
    // Resuming converges.
    h.api
        .patch("paused", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})))
        .await
        .unwrap();
    h.wait_condition("paused", "Ready", "True", READY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_teardown_says_why_and_orphan_lets_go() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("stuck")).await.unwrap();
    h.wait_condition("stuck", "Ready", "True", READY_TIMEOUT).await;
    // Without its AWS credentials the operator cannot tear down.
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets.delete("aws", &DeleteParams::default()).await.unwrap();
    h.api.delete("stuck", &DeleteParams::default()).await.unwrap();
    // (The Secret's deletion alone already stalls the resource; the teardown's status follows.)
    let stalled = eventually(Duration::from_secs(30), || async {
        h.condition("stuck", "Stalled").await.filter(|c| c.status == "True" && c.message.contains("teardown"))
    })
    .await
    .expect("no Stalled condition about the teardown");
    assert_eq!(stalled.reason, "SecretNotFound");
    assert!(stalled.message.contains("teardown blocked: Secret default/aws not found"), "{}", stalled.message);
    assert!(stalled.message.contains("deletionPolicy: Orphan"), "{}", stalled.message);
    // The user chooses to keep AWS as it is: the resource goes, AWS is untouched.
    h.sandbox.gate().clear_calls();
    h.api
        .patch(
            "stuck",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"deletionPolicy": "Orphan"}})),
        )
        .await
        .unwrap();
    h.wait_gone("stuck", Duration::from_secs(30)).await;
    assert!(h.sandbox.gate().calls().iter().all(|c| !c.mutating));
}
