//! Faults injected by the gate, seen by the AWS SDK for Rust as AWS would send them; the call log
//! and the control API.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_ecs::{
    error::{ProvideErrorMetadata, SdkError},
    operation::list_clusters::ListClustersError,
};
use common::*;
use sandbox::gate::{Fault, FaultKind, RateLimit};

/// Clients through the gate that make a single attempt, so every injected error surfaces.
async fn one_attempt(env: &Env) -> (aws_sdk_ecs::Client, aws_sdk_autoscaling::Client, aws_sdk_ec2::Client) {
    let cfg = sdk(&env.gate.url(), 1).await;
    (aws_sdk_ecs::Client::new(&cfg), aws_sdk_autoscaling::Client::new(&cfg), aws_sdk_ec2::Client::new(&cfg))
}

/// The HTTP status of the answer behind an SDK error (0: none). All AWS SDK crates share this type.
fn status<E>(err: &SdkError<E>) -> u16 {
    err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn throttling_looks_like_each_service_throttling() {
    let env = start().await;
    let (ecs, asg, ec2) = one_attempt(&env).await;
    env.gate.add_fault(Fault::new("ecs", FaultKind::Throttle).on("ListClusters"));
    env.gate.add_fault(Fault::new("autoscaling", FaultKind::Throttle));
    env.gate.add_fault(Fault::new("ec2", FaultKind::Throttle).on("DescribeInstances"));

    let err = ecs.list_clusters().send().await.unwrap_err();
    assert_eq!((err.code(), status(&err)), (Some("ThrottlingException"), 400), "{err:?}");
    assert_eq!(err.message(), Some("Rate exceeded"));
    let err = asg.describe_auto_scaling_groups().send().await.unwrap_err();
    assert_eq!((err.code(), status(&err)), (Some("Throttling"), 400), "{err:?}");
    let err = ec2.describe_instances().send().await.unwrap_err();
    assert_eq!((err.code(), status(&err)), (Some("RequestLimitExceeded"), 503), "{err:?}");
    ecs.describe_clusters().send().await.expect("other operations are not affected");

    let log: Vec<_> = env.gate.calls().into_iter().map(|c| (c.key(), c.status, c.error_code)).collect();
    assert!(log.contains(&("ecs:ListClusters".into(), 400, Some("ThrottlingException".into()))), "{log:?}");
    assert!(log.contains(&("ec2:DescribeInstances".into(), 503, Some("RequestLimitExceeded".into()))), "{log:?}");
}

#[tokio::test]
async fn the_sdk_retries_a_counted_throttle_and_succeeds() {
    let env = start().await;
    env.gate.add_fault(Fault::new("ecs", FaultKind::Throttle).on("ListClusters").times(1));
    env.ecs.list_clusters().send().await.expect("the SDK's standard retry gets through");
    let calls: Vec<_> = env.gate.calls().into_iter().filter(|c| c.operation == "ListClusters").collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0].status, calls[0].error_code.as_deref()), (400, Some("ThrottlingException")));
    assert_eq!((calls[1].status, calls[1].error_code.as_deref()), (200, None));
    assert!(env.gate.faults().list().is_empty(), "the counted fault is used up");
}

#[tokio::test]
async fn server_errors_carry_their_status_and_code() {
    let env = start().await;
    let (ecs, asg, ec2) = one_attempt(&env).await;
    env.gate.add_fault(Fault::new("ecs", FaultKind::Status(500)).on("ListClusters").times(1));
    env.gate.add_fault(Fault::new("autoscaling", FaultKind::Status(503)).times(1));
    env.gate.add_fault(Fault::new("ec2", FaultKind::Status(500)).times(1));

    let err = ecs.list_clusters().send().await.unwrap_err();
    assert_eq!(status(&err), 500);
    assert!(matches!(err.as_service_error(), Some(ListClustersError::ServerException(_))), "{err:?}");
    let err = asg.describe_auto_scaling_groups().send().await.unwrap_err();
    assert_eq!((err.code(), status(&err)), (Some("ServiceUnavailable"), 503), "{err:?}");
    let err = ec2.describe_instances().send().await.unwrap_err();
    assert_eq!((err.code(), status(&err)), (Some("InternalError"), 500), "{err:?}");
    ecs.list_clusters().send().await.expect("count used up");
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let env = start().await;
    env.ecs.list_clusters().send().await.unwrap(); // warm up the connection
    env.gate.add_fault(Fault::new("ecs", FaultKind::Latency(Duration::from_millis(400))).on("ListClusters").times(1));
    let t = Instant::now();
    env.ecs.list_clusters().send().await.expect("a slow answer is still an answer");
    assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
}

#[tokio::test]
async fn dropped_connections_are_transport_errors() {
    let env = start().await;
    let (ecs, _, _) = one_attempt(&env).await;
    env.gate.add_fault(Fault::new("ecs", FaultKind::Drop).on("ListClusters").times(1));
    let err = ecs.list_clusters().send().await.unwrap_err();
    assert!(matches!(err, SdkError::DispatchFailure(_) | SdkError::ResponseError(_)), "{err:?}");
    assert!(err.raw_response().is_none(), "no HTTP answer at all");
    let last = env.gate.calls().pop().unwrap();
    assert_eq!((last.status, last.error_code.as_deref()), (0, Some("ConnectionDropped")));
    // With retries (the default) the SDK gets through a single dropped connection.
    env.gate.add_fault(Fault::new("ecs", FaultKind::Drop).on("ListClusters").times(1));
    env.ecs.list_clusters().send().await.expect("retried after the drop");
}

#[tokio::test]
async fn fault_rate_is_a_probability() {
    let env = start().await;
    let (ecs, _, _) = one_attempt(&env).await;
    env.gate.add_fault(Fault::new("ecs", FaultKind::Status(503)).with_rate(0.0));
    for _ in 0..5 {
        ecs.list_clusters().send().await.expect("rate 0 never fires");
    }
    env.gate.clear_faults();
    env.gate.add_fault(Fault::new("ecs", FaultKind::Status(503)).with_rate(1.0));
    for _ in 0..3 {
        assert_eq!(status(&ecs.list_clusters().send().await.unwrap_err()), 503);
    }
}

#[tokio::test]
async fn request_rate_limit_throttles_bursts() {
    let env = start().await;
    let (ecs, asg, _) = one_attempt(&env).await;
    env.gate.faults().set_rate_limit("ecs", Some(RateLimit { per_second: 0.01, burst: 3.0 }));
    for _ in 0..3 {
        ecs.list_clusters().send().await.expect("within the burst");
    }
    let err = ecs.describe_clusters().send().await.unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));
    asg.describe_auto_scaling_groups().send().await.expect("other services have their own limits");
    env.gate.faults().set_rate_limit("ecs", None);
    ecs.list_clusters().send().await.expect("no limit any more");
}

#[tokio::test]
async fn the_call_log_records_services_operations_and_parameters() {
    let env = start().await;
    create_cluster(&env.ecs, "pc-ecs-cluster").await;
    env.ecs.describe_clusters().clusters("pc-ecs-cluster").send().await.unwrap();
    env.asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("a")
        .auto_scaling_group_names("b")
        .send()
        .await
        .unwrap();
    let calls = env.gate.calls();
    let create = calls.iter().find(|c| c.operation == "CreateCluster").unwrap();
    assert_eq!((create.service.as_str(), create.status, create.mutating), ("ecs", 200, true));
    assert_eq!(create.params.get("clusterName").map(String::as_str), Some("pc-ecs-cluster"));
    assert_eq!(create.region, "us-east-1");
    let asg = calls.iter().find(|c| c.service == "autoscaling").unwrap();
    assert_eq!((asg.operation.as_str(), asg.mutating), ("DescribeAutoScalingGroups", false));
    assert_eq!(asg.params.get("AutoScalingGroupNames").map(String::as_str), Some("a,b"));
    let counts = env.gate.counts();
    assert_eq!(counts.get("ecs:CreateCluster"), Some(&1));
    assert_eq!(counts.get("ecs:DescribeClusters"), Some(&1));
    env.gate.clear_calls();
    assert!(env.gate.calls().is_empty());
}

#[tokio::test]
async fn control_api_serves_the_log_counts_and_faults() {
    let env = start().await;
    let (ecs, _, _) = one_attempt(&env).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = env.gate.control_url();
    let added = http
        .post(format!("{base}/faults"))
        .json(&serde_json::json!({"service": "ecs", "operation": "ListClusters", "kind": "throttle", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    assert_eq!(ecs.list_clusters().send().await.unwrap_err().code(), Some("ThrottlingException"));
    ecs.list_clusters().send().await.unwrap();

    let counts: serde_json::Value = http.get(format!("{base}/counts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counts["ecs:ListClusters"], 2);
    let calls: serde_json::Value = http
        .get(format!("{base}/calls?service=ecs&operation=ListClusters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls[0]["errorCode"], "ThrottlingException");
    assert_eq!(calls[1]["status"], 200);
    assert!(calls[0]["at"].as_str().unwrap().ends_with('Z'));

    http.post(format!("{base}/faults"))
        .json(&serde_json::json!([{"service": "ecs", "kind": {"status": 503}}]))
        .send()
        .await
        .unwrap();
    let faults: serde_json::Value = http.get(format!("{base}/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(faults.as_array().unwrap().len(), 1);
    assert_eq!(status(&ecs.list_clusters().send().await.unwrap_err()), 503);
    assert_eq!(http.delete(format!("{base}/faults")).send().await.unwrap().status(), 204);
    ecs.list_clusters().send().await.expect("faults cleared");

    http.post(format!("{base}/rate-limits"))
        .json(&serde_json::json!({"service": "ecs", "perSecond": 0.01, "burst": 1}))
        .send()
        .await
        .unwrap();
    ecs.list_clusters().send().await.unwrap();
    assert_eq!(ecs.list_clusters().send().await.unwrap_err().code(), Some("ThrottlingException"));
    http.delete(format!("{base}/rate-limits")).send().await.unwrap();
    ecs.list_clusters().send().await.expect("limit removed");

    assert_eq!(http.post(format!("{base}/reset-log")).send().await.unwrap().status(), 204);
    let calls: serde_json::Value = http.get(format!("{base}/calls")).send().await.unwrap().json().await.unwrap();
    assert_eq!(calls, serde_json::json!([]));
}

#[tokio::test]
async fn a_hang_holds_the_nth_call_before_aws_and_a_hang_after_done_holds_its_answer() {
    let env = start().await;
    let (ecs, _, _) = one_attempt(&env).await;
    // The second CreateCluster never reaches moto and never returns; it is logged as it arrives.
    env.gate.add_fault(Fault::new("ecs", FaultKind::Hang).on("CreateCluster").after(1).times(1));
    ecs.create_cluster().cluster_name("first").send().await.expect("the first call passes");
    let held = tokio::spawn({
        let ecs = ecs.clone();
        async move { ecs.create_cluster().cluster_name("hung").send().await }
    });
    let logged = wait_for(Duration::from_secs(5), "the held call logged as it arrives", || async {
        env.gate.calls().into_iter().find(|c| c.operation == "CreateCluster" && c.error_code.as_deref() == Some("Hung"))
    })
    .await;
    assert!(logged.answer_lost);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a hung call got an answer");
    held.abort();
    let names: Vec<_> = env.ecs.list_clusters().send().await.unwrap().cluster_arns().to_vec();
    assert!(names.iter().any(|a| a.ends_with("/first")), "{names:?}");
    assert!(!names.iter().any(|a| a.ends_with("/hung")), "the hung call reached AWS: {names:?}");

    // The next CreateCluster is carried out, and its answer held back; logged once AWS did it.
    env.gate.add_fault(Fault::new("ecs", FaultKind::HangAfterDone).on("CreateCluster").times(1));
    let held = tokio::spawn({
        let ecs = ecs.clone();
        async move { ecs.create_cluster().cluster_name("done").send().await }
    });
    let logged = wait_for(Duration::from_secs(5), "the call logged once done", || async {
        env.gate.calls().into_iter().find(|c| c.operation == "CreateCluster" && c.status == 200 && c.answer_lost)
    })
    .await;
    assert_eq!(logged.params.get("clusterName").map(String::as_str), Some("done"), "{logged:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the answer was not held back");
    held.abort();
    let names: Vec<_> = env.ecs.list_clusters().send().await.unwrap().cluster_arns().to_vec();
    assert!(names.iter().any(|a| a.ends_with("/done")), "AWS did not do the work: {names:?}");
}
