//! Rate budgets (issue 12): with a low ECS and Console budget, several resources converge to Ready
//! while the requests that reach the AWS gate and the Console simulator (SDK retries, logins and
//! paging included) never exceed `burst + rate x window` in any window, and the waits show in the
//! operator's metrics. Without the budgets the same run peaks at ~21 ECS requests and ~7 Console
//! requests in one second (three resources polling every 500 ms) and both checks fail.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{Harness, eventually, is_ready, one_instance};
use ecs_defender_operator::budget::{AwsRateLimits, RateLimit};
use sandbox::world::SandboxOptions;

const RESOURCES: usize = 3;
const ECS: RateLimit = RateLimit::new(4.0, 4);
const CONSOLE: RateLimit = RateLimit::new(1.0, 2);

/// One instance per resource: the test is about request pacing, not moto's instance count.
/// The largest excess of requests over `burst + rate x (window + slack)` in any window between two
/// requests of `times` (sorted), with the window where it happens; `None` when every window holds.
fn worst_window(times: &[SystemTime], limit: RateLimit, slack: Duration) -> Option<(usize, Duration)> {
    for i in 0..times.len() {
        for j in i..times.len() {
            let window = times[j].duration_since(times[i]).unwrap_or_default();
            let allowed = f64::from(limit.burst) + limit.per_second * (window + slack).as_secs_f64();
            let count = j - i + 1;
            if count as f64 > allowed + 1e-9 {
                return Some((count, window));
            }
        }
    }
    None
}

/// The highest number of requests in any one-second window (for the report).
fn peak_per_second(times: &[SystemTime]) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]).unwrap_or_default() < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn aws_and_console_requests_stay_within_their_budgets_while_resources_converge() {
    let h = Harness::start_full(SandboxOptions::default(), |c| {
        let mut aws = AwsRateLimits::default();
        aws.set("ecs", Some(ECS)).unwrap();
        c.aws_rate_limits = aws;
        c.console_rate_limit = Some(CONSOLE);
    })
    .await
    .unwrap();
    let start = Instant::now();
    for i in 0..RESOURCES {
        h.create(&one_instance(h.sample(&format!("budget-{i}")))).await.unwrap();
    }
    let all_ready = eventually(Duration::from_secs(55), || async {
        let list = h.api.list(&Default::default()).await.ok()?;
        (list.items.len() == RESOURCES && list.items.iter().all(is_ready)).then_some(())
    })
    .await;
    let took = start.elapsed();
    assert!(all_ready.is_some(), "not all {RESOURCES} resources Ready within 55 s under the budgets");

    // AWS: the gate logs each call when it answers, so a slow answer can make two calls look closer
    // than they were sent; half a second of slack covers moto's answer times.
    let mut ecs: Vec<SystemTime> =
        h.sandbox.gate().calls().iter().filter(|c| c.service == "ecs").map(|c| c.at).collect();
    ecs.sort();
    let waits = h.metric("ecs_defender_operator_aws_rate_limit_waits_total{service=\"ecs\"}");
    let waited = h.metric("ecs_defender_operator_aws_rate_limit_wait_seconds_total{service=\"ecs\"}");
    println!(
        "{RESOURCES} resources Ready in {took:.1?}: {} ECS requests, peak {} in one second, {waits} waited {waited:.1} s in all",
        ecs.len(),
        peak_per_second(&ecs),
    );
    assert!(ecs.len() > (ECS.burst as usize) * 4, "too few ECS requests to judge the pacing: {}", ecs.len());
    if let Some((count, window)) = worst_window(&ecs, ECS, Duration::from_millis(500)) {
        panic!("{count} ECS requests within {window:?}: more than the budget {ECS} allows");
    }
    assert!(waits > 0.0 && waited > 0.0, "the ECS waits show in the metrics ({waits}, {waited})");
    // Other services keep their own (default) budgets: they never waited behind ECS's.
    let mut asg: Vec<SystemTime> =
        h.sandbox.gate().calls().iter().filter(|c| c.service == "autoscaling").map(|c| c.at).collect();
    asg.sort();
    assert!(!asg.is_empty());

    // Console: the simulator logs each request as it arrives.
    let mut console: Vec<SystemTime> = h.sandbox.console().requests().iter().map(|r| r.at.into()).collect();
    console.sort();
    let console_waits = h.metric("ecs_defender_operator_console_rate_limit_waits_total");
    println!(
        "{} Console requests, peak {} in one second, {console_waits} waited",
        console.len(),
        peak_per_second(&console)
    );
    if let Some((count, window)) = worst_window(&console, CONSOLE, Duration::from_millis(50)) {
        panic!("{count} Console requests within {window:?}: more than the budget {CONSOLE} allows");
    }
    assert!(console_waits > 0.0, "the Console waits show in the metrics");
}
