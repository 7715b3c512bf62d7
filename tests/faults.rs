//! Reliability under faults (issue 13, "Faults"), measured at the gate and the Console simulator,
//! that is in requests that reached "AWS" and the Console, SDK retries included:
//!
//! - 20 resources, with 20% throttling and 5% 5xx on every AWS service and 10% Console 429/500,
//!   reach Ready and are deleted with nothing left, in at most 3x the requests of the same run
//!   without faults;
//! - a total AWS outage (every call 503) while resources converge: the operator, run as the
//!   released binary with its default timings, keeps its request rate under a stated bound, and
//!   everything converges once AWS is back. `make test` holds the outage for 60 s, `make soak`
//!   for five minutes (`OUTAGE_SECONDS`).

mod common;

use std::time::{Duration, Instant};

use common::{
    Harness, eventually,
    inventory::Inventory,
    is_ready, one_instance,
    process::{Operator, World},
};
use kube::api::{DeleteParams, PostParams};
use sandbox::{
    console::{Fault as ConsoleFault, FaultRule},
    gate::faults::{Fault, FaultKind},
};

const RESOURCES: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(420);

/// One instance per resource: the fleet is about the operator, not moto's instance count.
/// Requests that reached the gate from the operator (the sandbox's own `/moto-api` calls aside).
fn aws_requests(h: &Harness) -> u64 {
    h.sandbox.gate().calls().iter().filter(|c| c.service != "moto").count() as u64
}

/// Creates the fleet, waits for every resource to be Ready, deletes it and waits until it is gone
/// and AWS holds nothing; returns (AWS requests, Console requests, seconds).
async fn fleet_round_trip(h: &Harness, what: &str) -> (u64, u64, f64) {
    let start = Instant::now();
    let names: Vec<String> = (0..RESOURCES).map(|i| format!("fleet-{i:02}")).collect();
    for name in &names {
        h.api.create(&PostParams::default(), &one_instance(h.sample(name))).await.unwrap();
    }
    let all_ready = eventually(TIMEOUT, || async {
        let list = h.api.list(&Default::default()).await.ok()?;
        (list.items.len() == RESOURCES && list.items.iter().all(is_ready)).then_some(())
    })
    .await;
    if all_ready.is_none() {
        let list = h.api.list(&Default::default()).await.unwrap();
        let stuck: Vec<_> = list
            .items
            .iter()
            .filter(|e| !is_ready(e))
            .map(|e| (e.metadata.name.clone(), e.status.as_ref().map(|s| s.conditions.clone())))
            .collect();
        panic!("{what}: not every resource is Ready after {TIMEOUT:?}: {stuck:#?}");
    }
    let ready_after = start.elapsed();
    for name in &names {
        h.api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let gone =
        eventually(TIMEOUT, || async { h.api.list(&Default::default()).await.ok()?.items.is_empty().then_some(()) })
            .await;
    assert!(gone.is_some(), "{what}: resources still exist {TIMEOUT:?} after the delete");
    let seconds = start.elapsed().as_secs_f64();
    // Counted before the test's own reads below reach the gate.
    let requests = (aws_requests(h), h.sandbox.console().request_count());
    h.sandbox.gate().clear_faults();
    h.sandbox.console().faults().clear();
    let left = Inventory::read(&h.sandbox.aws_config().await).await;
    assert_eq!(left, Inventory::default(), "{what}: left in AWS after the delete");
    println!(
        "{what}: {RESOURCES} resources Ready in {:.0} s, deleted at {seconds:.0} s; {} AWS requests ({:.1}/resource), {} Console requests",
        ready_after.as_secs_f64(),
        requests.0,
        requests.0 as f64 / RESOURCES as f64,
        requests.1
    );
    (requests.0, requests.1, seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_resources_under_aws_and_console_faults_converge_and_delete_within_three_times_the_calls() {
    // Both fleets run side by side, so they share the machine's load alike.
    let (clean, faulty) = tokio::join!(Harness::start(), Harness::start());
    let (clean, h) = (clean.unwrap(), faulty.unwrap());
    let gate = h.sandbox.gate();
    // The first fault that fires wins: 20% throttled, then 5% of all calls answered 503.
    gate.add_fault(Fault::new("*", FaultKind::Throttle).with_rate(0.20));
    gate.add_fault(Fault::new("*", FaultKind::Status(503)).with_rate(0.05 / 0.80));
    let console = h.sandbox.console();
    console.faults().inject(FaultRule::everywhere(ConsoleFault::TooManyRequests { retry_after: Some(1) }).rate(0.05));
    console.faults().inject(FaultRule::everywhere(ConsoleFault::ServerError).rate(0.05 / 0.95));
    let ((clean_aws, clean_console, _), (faulty_aws, faulty_console, _)) =
        tokio::join!(fleet_round_trip(&clean, "fault-free"), fleet_round_trip(&h, "faults"));

    // The faults really fired, in about the proportions asked for.
    let calls = gate.calls();
    let throttled = calls
        .iter()
        .filter(|c| c.error_code.as_deref().is_some_and(|e| e.contains("Throttl") || e == "RequestLimitExceeded"))
        .count();
    let unavailable =
        calls.iter().filter(|c| c.error_code.as_deref().is_some_and(|e| e.starts_with("ServiceUnavailable"))).count();
    let share = |n: usize| n as f64 / faulty_aws as f64;
    println!(
        "faults fired: {throttled} throttled ({:.0}%), {unavailable} 503 ({:.0}%)",
        share(throttled) * 100.0,
        share(unavailable) * 100.0
    );
    assert!((0.12..0.30).contains(&share(throttled)), "throttled share {:.2}", share(throttled));
    assert!((0.02..0.10).contains(&share(unavailable)), "503 share {:.2}", share(unavailable));

    let (clean, faulty) = (clean_aws + clean_console, faulty_aws + faulty_console);
    println!("requests: fault-free {clean}, with faults {faulty} ({:.2}x)", faulty as f64 / clean as f64);
    assert!(faulty <= 3 * clean, "{faulty} requests with faults, more than 3x the {clean} of the fault-free run");
}

fn outage_seconds() -> u64 {
    std::env::var("OUTAGE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

/// The bound stated in the README: averaged over the outage, at most this many requests per
/// second per resource waiting on AWS (the SDK's 3 attempts per call, the operator's exponential
/// backoff from 5 s up to 5 minutes).
const OUTAGE_REQUESTS_PER_RESOURCE_SECOND: f64 = 0.5;
/// ... and over the second half of the outage, once backoff has grown.
const LATE_OUTAGE_REQUESTS_PER_RESOURCE_SECOND: f64 = 0.1;
const OUTAGE_RESOURCES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_aws_outage_is_ridden_out_at_a_bounded_request_rate_and_converges_after() {
    let world = World::start().await;
    // The released binary with its default timings (the 5 s converging requeue included).
    let op = Operator::start("outage", &world, &[("LEADER_ELECT", "false"), ("REQUEUE_CONVERGING_SECONDS", "5")]).await;
    let names: Vec<String> = (0..OUTAGE_RESOURCES).map(|i| format!("outage-{i}")).collect();
    for name in &names {
        world.api.create(&PostParams::default(), &one_instance(world.sample(name))).await.unwrap();
    }
    // AWS goes away while the fleet is mid-create.
    let gate = world.sandbox.gate();
    eventually(Duration::from_secs(60), || async { (world.count("ecs:CreateCluster") >= 3).then_some(()) })
        .await
        .expect("no cluster created");
    gate.add_fault(Fault::new("*", FaultKind::Status(503)));
    let outage = Duration::from_secs(outage_seconds());
    let began = Instant::now();
    let at_start = world.sandbox.gate().calls().len();
    tokio::time::sleep(outage / 2).await;
    let at_half = world.sandbox.gate().calls().len();
    tokio::time::sleep(outage / 2).await;
    let at_end = world.sandbox.gate().calls().len();
    let secs = began.elapsed().as_secs_f64();
    gate.clear_faults();
    let per = |n: usize, s: f64| n as f64 / s / OUTAGE_RESOURCES as f64;
    let (all, late) = (per(at_end - at_start, secs), per(at_end - at_half, secs / 2.0));
    println!(
        "outage {secs:.0} s, {OUTAGE_RESOURCES} resources: {} requests, {all:.3}/s per resource overall, {late:.3}/s per resource in the second half",
        at_end - at_start
    );
    assert!(all <= OUTAGE_REQUESTS_PER_RESOURCE_SECOND, "{all:.3} requests/s per resource during the outage");
    assert!(late <= LATE_OUTAGE_REQUESTS_PER_RESOURCE_SECOND, "{late:.3} requests/s per resource late in the outage");
    assert!(at_end > at_start, "no request at all during the outage: the operator gave up");

    // The longest backoff is 5 minutes; every resource converges within one more after AWS returns.
    let recovered = Instant::now();
    let all_ready = eventually(Duration::from_secs(420), || async {
        for name in &names {
            if !world.ready(name).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(all_ready.is_some(), "not every resource is Ready after the outage; log:\n{}", op.log());
    println!("all {OUTAGE_RESOURCES} Ready {:.0} s after AWS returned", recovered.elapsed().as_secs_f64());
    // Nothing twice: one cluster and one group per resource.
    let aws = sandbox::world::AwsClientsForTests::new(&world.sandbox.aws_config().await);
    let clusters = aws.ecs.list_clusters().send().await.unwrap().cluster_arns().len();
    let groups = aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap().auto_scaling_groups().len();
    assert_eq!((clusters, groups), (OUTAGE_RESOURCES, OUTAGE_RESOURCES));
}
