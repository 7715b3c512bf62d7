//! Auto Scaling on day two, as AWS runs it: launch template versions >= 2, launches that fail as
//! scaling activities, instance refreshes, force deletes that take a while. Each test shows bare
//! moto's (wrong) answer next to the gate's.

mod common;

use std::time::Duration;

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, RefreshPreferences};
use aws_sdk_ec2::{
    error::ProvideErrorMetadata,
    types::{InstanceAttributeName, InstanceStateName, InstanceType, RequestLaunchTemplateData},
};
use base64::Engine;
use common::*;

const LT: &str = "pc-worker-node";
const ASG: &str = "pc-worker-autoscaling";

/// Fast loops and short delays for tests.
async fn fast() -> Env {
    start_with(|c| {
        c.fleet_tick = Duration::from_millis(50);
        c.refresh_warmup = Duration::ZERO;
        c.asg_delete_delay = Duration::from_millis(800);
        c.launch_retry = Duration::from_millis(300);
    })
    .await
}

fn data(instance_type: &str, cluster: &str) -> RequestLaunchTemplateData {
    RequestLaunchTemplateData::builder()
        .image_id(AMI)
        .instance_type(InstanceType::from(instance_type))
        .user_data(user_data_for(cluster))
        .build()
}

async fn template(env: &Env, d: RequestLaunchTemplateData) -> String {
    let out = env.ec2.create_launch_template().launch_template_name(LT).launch_template_data(d).send().await.unwrap();
    out.launch_template().unwrap().launch_template_id().unwrap().to_string()
}

async fn new_version(env: &Env, d: RequestLaunchTemplateData) -> i64 {
    let out = env.ec2.create_launch_template_version().launch_template_name(LT).launch_template_data(d).send().await;
    out.unwrap().launch_template_version().unwrap().version_number().unwrap()
}

fn spec(version: &str) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder().launch_template_name(LT).version(version).build()
}

fn group(
    env: &Env,
    name: &str,
    version: &str,
    desired: i32,
) -> aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder {
    env.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(spec(version))
        .availability_zones("us-east-1a")
        .min_size(0)
        .max_size(3)
        .desired_capacity(desired)
}

async fn instances(env: &Env, name: &str) -> Vec<aws_sdk_autoscaling::types::Instance> {
    let out = env.asg.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await.unwrap();
    out.auto_scaling_groups().first().map(|g| g.instances().to_vec()).unwrap_or_default()
}

/// `(instance type, ECS cluster named by the user data, state)` of an EC2 instance.
async fn launched_with(env: &Env, id: &str) -> (String, Option<String>, String) {
    let out = env.moto_ec2.describe_instances().instance_ids(id).send().await.unwrap();
    let i = &out.reservations()[0].instances()[0];
    let attr = env
        .moto_ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await;
    let script = attr
        .ok()
        .and_then(|a| a.user_data().and_then(|u| u.value()).map(str::to_string))
        .map(|b| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap());
    let cluster = script.and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("echo ECS_CLUSTER=").map(|r| r.split(' ').next().unwrap().to_string()))
    });
    (i.instance_type().unwrap().as_str().to_string(), cluster, i.state().unwrap().name().unwrap().as_str().to_string())
}

#[tokio::test]
async fn launch_template_versions_launch_their_own_data() {
    let env = fast().await;
    template(&env, data("t2.medium", "one")).await;
    assert_eq!(new_version(&env, data("t3.large", "two")).await, 2);

    // Bare moto answers HTTP 500 to a group on a version 2 with user data (it stored the user data
    // unparsed).
    let bare_lt = || RequestLaunchTemplateData::builder().image_id(AMI).user_data(user_data_for("bare")).build();
    env.moto_ec2
        .create_launch_template()
        .launch_template_name("bare-lt")
        .launch_template_data(bare_lt())
        .send()
        .await
        .unwrap();
    env.moto_ec2
        .create_launch_template_version()
        .launch_template_name("bare-lt")
        .launch_template_data(bare_lt())
        .send()
        .await
        .unwrap();
    let moto_asg = aws_sdk_autoscaling::Client::new(&sdk(env.moto.url(), 1).await);
    let bare = moto_asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("bare")
        .launch_template(LaunchTemplateSpecification::builder().launch_template_name("bare-lt").version("2").build())
        .availability_zones("us-east-1a")
        .min_size(1)
        .max_size(1)
        .send()
        .await;
    assert_eq!(bare.unwrap_err().raw_response().map(|r| r.status().as_u16()), Some(500));

    group(&env, ASG, "2", 2).send().await.expect("a group on version 2");
    let members = instances(&env, ASG).await;
    assert_eq!(members.len(), 2);
    for m in &members {
        assert_eq!(m.launch_template().and_then(|t| t.version()), Some("2"));
        let (t, cluster, _) = launched_with(&env, m.instance_id().unwrap()).await;
        assert_eq!((t.as_str(), cluster.as_deref()), ("t3.large", Some("two")));
    }
    let versions = env.ec2.describe_launch_template_versions().launch_template_name(LT).send().await.unwrap();
    let v2 = versions.launch_template_versions().iter().find(|v| v.version_number() == Some(2)).unwrap();
    assert_eq!(v2.launch_template_data().unwrap().user_data(), Some(user_data_for("two").as_str()));

    // $Default follows ModifyLaunchTemplate; $Latest follows new versions.
    env.ec2.modify_launch_template().launch_template_name(LT).default_version("2").send().await.unwrap();
    group(&env, "on-default", "$Default", 1).send().await.unwrap();
    let m = instances(&env, "on-default").await;
    assert_eq!(launched_with(&env, m[0].instance_id().unwrap()).await.0, "t3.large");

    new_version(&env, data("m5.large", "three")).await;
    env.asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(ASG)
        .launch_template(spec("$Latest"))
        .desired_capacity(3)
        .send()
        .await
        .unwrap();
    let members = instances(&env, ASG).await;
    let mut versions: Vec<&str> =
        members.iter().filter_map(|m| m.launch_template().and_then(|t| t.version())).collect();
    versions.sort();
    assert_eq!(versions, ["2", "2", "3"], "running instances keep their launch data");
    let newest = members.iter().find(|m| m.launch_template().and_then(|t| t.version()) == Some("3")).unwrap();
    let (t, cluster, _) = launched_with(&env, newest.instance_id().unwrap()).await;
    assert_eq!((t.as_str(), cluster.as_deref()), ("m5.large", Some("three")));
}

#[tokio::test]
async fn launch_template_versions_can_be_deleted_except_the_default() {
    let env = fast().await;
    template(&env, data("t2.medium", "one")).await;
    new_version(&env, data("t3.large", "two")).await;
    // Bare moto does not implement the call.
    let bare = env.moto_ec2.delete_launch_template_versions().launch_template_name(LT).versions("2").send().await;
    assert!(bare.is_err());

    let out = env
        .ec2
        .delete_launch_template_versions()
        .launch_template_name(LT)
        .versions("2")
        .versions("1")
        .send()
        .await
        .unwrap();
    let ok: Vec<i64> =
        out.successfully_deleted_launch_template_versions().iter().filter_map(|v| v.version_number()).collect();
    assert_eq!(ok, [2]);
    let failed = &out.unsuccessfully_deleted_launch_template_versions()[0];
    assert_eq!(failed.version_number(), Some(1));
    assert_eq!(
        failed.response_error().and_then(|e| e.code()).map(|c| c.as_str()),
        Some("launchTemplateVersionIsDefault")
    );
    let left = env.ec2.describe_launch_template_versions().launch_template_name(LT).send().await.unwrap();
    let left: Vec<i64> = left.launch_template_versions().iter().filter_map(|v| v.version_number()).collect();
    assert_eq!(left, [1]);
    // $Latest is version 1 again.
    group(&env, ASG, "$Latest", 1).send().await.unwrap();
    let m = instances(&env, ASG).await;
    assert_eq!(launched_with(&env, m[0].instance_id().unwrap()).await.0, "t2.medium");
}

async fn activities(env: &Env, name: &str) -> Vec<aws_sdk_autoscaling::types::Activity> {
    let out = env.asg.describe_scaling_activities().auto_scaling_group_name(name).send().await.unwrap();
    out.activities().to_vec()
}

async fn iam(env: &Env, form: &[(&str, &str)]) -> (u16, String) {
    let mut f = form.to_vec();
    f.push(("Version", "2010-05-08"));
    signed_query(&env.gate.url(), "iam", &f, (sandbox::moto::ACCESS_KEY_ID, sandbox::moto::SECRET_ACCESS_KEY)).await
}

#[tokio::test]
async fn a_launch_with_a_missing_instance_profile_fails_as_a_scaling_activity() {
    // An account without the guide's instance profile.
    let env = start_with(|c| {
        c.fleet_tick = Duration::from_millis(50);
        c.launch_retry = Duration::from_millis(300);
        c.instance_profiles.clear();
    })
    .await;
    let with_profile = |p: &str| {
        RequestLaunchTemplateData::builder()
            .image_id(AMI)
            .instance_type(InstanceType::T2Medium)
            .iam_instance_profile(
                aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(p).build(),
            )
            .build()
    };
    template(&env, with_profile("ecsInstanceRole")).await;
    group(&env, ASG, "$Latest", 2).send().await.expect("the group is created; its launches fail");

    assert!(instances(&env, ASG).await.is_empty(), "no instance starts");
    let running = env.moto_ec2.describe_instances().send().await.unwrap();
    assert!(running.reservations().is_empty(), "nothing in EC2 either");
    let acts = activities(&env, ASG).await;
    let a = &acts[0];
    assert_eq!(a.status_code().map(|s| s.as_str()), Some("Failed"));
    assert_eq!(a.status_message(), Some("Invalid IAM Instance Profile name. Launching EC2 instance failed."));
    assert!(
        a.description()
            .unwrap()
            .starts_with("Launching a new EC2 instance.  Status Reason: Invalid IAM Instance Profile name")
    );
    let g = env.asg.describe_auto_scaling_groups().auto_scaling_group_names(ASG).send().await.unwrap();
    assert_eq!(g.auto_scaling_groups()[0].desired_capacity(), Some(2), "AWS keeps the desired capacity");

    // Once the profile exists, the group's retries succeed, and say so.
    iam(&env, &[("Action", "CreateInstanceProfile"), ("InstanceProfileName", "ecsInstanceRole")]).await;
    wait_for(Duration::from_secs(10), "two instances", || async {
        (instances(&env, ASG).await.len() == 2).then_some(())
    })
    .await;
    let acts = activities(&env, ASG).await;
    assert_eq!(acts[0].status_code().map(|s| s.as_str()), Some("Successful"));
    assert!(acts[0].description().unwrap().starts_with("Launching a new EC2 instance: i-"), "{acts:?}");
    assert!(
        acts.iter().any(|a| a.status_code().map(|s| s.as_str()) == Some("Failed")),
        "the failure stays in the history"
    );
}

#[tokio::test]
async fn an_ami_that_does_not_fit_the_instance_type_fails_as_a_scaling_activity() {
    let env = fast().await;
    // An x86_64 AMI on a Graviton (arm64) instance type.
    template(&env, data("t4g.large", "c")).await;
    group(&env, ASG, "$Latest", 1).send().await.unwrap();
    assert!(instances(&env, ASG).await.is_empty());
    let a = &activities(&env, ASG).await[0];
    assert_eq!(a.status_code().map(|s| s.as_str()), Some("Failed"));
    assert!(
        a.status_message().unwrap().starts_with(
            "The architecture 'arm64' of the specified instance type does not match the architecture 'x86_64' of the specified AMI."
        ),
        "{a:?}"
    );

    // The arm64 ECS-optimized AMI (as SSM names it) on an x86_64 type.
    let ssm = aws_sdk_ssm::Client::new(&sdk(&env.gate.url(), 3).await);
    let arm = ssm
        .get_parameter()
        .name("/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id")
        .send()
        .await;
    let arm = arm.unwrap().parameter().unwrap().value().unwrap().to_string();
    let d = RequestLaunchTemplateData::builder().image_id(&arm).instance_type(InstanceType::T3Large).build();
    new_version(&env, d).await;
    group(&env, "arm-on-x86", "$Latest", 1).send().await.unwrap();
    let a = &activities(&env, "arm-on-x86").await[0];
    assert!(
        a.status_message().unwrap().starts_with(
            "The architecture 'x86_64' of the specified instance type does not match the architecture 'arm64'"
        ),
        "{a:?}"
    );

    // The same AMI on a Graviton type launches.
    let d = RequestLaunchTemplateData::builder().image_id(&arm).instance_type(InstanceType::from("m6g.large")).build();
    new_version(&env, d).await;
    group(&env, "arm-on-arm", "$Latest", 1).send().await.unwrap();
    assert_eq!(instances(&env, "arm-on-arm").await.len(), 1);
    // Bare moto launches anything.
    let run = env
        .moto_ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(InstanceType::from("t4g.large"))
        .min_count(1)
        .max_count(1)
        .send()
        .await;
    assert!(run.is_ok());
}

async fn refreshes(env: &Env) -> Vec<aws_sdk_autoscaling::types::InstanceRefresh> {
    let out = env.asg.describe_instance_refreshes().auto_scaling_group_name(ASG).send().await.unwrap();
    out.instance_refreshes().to_vec()
}

#[tokio::test]
async fn instance_refresh_replaces_instances_on_old_launch_data_in_batches() {
    let env = fast().await;
    template(&env, data("t2.medium", "c")).await;
    env.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(ASG)
        .launch_template(spec("$Latest"))
        .availability_zones("us-east-1a")
        .min_size(1)
        .max_size(2)
        .desired_capacity(2)
        .send()
        .await
        .unwrap();
    let old: Vec<String> = instances(&env, ASG).await.iter().map(|i| i.instance_id().unwrap().to_string()).collect();
    new_version(&env, data("t3.large", "c")).await;

    // Bare moto has no instance refresh.
    let moto_asg = aws_sdk_autoscaling::Client::new(&sdk(env.moto.url(), 1).await);
    assert!(moto_asg.start_instance_refresh().auto_scaling_group_name(ASG).send().await.is_err());

    let prefs = RefreshPreferences::builder().min_healthy_percentage(50).instance_warmup(0).skip_matching(true).build();
    let id =
        env.asg.start_instance_refresh().auto_scaling_group_name(ASG).preferences(prefs.clone()).send().await.unwrap();
    let id = id.instance_refresh_id().unwrap().to_string();
    let again =
        env.asg.start_instance_refresh().auto_scaling_group_name(ASG).preferences(prefs).send().await.unwrap_err();
    assert_eq!(again.code(), Some("InstanceRefreshInProgress"));

    let seen_in_service = std::sync::Mutex::new(Vec::new());
    let done = wait_for(Duration::from_secs(20), "the refresh to succeed", || async {
        let n = instances(&env, ASG).await.len();
        seen_in_service.lock().unwrap().push(n);
        let r = refreshes(&env).await.into_iter().next()?;
        (r.status().map(|s| s.as_str()) == Some("Successful")).then_some(r)
    })
    .await;
    assert_eq!(done.instance_refresh_id(), Some(id.as_str()));
    assert_eq!((done.percentage_complete(), done.instances_to_update()), (Some(100), Some(0)));
    let seen = seen_in_service.into_inner().unwrap();
    assert!(seen.iter().all(|n| *n >= 1), "MinHealthyPercentage 50 keeps one of two in service: {seen:?}");
    for m in instances(&env, ASG).await {
        assert_eq!(m.launch_template().and_then(|t| t.version()), Some("2"));
        assert_eq!(launched_with(&env, m.instance_id().unwrap()).await.0, "t3.large");
    }
    for id in &old {
        assert_eq!(launched_with(&env, id).await.2, "terminated", "old instances are really terminated");
    }
    let terminations =
        activities(&env, ASG).await.iter().filter(|a| a.description().unwrap().starts_with("Terminating")).count();
    assert_eq!(terminations, 2);

    // Nothing left to cancel.
    let err = env.asg.cancel_instance_refresh().auto_scaling_group_name(ASG).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ActiveInstanceRefreshNotFound"));
}

#[tokio::test]
async fn an_instance_refresh_waits_for_warm_up_and_can_be_cancelled() {
    let env = fast().await;
    template(&env, data("t2.medium", "c")).await;
    group(&env, ASG, "$Latest", 2).send().await.unwrap();
    new_version(&env, data("t3.large", "c")).await;
    // Without SkipMatching every instance is replaced; a long warm-up holds the second batch.
    let prefs = RefreshPreferences::builder().min_healthy_percentage(50).instance_warmup(600).build();
    env.asg.start_instance_refresh().auto_scaling_group_name(ASG).preferences(prefs).send().await.unwrap();
    let r = wait_for(Duration::from_secs(10), "the first batch", || async {
        let r = refreshes(&env).await.into_iter().next()?;
        (r.percentage_complete() == Some(50) && r.status_reason().is_some_and(|s| s.contains("warm up"))).then_some(r)
    })
    .await;
    assert_eq!(r.status().map(|s| s.as_str()), Some("InProgress"));
    assert_eq!(r.instances_to_update(), Some(1));
    env.asg.cancel_instance_refresh().auto_scaling_group_name(ASG).send().await.unwrap();
    assert_eq!(refreshes(&env).await[0].status().map(|s| s.as_str()), Some("Cancelled"));
    let mut types = Vec::new();
    for m in instances(&env, ASG).await {
        types.push(launched_with(&env, m.instance_id().unwrap()).await.0);
    }
    types.sort();
    assert_eq!(types, ["t2.medium", "t3.large"], "one replaced before the cancel");
}

#[tokio::test]
async fn a_force_deleted_group_stays_delete_in_progress_while_its_instances_terminate() {
    let env = fast().await;
    template(&env, data("t2.medium", "c")).await;
    group(&env, ASG, "$Latest", 2).send().await.unwrap();
    let ids: Vec<String> = instances(&env, ASG).await.iter().map(|i| i.instance_id().unwrap().to_string()).collect();
    env.asg.delete_auto_scaling_group().auto_scaling_group_name(ASG).force_delete(true).send().await.unwrap();

    let g = env.asg.describe_auto_scaling_groups().auto_scaling_group_names(ASG).send().await.unwrap();
    let g = &g.auto_scaling_groups()[0];
    assert_eq!(g.status(), Some("Delete in progress"));
    assert!(g.instances().iter().all(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("Terminating")));
    for id in &ids {
        let state = launched_with(&env, id).await.2;
        assert!(state == InstanceStateName::Terminated.as_str() || state == "shutting-down", "{state}");
    }
    let err = group(&env, ASG, "$Latest", 1).send().await.unwrap_err();
    assert_eq!(err.code(), Some("AlreadyExists"), "the name is not free yet");
    let err = env.asg.update_auto_scaling_group().auto_scaling_group_name(ASG).max_size(1).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));

    wait_for(Duration::from_secs(20), "the group to vanish", || async {
        // A call may fail while the machine is loaded; the wait asks again.
        let g = env.asg.describe_auto_scaling_groups().auto_scaling_group_names(ASG).send().await.ok()?;
        g.auto_scaling_groups().is_empty().then_some(())
    })
    .await;
    // The name is free again soon after (AWS is eventually consistent here too).
    wait_for(Duration::from_secs(20), "the name to be free again", || async {
        group(&env, ASG, "$Latest", 1).send().await.ok().map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn instances_terminated_through_ec2_are_replaced_from_the_current_launch_data() {
    let env = fast().await;
    template(&env, data("t2.medium", "c")).await;
    new_version(&env, data("t3.large", "c")).await;
    group(&env, ASG, "$Latest", 1).send().await.unwrap();
    let first = instances(&env, ASG).await[0].instance_id().unwrap().to_string();
    env.ec2.terminate_instances().instance_ids(&first).send().await.expect("moto would answer 500 here");
    let replacement = wait_for(Duration::from_secs(10), "a replacement", || async {
        let m = instances(&env, ASG).await;
        m.first().and_then(|i| i.instance_id()).filter(|id| *id != first).map(str::to_string)
    })
    .await;
    assert_eq!(launched_with(&env, &replacement).await.0, "t3.large");
}

#[tokio::test]
async fn a_group_moves_to_another_launch_configuration_and_subnets_and_spreads_over_them() {
    let env = fast().await;
    let subnets = env.ec2.describe_subnets().send().await.unwrap();
    let subnets: Vec<String> = subnets.subnets().iter().filter_map(|s| s.subnet_id()).map(str::to_string).collect();
    for (name, t) in [("lc-a", "t2.medium"), ("lc-b", "t3.large")] {
        env.asg
            .create_launch_configuration()
            .launch_configuration_name(name)
            .image_id(AMI)
            .instance_type(t)
            .send()
            .await
            .unwrap();
    }
    env.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(ASG)
        .launch_configuration_name("lc-a")
        .vpc_zone_identifier(format!("{},{}", subnets[0], subnets[1]))
        .min_size(0)
        .max_size(2)
        .desired_capacity(2)
        .send()
        .await
        .unwrap();
    let placed = |ids: Vec<String>| {
        let ec2 = env.moto_ec2.clone();
        async move {
            let out = ec2.describe_instances().set_instance_ids(Some(ids)).send().await.unwrap();
            let mut s: Vec<String> = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(|i| i.subnet_id())
                .map(str::to_string)
                .collect();
            s.sort();
            s
        }
    };
    let ids: Vec<String> = instances(&env, ASG).await.iter().map(|i| i.instance_id().unwrap().to_string()).collect();
    let mut expected = vec![subnets[0].clone(), subnets[1].clone()];
    expected.sort();
    assert_eq!(placed(ids).await, expected, "spread over the group's subnets (moto: all in the first)");

    env.asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(ASG)
        .launch_configuration_name("lc-b")
        .vpc_zone_identifier(subnets[2].clone())
        .send()
        .await
        .unwrap();
    let prefs = RefreshPreferences::builder().min_healthy_percentage(50).instance_warmup(0).skip_matching(true).build();
    env.asg.start_instance_refresh().auto_scaling_group_name(ASG).preferences(prefs).send().await.unwrap();
    wait_for(Duration::from_secs(20), "the refresh to succeed", || async {
        let r = refreshes(&env).await.into_iter().next()?;
        (r.status().map(|s| s.as_str()) == Some("Successful")).then_some(())
    })
    .await;
    let members = instances(&env, ASG).await;
    assert!(members.iter().all(|m| m.launch_configuration_name() == Some("lc-b")), "{members:?}");
    let ids: Vec<String> = members.iter().map(|i| i.instance_id().unwrap().to_string()).collect();
    for id in &ids {
        assert_eq!(launched_with(&env, id).await.0, "t3.large");
    }
    assert_eq!(placed(ids).await, vec![subnets[2].clone(), subnets[2].clone()]);
    // lc-a is no longer in use.
    env.asg.delete_launch_configuration().launch_configuration_name("lc-a").send().await.expect("unused now");
}

#[tokio::test]
async fn a_group_switched_from_a_template_to_a_configuration_keeps_only_the_configuration() {
    // moto keeps the launch template next to the new configuration and launches from the template.
    let env = fast().await;
    template(&env, data("t2.medium", "lt-cluster")).await;
    group(&env, ASG, "1", 1).send().await.unwrap();
    env.asg
        .create_launch_configuration()
        .launch_configuration_name("lc-b")
        .image_id(AMI)
        .instance_type("t3.large")
        .user_data(user_data_for("lc-cluster"))
        .send()
        .await
        .unwrap();
    env.asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(ASG)
        .launch_configuration_name("lc-b")
        .send()
        .await
        .unwrap();
    let out = env.asg.describe_auto_scaling_groups().auto_scaling_group_names(ASG).send().await.unwrap();
    let g = &out.auto_scaling_groups()[0];
    assert_eq!(g.launch_configuration_name(), Some("lc-b"));
    assert!(g.launch_template().is_none(), "the template is still shown: {g:?}");
    // A refresh replaces the instance from the configuration.
    let prefs = RefreshPreferences::builder().min_healthy_percentage(0).instance_warmup(0).skip_matching(true).build();
    env.asg.start_instance_refresh().auto_scaling_group_name(ASG).preferences(prefs).send().await.unwrap();
    wait_for(Duration::from_secs(20), "the refresh to succeed", || async {
        let r = refreshes(&env).await.into_iter().next()?;
        (r.status().map(|s| s.as_str()) == Some("Successful")).then_some(())
    })
    .await;
    let members = instances(&env, ASG).await;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].launch_configuration_name(), Some("lc-b"), "{members:?}");
    let (t, cluster, _) = launched_with(&env, members[0].instance_id().unwrap()).await;
    assert_eq!((t.as_str(), cluster.as_deref()), ("t3.large", Some("lc-cluster")));
}

#[tokio::test]
async fn a_new_version_inherits_what_it_leaves_out_from_its_source_version() {
    let env = fast().await;
    let full = RequestLaunchTemplateData::builder()
        .image_id(AMI)
        .instance_type(InstanceType::T2Medium)
        .user_data(user_data_for("kept"))
        .iam_instance_profile(
            aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name("ecsInstanceRole")
                .build(),
        )
        .build();
    template(&env, full).await;
    let only_type = || RequestLaunchTemplateData::builder().instance_type(InstanceType::T3Large).build();
    let v2 = env
        .ec2
        .create_launch_template_version()
        .launch_template_name(LT)
        .source_version("1")
        .launch_template_data(only_type())
        .send()
        .await;
    let v2 = v2.unwrap().launch_template_version().unwrap().version_number().unwrap();
    let out = env
        .ec2
        .describe_launch_template_versions()
        .launch_template_name(LT)
        .versions(v2.to_string())
        .send()
        .await
        .unwrap();
    let d = out.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(d.image_id(), Some(AMI));
    assert_eq!(d.instance_type(), Some(&InstanceType::T3Large));
    assert_eq!(d.user_data(), Some(user_data_for("kept").as_str()));
    assert_eq!(d.iam_instance_profile().and_then(|p| p.name()), Some("ecsInstanceRole"));
    // Bare moto inherits nothing.
    let bare = env
        .moto_ec2
        .create_launch_template_version()
        .launch_template_name(LT)
        .source_version("1")
        .launch_template_data(only_type())
        .send()
        .await;
    assert_eq!(bare.unwrap().launch_template_version().unwrap().launch_template_data().unwrap().image_id(), None);
}
