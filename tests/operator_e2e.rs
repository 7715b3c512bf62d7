//! The operator end to end in the sandbox: real apiserver, AWS SDK -> gate -> moto, the ECS world
//! and the Console simulator. One sample resource from apply to Ready to deleted.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Harness, eventually};
use ecs_defender_operator::crd::{DeletionPolicy, WorkerKind};
use kube::api::{DeleteParams, Patch, PatchParams};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Names of the ACTIVE clusters (a deleted cluster stays describable as INACTIVE for a while).
async fn active_clusters(aws: &sandbox::world::AwsClientsForTests) -> Vec<String> {
    let arns = aws.ecs.list_clusters().send().await.unwrap().cluster_arns().to_vec();
    if arns.is_empty() {
        return vec![];
    }
    let out = aws.ecs.describe_clusters().set_clusters(Some(arns)).send().await.unwrap();
    out.clusters()
        .iter()
        .filter(|c| c.status() == Some("ACTIVE"))
        .filter_map(|c| c.cluster_name().map(str::to_string))
        .collect()
}

fn count(h: &Harness, key: &str) -> u64 {
    h.sandbox.gate().counts().get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_becomes_ready_and_a_second_reconcile_changes_nothing() {
    let h = Harness::start().await.unwrap();
    let started = std::time::Instant::now();
    h.create(&h.sample("demo")).await.unwrap();
    let edd = h.wait_condition("demo", "Ready", "True", READY_TIMEOUT).await;
    let took = started.elapsed();
    let st = edd.status.clone().unwrap();
    assert_eq!(st.container_instances, Some(2));
    assert_eq!(st.defenders_connected, Some(2));
    assert_eq!(st.defenders_running, Some(2));
    assert_eq!(st.observed_generation, edd.metadata.generation);
    for c in ["ClusterReady", "WorkersReady", "TaskDefinitionReady", "ServiceReady", "DefendersConnected"] {
        assert!(st.conditions.iter().any(|x| x.type_ == c && x.status == "True"), "{c} not True: {:#?}", st.conditions);
    }
    assert!(st.conditions.iter().any(|x| x.type_ == "Reconciling" && x.status == "False"));
    assert!(st.conditions.iter().any(|x| x.type_ == "Stalled" && x.status == "False"));
    let digest = st.task_definition_digest.clone().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(st.image_id.as_deref().unwrap().starts_with("ami-"));

    // Exactly one of each, as AWS sees it.
    let aws = h.aws().await;
    assert_eq!(active_clusters(&aws).await, vec!["demo".to_string()]);
    let lts = aws.ec2.describe_launch_templates().send().await.unwrap();
    assert_eq!(lts.launch_templates().len(), 1);
    let groups = aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap();
    assert_eq!(groups.auto_scaling_groups().len(), 1);
    let tds = aws.ecs.list_task_definitions().send().await.unwrap();
    assert_eq!(tds.task_definition_arns().len(), 1, "{:?}", tds.task_definition_arns());
    let services = aws.ecs.list_services().cluster("demo").send().await.unwrap();
    assert_eq!(services.service_arns().len(), 1);
    for key in [
        "ecs:CreateCluster",
        "ec2:CreateLaunchTemplate",
        "autoscaling:CreateAutoScalingGroup",
        "ecs:RegisterTaskDefinition",
        "ecs:CreateService",
    ] {
        assert_eq!(count(&h, key), 1, "{key} called {} times", count(&h, key));
    }
    // The user data names the cluster exactly.
    let version =
        aws.ec2.describe_launch_template_versions().launch_template_name("demo-workers").send().await.unwrap();
    let ud = version.launch_template_versions()[0].launch_template_data().unwrap().user_data().unwrap();
    let ud = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ud).unwrap()).unwrap();
    assert!(ud.contains("echo ECS_CLUSTER=demo >> /etc/ecs/ecs.config"), "{ud}");
    // The Console's task definition was registered faithfully: host network and pid mode, privileged.
    let td = aws.ecs.describe_task_definition().task_definition("demo-defender").send().await.unwrap();
    let td = td.task_definition().unwrap();
    assert_eq!(td.network_mode().map(|m| m.as_str()), Some("host"));
    assert_eq!(td.pid_mode().map(|m| m.as_str()), Some("host"));
    assert_eq!(td.container_definitions()[0].name(), Some("twistlock_defender"));
    assert_eq!(td.volumes().len(), 5);
    // No DAEMON service ever got a desiredCount (the gate refuses one with InvalidParameterException).
    let calls = h.sandbox.gate().calls();
    assert!(calls.iter().all(|c| c.error_code.as_deref() != Some("InvalidParameterException")), "{calls:#?}");
    assert!(
        calls
            .iter()
            .filter(|c| c.operation == "CreateService" || c.operation == "UpdateService")
            .all(|c| !c.params.contains_key("desiredCount")),
        "a service call carried desiredCount"
    );
    let mutating = calls.iter().filter(|c| c.mutating).count();
    let console_calls = h.sandbox.console().request_count();
    println!(
        "Ready after {took:?}: {} AWS calls ({mutating} mutating, {} read-only), {console_calls} Console calls",
        calls.len(),
        calls.len() - mutating
    );

    // A second reconcile of the converged resource: reads only, no Console generation.
    h.sandbox.gate().clear_calls();
    h.sandbox.console().clear_requests();
    let before = h.metrics.render();
    let reconciles = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("ecs_defender_operator_reconciles_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let n0 = reconciles(&before);
    // An annotation change triggers a reconcile without changing the spec.
    h.api
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(30), || async {
        (reconciles(&h.metrics.render()) > n0 && !h.sandbox.gate().calls().is_empty()).then_some(())
    })
    .await
    .expect("no reconcile after the annotation");
    // Let that reconcile finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = h.sandbox.gate().calls();
    let mutations: Vec<_> = calls.iter().filter(|c| c.mutating).map(|c| c.key()).collect();
    assert!(mutations.is_empty(), "a converged resource was changed: {mutations:?}");
    let generated: Vec<_> =
        h.sandbox.console().requests().into_iter().filter(|r| r.endpoint.contains("ecs-task")).collect();
    assert!(generated.is_empty(), "the Console was asked to generate again: {generated:?}");
    let after = h.api.get("demo").await.unwrap();
    assert_eq!(after.status, edd.status, "status changed though nothing did");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_configuration_workers_become_ready_and_delete_cleanly() {
    let h = Harness::start().await.unwrap();
    let mut edd = h.sample("legacy");
    edd.spec.workers.as_mut().unwrap().kind = WorkerKind::LaunchConfiguration;
    h.create(&edd).await.unwrap();
    let ready = h.wait_condition("legacy", "Ready", "True", READY_TIMEOUT).await;
    assert_eq!(ready.status.as_ref().unwrap().defenders_connected, Some(2));
    assert_eq!(count(&h, "autoscaling:CreateLaunchConfiguration"), 1);
    assert_eq!(count(&h, "ec2:CreateLaunchTemplate"), 0);
    let aws = h.aws().await;
    let lcs = aws.autoscaling.describe_launch_configurations().send().await.unwrap();
    assert_eq!(lcs.launch_configurations().len(), 1);

    h.api.delete("legacy", &DeleteParams::default()).await.unwrap();
    h.wait_gone("legacy", Duration::from_secs(120)).await;
    let lcs = aws.autoscaling.describe_launch_configurations().send().await.unwrap();
    assert!(lcs.launch_configurations().is_empty(), "launch configuration left behind");
    assert!(active_clusters(&aws).await.is_empty(), "cluster left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_tears_down_in_reverse_order() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("gone")).await.unwrap();
    h.wait_condition("gone", "Ready", "True", READY_TIMEOUT).await;
    h.sandbox.gate().clear_calls();
    h.api.delete("gone", &DeleteParams::default()).await.unwrap();
    h.wait_gone("gone", Duration::from_secs(120)).await;

    let order: Vec<String> =
        h.sandbox.gate().calls().iter().filter(|c| c.mutating && c.status == 200).map(|c| c.key()).collect();
    let pos = |key: &str| order.iter().position(|k| k == key).unwrap_or_else(|| panic!("{key} not called: {order:?}"));
    assert!(pos("ecs:DeleteService") < pos("ecs:DeregisterTaskDefinition"), "{order:?}");
    assert!(pos("ecs:DeregisterTaskDefinition") < pos("autoscaling:DeleteAutoScalingGroup"), "{order:?}");
    assert!(pos("autoscaling:DeleteAutoScalingGroup") < pos("ec2:DeleteLaunchTemplate"), "{order:?}");
    assert!(pos("ec2:DeleteLaunchTemplate") < pos("ecs:DeleteCluster"), "{order:?}");

    let aws = h.aws().await;
    assert!(active_clusters(&aws).await.is_empty());
    assert!(aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap().auto_scaling_groups().is_empty());
    assert!(aws.ec2.describe_launch_templates().send().await.unwrap().launch_templates().is_empty());
    let active =
        aws.ecs.list_task_definitions().status(aws_sdk_ecs::types::TaskDefinitionStatus::Active).send().await.unwrap();
    assert!(active.task_definition_arns().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_policy_leaves_aws_untouched() {
    let h = Harness::start().await.unwrap();
    let mut edd = h.sample("kept");
    edd.spec.deletion_policy = DeletionPolicy::Orphan;
    h.create(&edd).await.unwrap();
    h.wait_condition("kept", "Ready", "True", READY_TIMEOUT).await;
    h.sandbox.gate().clear_calls();
    h.api.delete("kept", &DeleteParams::default()).await.unwrap();
    h.wait_gone("kept", Duration::from_secs(30)).await;
    let mutations: Vec<_> = h.sandbox.gate().calls().iter().filter(|c| c.mutating).map(|c| c.key()).collect();
    assert!(mutations.is_empty(), "Orphan changed AWS: {mutations:?}");
    let aws = h.aws().await;
    assert_eq!(active_clusters(&aws).await, vec!["kept".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_after_a_partial_create_removes_what_exists() {
    let h = Harness::start().await.unwrap();
    // The Auto Scaling group cannot be created (AWS keeps failing it), so the cluster and the
    // launch template exist and the rest never will.
    h.sandbox.gate().add_fault(
        sandbox::gate::Fault::new("autoscaling", sandbox::gate::FaultKind::Status(500)).on("CreateAutoScalingGroup"),
    );
    h.create(&h.sample("partial")).await.unwrap();
    eventually(Duration::from_secs(60), || async {
        (count(&h, "ec2:CreateLaunchTemplate") == 1 && count(&h, "autoscaling:CreateAutoScalingGroup") >= 3)
            .then_some(())
    })
    .await
    .expect("launch template created and the group attempted");
    // The status follows the failed call (its patch may trail the gate's count by a moment).
    let retrying = eventually(Duration::from_secs(10), || async {
        h.condition("partial", "Reconciling").await.filter(|c| c.status == "True" && c.reason == "AwsUnavailable")
    })
    .await;
    assert!(retrying.is_some(), "{:?}", h.condition("partial", "Reconciling").await);
    h.api.delete("partial", &DeleteParams::default()).await.unwrap();
    h.wait_gone("partial", Duration::from_secs(120)).await;
    let aws = h.aws().await;
    assert!(active_clusters(&aws).await.is_empty(), "cluster left behind");
    assert!(
        aws.ec2.describe_launch_templates().send().await.unwrap().launch_templates().is_empty(),
        "launch template left behind"
    );
    assert!(aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap().auto_scaling_groups().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_upgrade_rolls_every_defender_to_the_new_version() {
    // A short resync, so the Console's version is looked at again soon.
    let h = Harness::start_full(Default::default(), |c| c.steady_requeue = Duration::from_secs(1)).await.unwrap();
    h.create(&h.sample("upgrade")).await.unwrap();
    let before = h.wait_condition("upgrade", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    let old_digest = before.task_definition_digest.clone().unwrap();

    h.sandbox.console().set_version("34.04.200");
    let after = eventually(READY_TIMEOUT, || async {
        let st = h.api.get("upgrade").await.ok()?.status?;
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.console_version.as_deref() == Some("34.04.200") && st.defenders_running == Some(2)).then_some(st)
    })
    .await
    .expect("not rolled to the new Console version");
    assert_ne!(after.task_definition_digest.unwrap(), old_digest);
    assert!(
        after.task_definition_arn.as_deref().unwrap().ends_with("upgrade-defender:2"),
        "{:?}",
        after.task_definition_arn
    );
    assert!(after.defender_image.as_deref().unwrap().contains("34_04_200"), "{:?}", after.defender_image);
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 2);
    assert_eq!(count(&h, "ecs:UpdateService"), 1);
    // Every Defender now runs the new version and is connected.
    let connected: Vec<_> = h.sandbox.console().defenders().into_iter().filter(|d| d.connected).collect();
    assert_eq!(connected.len(), 2, "{connected:?}");
    assert!(connected.iter().all(|d| d.version == "34.04.200"), "{connected:?}");
    // The replaced revision is retired once no Defender runs it: one ACTIVE revision is left.
    let aws = h.aws().await;
    let active = eventually(Duration::from_secs(30), || async {
        let arns = aws
            .ecs
            .list_task_definitions()
            .family_prefix("upgrade-defender")
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .ok()?
            .task_definition_arns()
            .to_vec();
        (arns.len() == 1).then_some(arns)
    })
    .await
    .expect("the replaced revision is still ACTIVE");
    assert!(active[0].ends_with("upgrade-defender:2"), "{active:?}");
    assert_eq!(count(&h, "ecs:DeregisterTaskDefinition"), 1);
    let forgotten = eventually(Duration::from_secs(30), || async {
        h.api.get("upgrade").await.ok()?.status?.owned.old_revisions.is_empty().then_some(())
    })
    .await;
    assert!(forgotten.is_some(), "status.owned still lists the retired revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_every_aws_change_still_converges_without_duplicates() {
    let h = Harness::start().await.unwrap();
    // Slow AWS changes down so the restart below lands while the next call is in flight.
    for (service, op) in [
        ("ecs", "CreateCluster"),
        ("ec2", "CreateLaunchTemplate"),
        ("autoscaling", "CreateAutoScalingGroup"),
        ("ecs", "RegisterTaskDefinition"),
        ("ecs", "CreateService"),
    ] {
        h.sandbox.gate().add_fault(
            sandbox::gate::Fault::new(service, sandbox::gate::FaultKind::Latency(Duration::from_millis(150))).on(op),
        );
    }
    h.create(&h.sample("crashy")).await.unwrap();
    let mut seen = 0;
    let mut restarts = 0;
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let ready = loop {
        let mutations = h.sandbox.gate().calls().iter().filter(|c| c.mutating && c.status == 200).count();
        if mutations > seen {
            // Kill the operator right after an AWS change, before it can record it.
            seen = mutations;
            restarts += 1;
            h.restart_operator();
        }
        if let Some(c) = h.condition("crashy", "Ready").await.filter(|c| c.status == "True") {
            break Some(c);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(ready.is_some(), "did not converge across restarts");
    assert!(restarts >= 5, "only {restarts} restarts");
    for key in
        ["ecs:CreateCluster", "autoscaling:CreateAutoScalingGroup", "ecs:RegisterTaskDefinition", "ecs:CreateService"]
    {
        assert!(count(&h, key) >= 1, "{key}");
    }
    let aws = h.aws().await;
    assert_eq!(aws.ec2.describe_launch_templates().send().await.unwrap().launch_templates().len(), 1);
    assert_eq!(aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap().auto_scaling_groups().len(), 1);
    let active =
        aws.ecs.list_task_definitions().status(aws_sdk_ecs::types::TaskDefinitionStatus::Active).send().await.unwrap();
    assert_eq!(active.task_definition_arns().len(), 1, "{:?}", active.task_definition_arns());
    assert_eq!(aws.ecs.list_services().cluster("crashy").send().await.unwrap().service_arns().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_options_reach_aws_and_the_console() {
    let h = Harness::start().await.unwrap();
    let aws = h.aws().await;
    // A security group by name and an explicit AMI that exists in the region.
    let vpc = aws.ec2.describe_vpcs().send().await.unwrap().vpcs()[0].vpc_id().unwrap().to_string();
    let sg = aws
        .ec2
        .create_security_group()
        .group_name("pc-security-group")
        .description("Defenders")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let sg_id = sg.group_id().unwrap().to_string();
    let ami = aws.ec2.describe_images().send().await.unwrap().images()[0].image_id().unwrap().to_string();

    let mut edd = h.sample("options");
    let w = edd.spec.workers.as_mut().unwrap();
    w.security_groups = vec!["pc-security-group".into()];
    w.image = ecs_defender_operator::crd::ImageSpec { ssm_parameter: None, id: Some(ami.clone()) };
    w.instance_type = "m5.large".into();
    w.extra_user_data = "echo ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config".into();
    edd.spec.defender.cluster_name = Some("prod-ecs".into());
    edd.spec.defender.task_name = Some("twistlock-defender".into());
    edd.spec.service.name = Some("defenders".into());
    h.create(&edd).await.unwrap();
    let ready = h.wait_condition("options", "Ready", "True", READY_TIMEOUT).await;
    assert_eq!(ready.status.as_ref().unwrap().image_id.as_deref(), Some(ami.as_str()));

    let v = aws.ec2.describe_launch_template_versions().launch_template_name("options-workers").send().await.unwrap();
    let data = v.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(data.image_id(), Some(ami.as_str()));
    assert_eq!(data.instance_type().map(|t| t.as_str()), Some("m5.large"));
    // No public-IP choice in the spec: no network interface, the groups at the top level.
    assert!(data.network_interfaces().is_empty(), "{:?}", data.network_interfaces());
    assert_eq!(data.security_group_ids(), [sg_id]);
    let ud = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data.user_data().unwrap()).unwrap())
        .unwrap();
    assert!(ud.ends_with("echo ECS_CLUSTER=options >> /etc/ecs/ecs.config\necho ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config\n"), "{ud}");

    // The Console's cluster-name override and task name pass through; the Defenders report it.
    let td = aws.ecs.describe_task_definition().task_definition("twistlock-defender").send().await.unwrap();
    let env = td.task_definition().unwrap().container_definitions()[0].environment().to_vec();
    let defender_cluster = env.iter().find(|e| e.name() == Some("DEFENDER_CLUSTER")).and_then(|e| e.value());
    assert_eq!(defender_cluster, Some("prod-ecs"));
    assert_eq!(aws.ecs.list_services().cluster("options").send().await.unwrap().service_arns().len(), 1);
    let connected: Vec<_> = h.sandbox.console().defenders().into_iter().filter(|d| d.connected).collect();
    assert_eq!(connected.len(), 2);
    assert!(connected.iter().all(|d| d.cluster == "prod-ecs"), "{connected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_item_pages_from_aws_and_the_console_still_converge_and_delete() {
    let h = Harness::start().await.unwrap();
    // Every list call of the gate and the Console's Defender list answer one item per page: two
    // instances, two tasks and two Defenders are seen only by following the pages (an operator
    // that read only the first page would wait at "1 of 2" forever).
    h.sandbox.gate().set_page_size(Some(1));
    h.sandbox.console().set_max_page_size(1);
    h.create(&h.sample("paged")).await.unwrap();
    let st = h.wait_condition("paged", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    assert_eq!((st.container_instances, st.defenders_running, st.defenders_connected), (Some(2), Some(2), Some(2)));
    h.api.delete("paged", &kube::api::DeleteParams::default()).await.unwrap();
    h.wait_gone("paged", READY_TIMEOUT).await;
    let aws = h.aws().await;
    assert!(active_clusters(&aws).await.is_empty());
}
