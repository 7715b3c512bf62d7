//! Quiet reconciles (src/reconcile/glance.rs): a Ready resource's resync is a glance (one
//! DescribeServices plus batched reads shared by the fleet), not a full observation, and patches
//! nothing; drift the glance sees is put back within a resync, drift only a full observation sees
//! waits for the deep resync; a wait that goes on backs off and reads only what it waits for; our
//! own status patches do not start another look.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{Harness, eventually};
use kube::ResourceExt;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The gate's calls per "service:Operation" made while `f` runs.
async fn calls_during(h: &Harness, f: impl Future<Output = ()>) -> BTreeMap<String, u64> {
    let before = h.sandbox.gate().counts();
    f.await;
    let mut after = h.sandbox.gate().counts();
    for (k, v) in after.iter_mut() {
        *v -= before.get(k).copied().unwrap_or(0);
    }
    after.retain(|_, v| *v > 0);
    after
}

/// The API server's count of `verb` requests for `resource` (its own /metrics), summed over codes.
async fn apiserver_requests(h: &Harness, verb: &str, resource: &str) -> u64 {
    let req = http::Request::get("/metrics").body(vec![]).unwrap();
    let text = h.client.request_text(req).await.expect("the API server's /metrics");
    let (verb, resource) = (format!("verb=\"{verb}\""), format!("resource=\"{resource}\""));
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains(&verb) && l.contains(&resource))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn total(c: &BTreeMap<String, u64>) -> u64 {
    c.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_resources_resync_with_a_batched_glance_and_patch_nothing() {
    let h = Harness::start_full(Default::default(), |c| {
        c.steady_requeue = Duration::from_secs(2);
        c.deep_resync = Duration::from_secs(3600);
    })
    .await
    .unwrap();
    let names = ["quiet-a", "quiet-b", "quiet-c"];
    for n in names {
        h.create(&h.sample(n)).await.unwrap();
    }
    for n in names {
        h.wait_condition(n, "Ready", "True", READY_TIMEOUT).await;
    }
    // Let the last passes after Ready settle into resyncs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let versions: Vec<String> = {
        let mut v = vec![];
        for n in names {
            v.push(h.api.get(n).await.unwrap().resource_version().unwrap());
        }
        v
    };
    let reconciles = h.metric("ecs_defender_operator_reconciles_total");
    let gets = |r: &'static str| apiserver_requests(&h, "GET", r);
    let (secrets, objects) = (gets("secrets").await, gets("ecsdefenderdeployments").await);
    // The full passes before did read them (so the counter is the one that would show it).
    assert!(secrets > 0 && objects > 0, "no GETs of Secrets ({secrets}) or resources ({objects}) counted");
    let window = Duration::from_secs(12);
    let calls = calls_during(&h, tokio::time::sleep(window)).await;
    let reconciled = h.metric("ecs_defender_operator_reconciles_total") - reconciles;
    println!("{reconciled} reconciles in {window:?}: {calls:?}");
    // A quiet look asks the API server for nothing: not the object, not its Secrets.
    let (secrets, objects) = (gets("secrets").await - secrets, gets("ecsdefenderdeployments").await - objects);
    assert_eq!((secrets, objects), (0, 0), "GETs of Secrets and of resources in {reconciled} quiet reconciles");
    // Only the glance's reads: nothing a full observation adds.
    for op in calls.keys() {
        assert!(
            [
                "ecs:DescribeServices",
                "ecs:DescribeClusters",
                "autoscaling:DescribeAutoScalingGroups",
                "ec2:DescribeLaunchTemplates",
                "ssm:GetParameters"
            ]
            .contains(&op.as_str()),
            "a resync made {op}: {calls:?}"
        );
    }
    // One DescribeServices per resync: 3 resources every 2 s, about 18 (the reconcile's own time
    // adds to the 2 s). Our own status patches start no reconcile of their own.
    let resyncs = calls["ecs:DescribeServices"] as f64;
    assert!((10.0..=20.0).contains(&resyncs), "{resyncs} resyncs of 3 resources in {window:?}");
    assert!(reconciled <= resyncs + 3.0, "{reconciled} reconciles for {resyncs} resyncs");
    // The batched reads answer for several resources at once (at the default resync, 300 s, one
    // answer serves up to 100 resources for 150 s: `make bench`).
    for op in ["ecs:DescribeClusters", "autoscaling:DescribeAutoScalingGroups", "ec2:DescribeLaunchTemplates"] {
        let n = calls.get(op).copied().unwrap_or(0) as f64;
        assert!(n <= resyncs / 2.0, "{n} {op} for {resyncs} resyncs: not batched");
    }
    // Nothing patched: no status churn for watchers (Argo CD, Flux) to see.
    for (n, v) in names.iter().zip(&versions) {
        assert_eq!(&h.api.get(n).await.unwrap().resource_version().unwrap(), v, "{n} was patched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_the_glance_is_put_back_within_a_resync_and_the_rest_at_the_deep_resync() {
    let h = Harness::start_full(Default::default(), |c| {
        c.steady_requeue = Duration::from_secs(2);
        // Long enough that the service's repair below comes before the first deep resync.
        c.deep_resync = Duration::from_secs(45);
    })
    .await
    .unwrap();
    h.create(&h.sample("glance")).await.unwrap();
    let st = h.wait_condition("glance", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    let aws = h.aws().await;
    // The resyncs right after Ready are glances too: the pass that found it Ready left what it saw
    // as the baseline, though its own glance looked only at what it waited for.
    let calls = calls_during(&h, tokio::time::sleep(Duration::from_secs(5))).await;
    let full: Vec<_> = calls.keys().filter(|op| op.contains("List") || op.contains("ContainerInstances")).collect();
    assert!(full.is_empty(), "a full pass at the first resyncs after Ready: {calls:?}");

    // The service deleted: the glance's DescribeServices sees it; put back within a resync or two.
    let before = h.sandbox.gate().counts();
    aws.ecs.delete_service().cluster("glance").service("glance-defender").force(true).send().await.unwrap();
    let deleted = std::time::Instant::now();
    eventually(Duration::from_secs(20), || async {
        let s = aws.ecs.describe_services().cluster("glance").services("glance-defender").send().await.ok()?;
        s.services().iter().any(|s| s.status() == Some("ACTIVE")).then_some(())
    })
    .await
    .expect("the deleted service was not created again within 20 s (resync 2 s)");
    println!("service re-created {:.1} s after it was deleted", deleted.elapsed().as_secs_f64());
    h.wait_condition("glance", "Ready", "True", READY_TIMEOUT).await;
    // The full passes of the repair took the glance's answers and recalled what only this
    // resource changes: nothing of that was read again.
    let after = h.sandbox.gate().counts();
    let recalled = [
        "ecs:DescribeTaskDefinition",
        "iam:GetRole",
        "iam:GetRolePolicy",
        "secretsmanager:DescribeSecret",
        "ec2:DescribeLaunchTemplateVersions",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
        "ec2:DescribeSecurityGroups",
    ];
    let made = |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    let reread: Vec<(&str, u64)> = recalled.iter().map(|op| (*op, made(op))).filter(|(_, n)| *n > 0).collect();
    assert_eq!(reread, [], "read again while repairing the service (before the deep resync)");

    // The revision deregistered: no glance reads it, so nothing happens at the next resyncs...
    let td = st.task_definition_arn.clone().unwrap();
    let registers = h.sandbox.gate().counts().get("ecs:RegisterTaskDefinition").copied().unwrap_or(0);
    // The deep resync counts from the last full pass: the passes that follow the service's
    // re-creation (until every glance matches) are over after a few resyncs.
    tokio::time::sleep(Duration::from_secs(8)).await;
    aws.ecs.deregister_task_definition().task_definition(&td).send().await.unwrap();
    let deregistered = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = h.sandbox.gate().counts().get("ecs:RegisterTaskDefinition").copied().unwrap_or(0);
    assert_eq!(now, registers, "a resync did a full observation before the deep resync was due");
    // ...until the deep resync, which registers a new revision.
    let found = eventually(Duration::from_secs(60), || async {
        let edd = h.api.get("glance").await.ok()?;
        let arn = edd.status?.task_definition_arn?;
        (arn != td).then_some(arn)
    })
    .await
    .expect("the deregistered revision was not replaced at the deep resync");
    println!("revision replaced {:.1} s after it was deregistered", deregistered.elapsed().as_secs_f64());
    assert!(found.ends_with("glance-defender:2"), "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_goes_on_backs_off_and_reads_only_what_it_waits_for() {
    let h = Harness::start_full(Default::default(), |c| {
        c.converging_requeue = Duration::from_millis(500);
        c.max_wait = Duration::from_secs(8);
    })
    .await
    .unwrap();
    // No public IP in the default VPC's public subnets: the instances start but can never reach
    // ECS, so they never register (sandbox/src/ecs_world/network.rs).
    let mut edd = h.sample("stuck");
    edd.spec.workers.as_mut().unwrap().associate_public_ip_address = Some(false);
    h.create(&edd).await.unwrap();
    eventually(Duration::from_secs(60), || async {
        let c = h.condition("stuck", "WorkersReady").await?;
        let st = h.api.get("stuck").await.ok()?.status?;
        (c.status == "False" && st.service_arn.is_some()).then_some(())
    })
    .await
    .expect("the service was not created while the instances wait");
    tokio::time::sleep(Duration::from_secs(10)).await; // the instances are InService by now
    let version = h.api.get("stuck").await.unwrap().resource_version().unwrap();
    let window = Duration::from_secs(40);
    let calls = calls_during(&h, tokio::time::sleep(window)).await;
    println!("waiting {window:?}: {} calls {calls:?}", total(&calls));
    // Without backoff: a full observation (~10 reads) every 0.5 s, ~800 calls. With it: looks at
    // 0.5, 1, 2, 4, 8, 8, ... s, two reads each (the cluster's counts and the group).
    assert!(total(&calls) <= 30, "{} calls in {window:?} of waiting: {calls:?}", total(&calls));
    for op in calls.keys() {
        assert!(
            ["ecs:DescribeClusters", "autoscaling:DescribeAutoScalingGroups", "ecs:DescribeServices"]
                .contains(&op.as_str()),
            "the wait read {op}: {calls:?}"
        );
    }
    assert_eq!(h.api.get("stuck").await.unwrap().resource_version().unwrap(), version, "status churned");

    // Progress ends the backoff: the instances get a way out and the resource is Ready soon after.
    let patch = serde_json::json!({"spec": {"workers": {"associatePublicIpAddress": null}}});
    h.api.patch("stuck", &Default::default(), &kube::api::Patch::Merge(patch)).await.unwrap();
    h.wait_condition("stuck", "Ready", "True", READY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_waiting_for_its_defenders_is_woken_when_they_connect() {
    use sandbox::{
        console::{ConsoleConfig, ConsoleVariant},
        world::SandboxOptions,
    };
    // The Console lists each Defender's cluster only 40 s after it connects. The wait for them
    // backs off (looks at 1, 3, 7, 15, 31, 63 s after the last progress), so without a wake the
    // look after the clusters show comes ≥ 17 s late whenever the tasks started.
    let delay = Duration::from_secs(40);
    let console = ConsoleConfig { variant: ConsoleVariant::ClusterLate, cluster_delay: delay, ..Default::default() };
    let h = Harness::start_with(SandboxOptions { console: Some(console), ..Default::default() }).await.unwrap();
    h.create(&h.sample("woken")).await.unwrap();
    let edd = h.wait_condition("woken", "Ready", "True", READY_TIMEOUT).await;
    let ready_at =
        edd.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().last_transition_time;
    let visible_at = h
        .sandbox
        .console()
        .defenders()
        .iter()
        .filter(|d| d.cluster == "woken")
        .map(|d| d.cluster_visible_at)
        .max()
        .expect("the resource's Defenders");
    let lag = (ready_at.0.as_millisecond() - visible_at.timestamp_millis()) as f64 / 1000.0;
    println!("Ready {lag:.1} s after the last Defender's cluster showed");
    // lastTransitionTime has whole seconds.
    assert!(lag <= 8.0, "Ready {lag:.1} s after the Console listed the last Defender in its cluster");
}
