//! The gate on the wire: every service the operator calls passes through it (logged, counted,
//! faultable), requests are signed as AWS checks them, and answers that get lost after AWS did the
//! work are lost the same way here.

mod common;

use std::time::Duration;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use common::*;
use sandbox::gate::{Fault, FaultKind};

#[tokio::test]
async fn every_service_passes_through_the_gate_by_operation_name() {
    let env = start().await;
    let cfg = sdk(&env.gate.url(), 1).await;
    let ssm = aws_sdk_ssm::Client::new(&cfg);
    let sts = aws_sdk_sts::Client::new(&cfg);
    let key = (sandbox::moto::ACCESS_KEY_ID, sandbox::moto::SECRET_ACCESS_KEY);

    ssm.get_parameter()
        .name("/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")
        .send()
        .await
        .unwrap();
    sts.get_caller_identity().send().await.unwrap();
    env.ec2.describe_vpcs().send().await.unwrap();
    let (status, _) =
        signed_query(&env.gate.url(), "iam", &[("Action", "ListRoles"), ("Version", "2010-05-08")], key).await;
    assert_eq!(status, 200);
    let (status, body) = signed_json(
        &env.gate.url(),
        "secretsmanager",
        "secretsmanager.CreateSecret",
        serde_json::json!({"Name": "pc-console", "SecretString": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let counts = env.gate.counts();
    for key in [
        "ssm:GetParameter",
        "sts:GetCallerIdentity",
        "ec2:DescribeVpcs",
        "iam:ListRoles",
        "secretsmanager:CreateSecret",
    ] {
        assert_eq!(counts.get(key), Some(&1), "{key} in {counts:?}");
    }
    let secret = env.gate.calls().into_iter().find(|c| c.service == "secretsmanager").unwrap();
    assert!(secret.mutating);

    // ... and each can be faulted like ECS.
    env.gate.add_fault(Fault::new("ssm", FaultKind::Throttle).times(1));
    env.gate.add_fault(Fault::new("sts", FaultKind::Status(503)).times(1));
    let err = ssm.get_parameter().name("/x").send().await.unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));
    let err = sts.get_caller_identity().send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
}

#[tokio::test]
async fn a_body_changed_after_signing_is_refused_as_aws_would() {
    let env = start().await;
    let body = serde_json::json!({"clusterName": "signed"}).to_string();
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "AmazonEC2ContainerServiceV20141113.CreateCluster"),
    ];
    let (status, text) = signed_request(&env.gate.url(), "ecs", &headers, body.clone())
        .tampered(&serde_json::json!({"clusterName": "tampered"}).to_string())
        .send()
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("InvalidSignatureException"), "{text}");
    let (status, _) = signed_request(&env.gate.url(), "ecs", &headers, body.clone()).send().await;
    assert_eq!(status, 200, "the same request, untouched, passes");
    // Bare moto takes the tampered one.
    let (status, _) = signed_request(env.moto.url(), "ecs", &headers, body)
        .tampered(&serde_json::json!({"clusterName": "tampered"}).to_string())
        .send()
        .await;
    assert_eq!(status, 200);

    // Query protocols answer SignatureDoesNotMatch.
    let form = "Action=DescribeAutoScalingGroups&Version=2011-01-01".to_string();
    let (status, text) =
        signed_request(&env.gate.url(), "autoscaling", &[("content-type", "application/x-www-form-urlencoded")], form)
            .tampered("Action=DescribeAutoScalingGroups&Version=2011-01-01&MaxRecords=1")
            .send()
            .await;
    assert_eq!(status, 403);
    assert!(text.contains("<Code>SignatureDoesNotMatch</Code>"), "{text}");
}

#[tokio::test]
async fn unknown_keys_are_refused_until_added() {
    let env = start().await;
    let other = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region("us-east-1")
        .endpoint_url(env.gate.url())
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "AKIAOTHERTESTKEY0000",
            "other-secret",
            None,
            None,
            "t",
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let ecs = aws_sdk_ecs::Client::new(&other);
    let err = ecs.list_clusters().send().await.unwrap_err();
    assert_eq!(err.code(), Some("UnrecognizedClientException"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    // A test with keys of its own declares them (or POST /credentials on the control API).
    env.gate.add_credentials("AKIAOTHERTESTKEY0000", "other-secret");
    ecs.list_clusters().send().await.expect("a known key");
    let wrong = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region("us-east-1")
        .endpoint_url(env.gate.url())
        .credentials_provider(aws_sdk_ecs::config::Credentials::new("AKIAOTHERTESTKEY0000", "wrong", None, None, "t"))
        .load()
        .await;
    let err = aws_sdk_ecs::Client::new(&wrong).list_clusters().send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"));
}

#[tokio::test]
async fn credentials_from_sts_are_accepted() {
    let env = start().await;
    let sts = aws_sdk_sts::Client::new(&sdk(&env.gate.url(), 1).await);
    let out =
        sts.assume_role().role_arn("arn:aws:iam::123456789012:role/ops").role_session_name("t").send().await.unwrap();
    let c = out.credentials().unwrap();
    let assumed = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region("us-east-1")
        .endpoint_url(env.gate.url())
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "assumed",
        ))
        .load()
        .await;
    aws_sdk_ecs::Client::new(&assumed).list_clusters().send().await.expect("STS's temporary key");
}

#[tokio::test]
async fn a_lost_answer_leaves_the_work_done_and_logged() {
    let env = start().await;
    let ecs = aws_sdk_ecs::Client::new(&sdk(&env.gate.url(), 1).await);
    env.gate.add_fault(Fault::new("ecs", FaultKind::DropResponse).on("CreateCluster").times(1));
    let err = ecs.create_cluster().cluster_name("lost").send().await.unwrap_err();
    assert!(err.raw_response().is_none(), "no answer: {err:?}");
    let created = env.moto_ecs.describe_clusters().clusters("lost").send().await.unwrap();
    assert_eq!(created.clusters()[0].status(), Some("ACTIVE"), "moto did the work");
    let call = env.gate.calls().into_iter().find(|c| c.operation == "CreateCluster").unwrap();
    assert_eq!((call.status, call.answer_lost), (200, true));
}

#[tokio::test]
async fn a_caller_that_times_out_does_not_cancel_the_call() {
    let env = start().await;
    // The call is slow (a latency fault), the caller gives up long before it ends.
    env.gate.add_fault(Fault::new("ecs", FaultKind::Latency(Duration::from_millis(800))).on("CreateCluster").times(1));
    let impatient = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region("us-east-1")
        .endpoint_url(env.gate.url())
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            sandbox::moto::ACCESS_KEY_ID,
            sandbox::moto::SECRET_ACCESS_KEY,
            None,
            None,
            "t",
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(Duration::from_millis(200)).build(),
        )
        .load()
        .await;
    let ecs = aws_sdk_ecs::Client::new(&impatient);
    assert!(ecs.create_cluster().cluster_name("slow").send().await.is_err(), "the caller timed out");
    wait_for(Duration::from_secs(5), "the call to finish in moto", || async {
        let c = env.moto_ecs.describe_clusters().clusters("slow").send().await.ok()?;
        (c.clusters().first()?.status() == Some("ACTIVE")).then_some(())
    })
    .await;
    let call = wait_for(Duration::from_secs(5), "the log entry", || async {
        env.gate.calls().into_iter().find(|c| c.operation == "CreateCluster")
    })
    .await;
    assert_eq!((call.status, call.answer_lost), (200, true));
}
