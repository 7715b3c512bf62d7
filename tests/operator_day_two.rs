//! Day two in the sandbox: every spec change takes effect with the smallest change, drift is put
//! back, renames forget nothing, names do not collide, and a wait that goes nowhere says why.

mod common;

use std::time::Duration;

use common::{Harness, eventually};
use ecs_defender_operator::crd::{EcsDefenderDeployment, WorkerKind};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

const READY_TIMEOUT: Duration = Duration::from_secs(180);

fn count(h: &Harness, key: &str) -> u64 {
    h.sandbox.gate().counts().get(key).copied().unwrap_or(0)
}

/// Merge-patches the resource's spec.
async fn patch_spec(h: &Harness, name: &str, spec: serde_json::Value) -> EcsDefenderDeployment {
    h.api.patch(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": spec }))).await.unwrap()
}

/// Waits until the resource is Ready for its current generation and `check` holds on its status.
async fn wait_ready_for(
    h: &Harness,
    name: &str,
    check: impl Fn(&ecs_defender_operator::crd::EcsDefenderDeploymentStatus) -> bool,
) -> EcsDefenderDeployment {
    let found = eventually(READY_TIMEOUT, || async {
        let edd = h.api.get(name).await.ok()?;
        let st = edd.status.as_ref()?;
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.observed_generation == edd.metadata.generation && check(st)).then_some(edd)
    })
    .await;
    match found {
        Some(edd) => edd,
        None => {
            panic!("{name} not Ready as expected; status: {:#?}", h.api.get(name).await.ok().and_then(|e| e.status))
        }
    }
}

async fn group_instances(h: &Harness, asg: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let aws = h.aws().await;
    let out = aws.autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(asg).send().await.unwrap();
    out.auto_scaling_groups()
        .first()
        .map(|g| {
            g.instances()
                .iter()
                .map(|i| {
                    (
                        i.instance_id().unwrap_or_default().to_string(),
                        i.launch_template().and_then(|t| t.version()).map(str::to_string),
                        i.launch_configuration_name().map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Names of ACTIVE services in `cluster`.
async fn active_services(h: &Harness, cluster: &str) -> Vec<String> {
    let aws = h.aws().await;
    let arns = aws.ecs.list_services().cluster(cluster).send().await.unwrap().service_arns().to_vec();
    if arns.is_empty() {
        return vec![];
    }
    let out = aws.ecs.describe_services().cluster(cluster).set_services(Some(arns)).send().await.unwrap();
    let mut names: Vec<String> = out
        .services()
        .iter()
        .filter(|s| s.status() == Some("ACTIVE"))
        .filter_map(|s| s.service_name().map(str::to_string))
        .collect();
    names.sort();
    names
}

async fn active_revisions(h: &Harness, family: &str) -> Vec<String> {
    let aws = h.aws().await;
    let out = aws
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .send()
        .await
        .unwrap();
    out.task_definition_arns().iter().filter(|a| a.contains(&format!("/{family}:"))).cloned().collect()
}

async fn group_names(h: &Harness) -> Vec<String> {
    let aws = h.aws().await;
    let out = aws.autoscaling.describe_auto_scaling_groups().send().await.unwrap();
    let mut names: Vec<String> =
        out.auto_scaling_groups().iter().filter_map(|g| g.auto_scaling_group_name().map(str::to_string)).collect();
    names.sort();
    names
}

async fn launch_template_names(h: &Harness) -> Vec<String> {
    let aws = h.aws().await;
    let out = aws.ec2.describe_launch_templates().send().await.unwrap();
    let mut names: Vec<String> =
        out.launch_templates().iter().filter_map(|t| t.launch_template_name().map(str::to_string)).collect();
    names.sort();
    names
}

async fn launch_configuration_names(h: &Harness) -> Vec<String> {
    let aws = h.aws().await;
    let out = aws.autoscaling.describe_launch_configurations().send().await.unwrap();
    let mut names: Vec<String> =
        out.launch_configurations().iter().filter_map(|c| c.launch_configuration_name().map(str::to_string)).collect();
    names.sort();
    names
}

async fn event_reasons(h: &Harness) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_type_makes_one_version_and_one_refresh_that_replaces_every_instance() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("roll")).await.unwrap();
    let before = h.wait_condition("roll", "Ready", "True", READY_TIMEOUT).await;
    assert_eq!(before.status.as_ref().unwrap().instances_up_to_date, Some(2));
    let old: Vec<String> = group_instances(&h, "roll-workers").await.into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(old.len(), 2);

    patch_spec(&h, "roll", serde_json::json!({"workers": {"instanceType": "t3.large"}})).await;
    let after = wait_ready_for(&h, "roll", |st| {
        st.launch_template_version == Some(2) && st.instances_up_to_date == Some(2) && st.defenders_connected == Some(2)
    })
    .await;
    let st = after.status.unwrap();
    assert_eq!(count(&h, "ec2:CreateLaunchTemplateVersion"), 1);
    assert_eq!(count(&h, "ec2:ModifyLaunchTemplate"), 1);
    assert_eq!(count(&h, "autoscaling:StartInstanceRefresh"), 1);
    let now = group_instances(&h, "roll-workers").await;
    assert_eq!(now.len(), 2);
    for (id, version, _) in &now {
        assert!(!old.contains(id), "instance {id} was not replaced");
        assert_eq!(version.as_deref(), Some("2"));
    }
    let aws = h.aws().await;
    let v = aws.ec2.describe_launch_template_versions().launch_template_name("roll-workers").versions("$Default");
    let v = v.send().await.unwrap();
    let data = v.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(data.instance_type().map(|t| t.as_str()), Some("t3.large"));
    assert_eq!(st.container_instances, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_configuration_is_replaced_and_the_old_one_deleted_once_unused() {
    let h = Harness::start().await.unwrap();
    let mut edd = h.sample("legacy");
    edd.spec.workers.as_mut().unwrap().kind = WorkerKind::LaunchConfiguration;
    h.create(&edd).await.unwrap();
    let before = h.wait_condition("legacy", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    let old_lc = before.launch_configuration_name.clone().unwrap();
    assert_eq!(launch_configuration_names(&h).await, std::slice::from_ref(&old_lc));

    patch_spec(&h, "legacy", serde_json::json!({"workers": {"instanceType": "t3.large"}})).await;
    let after = wait_ready_for(&h, "legacy", |st| {
        st.launch_configuration_name.as_deref() != Some(old_lc.as_str()) && st.instances_up_to_date == Some(2)
    })
    .await
    .status
    .unwrap();
    let new_lc = after.launch_configuration_name.unwrap();
    eventually(Duration::from_secs(60), || async {
        (launch_configuration_names(&h).await == std::slice::from_ref(&new_lc)).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the old launch configuration {old_lc} was not deleted"));
    assert_eq!(count(&h, "autoscaling:StartInstanceRefresh"), 1);
    assert!(
        group_instances(&h, "legacy-workers").await.iter().all(|(_, _, lc)| lc.as_deref() == Some(new_lc.as_str()))
    );

    h.api.delete("legacy", &DeleteParams::default()).await.unwrap();
    h.wait_gone("legacy", Duration::from_secs(180)).await;
    assert!(launch_configuration_names(&h).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ami_behind_the_ssm_parameter_is_rolled_out_on_resync() {
    let h = Harness::start_full(Default::default(), |c| c.steady_requeue = Duration::from_secs(2)).await.unwrap();
    let aws = h.aws().await;
    let ssm = aws_sdk_ssm::Client::new(&h.sandbox.aws_config().await);
    let images = aws.ec2.describe_images().owners("amazon").send().await.unwrap();
    let amis: Vec<String> = images
        .images()
        .iter()
        .filter(|i| i.architecture().map(|a| a.as_str()) == Some("x86_64"))
        .filter_map(|i| i.image_id().map(str::to_string))
        .take(2)
        .collect();
    assert_eq!(amis.len(), 2, "moto ships public AMIs");
    let put = |ami: String| {
        let ssm = &ssm;
        async move {
            ssm.put_parameter()
                .name("/team/ecs-ami")
                .value(ami)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .unwrap();
        }
    };
    put(amis[0].clone()).await;
    let mut edd = h.sample("ssm");
    edd.spec.workers.as_mut().unwrap().image =
        ecs_defender_operator::crd::ImageSpec { ssm_parameter: Some("/team/ecs-ami".into()), id: None };
    h.create(&edd).await.unwrap();
    let ready = h.wait_condition("ssm", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    assert_eq!(ready.image_id.as_deref(), Some(amis[0].as_str()));

    put(amis[1].clone()).await;
    let after = wait_ready_for(&h, "ssm", |st| {
        st.image_id.as_deref() == Some(amis[1].as_str()) && st.instances_up_to_date == Some(2)
    })
    .await
    .status
    .unwrap();
    assert_eq!(after.launch_template_version, Some(2));
    assert_eq!(count(&h, "ec2:CreateLaunchTemplateVersion"), 1);
    assert_eq!(count(&h, "autoscaling:StartInstanceRefresh"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_and_subnets_change_with_one_update() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("sizes")).await.unwrap();
    h.wait_condition("sizes", "Ready", "True", READY_TIMEOUT).await;
    let aws = h.aws().await;
    let subnets = aws
        .ec2
        .describe_subnets()
        .filters(aws_sdk_ec2::types::Filter::builder().name("default-for-az").values("true").build())
        .send()
        .await
        .unwrap();
    let mut two: Vec<String> = subnets.subnets().iter().filter_map(|s| s.subnet_id().map(str::to_string)).collect();
    two.sort();
    two.truncate(2);
    let before = count(&h, "autoscaling:UpdateAutoScalingGroup");
    patch_spec(
        &h,
        "sizes",
        serde_json::json!({"workers": {"autoScalingGroup": {"maxSize": 3, "desiredCapacity": 3, "subnetIds": two}}}),
    )
    .await;
    wait_ready_for(&h, "sizes", |st| st.container_instances == Some(3) && st.defenders_connected == Some(3)).await;
    assert_eq!(count(&h, "autoscaling:UpdateAutoScalingGroup") - before, 1, "one update for sizes and subnets");
    assert_eq!(count(&h, "ec2:CreateLaunchTemplateVersion"), 0, "no new launch data");
    assert_eq!(count(&h, "autoscaling:StartInstanceRefresh"), 0);
    let g = aws.autoscaling.describe_auto_scaling_groups().auto_scaling_group_names("sizes-workers").send().await;
    let g = g.unwrap();
    let mut zone: Vec<String> =
        g.auto_scaling_groups()[0].vpc_zone_identifier().unwrap().split(',').map(str::to_string).collect();
    zone.sort();
    assert_eq!(zone, two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defender_option_change_under_faults_ends_with_exactly_one_new_revision() {
    use sandbox::{
        console::{Fault as ConsoleFault, FaultRule},
        gate::{Fault, FaultKind},
    };
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("opts")).await.unwrap();
    h.wait_condition("opts", "Ready", "True", READY_TIMEOUT).await;
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 1);
    // While the change lands: the Console answers 500 a few times, AWS throttles ECS a few times.
    h.sandbox.console().faults().inject(FaultRule::everywhere(ConsoleFault::ServerError).times(3));
    h.sandbox.gate().add_fault(Fault::new("ecs", FaultKind::Throttle).times(4));
    // An option that changes what the Console generates (the container's memory).
    patch_spec(&h, "opts", serde_json::json!({"defender": {"options": {"memoryLimit": 640}}})).await;
    let after = wait_ready_for(&h, "opts", |st| {
        st.task_definition_arn.as_deref().is_some_and(|a| a.ends_with("opts-defender:2"))
            && st.defenders_running == Some(2)
    })
    .await;
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 2, "exactly one new revision");
    // The faults were all met on the way.
    assert!(h.sandbox.console().faults().pending().is_empty(), "the Console's 500s were not all met");
    let throttled =
        h.sandbox.gate().calls().iter().filter(|c| c.error_code.as_deref() == Some("ThrottlingException")).count();
    assert_eq!(throttled, 4, "the ECS throttles were not all met");
    let aws = h.aws().await;
    let svc = aws.ecs.describe_services().cluster("opts").services("opts-defender").send().await.unwrap();
    assert!(svc.services()[0].task_definition().unwrap().ends_with("opts-defender:2"));
    assert_eq!(after.status.unwrap().observed_generation, Some(2));
    // Later resyncs register nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_and_kind_switches_leave_only_what_the_spec_names() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("ren")).await.unwrap();
    h.wait_condition("ren", "Ready", "True", READY_TIMEOUT).await;

    // The service.
    patch_spec(&h, "ren", serde_json::json!({"service": {"name": "ren-svc2"}})).await;
    wait_ready_for(&h, "ren", |st| st.owned.services == ["ren-svc2"]).await;
    assert_eq!(active_services(&h, "ren").await, ["ren-svc2"]);

    // The task definition's family.
    patch_spec(&h, "ren", serde_json::json!({"defender": {"taskName": "ren-td2"}})).await;
    wait_ready_for(&h, "ren", |st| st.owned.task_families == ["ren-td2"]).await;
    assert!(active_revisions(&h, "ren-defender").await.is_empty(), "old family still registered");
    assert_eq!(active_revisions(&h, "ren-td2").await.len(), 1);

    // The launch template.
    patch_spec(&h, "ren", serde_json::json!({"workers": {"name": "ren-lt2"}})).await;
    wait_ready_for(&h, "ren", |st| st.owned.launch_templates == ["ren-lt2"] && st.instances_up_to_date == Some(2))
        .await;
    assert_eq!(launch_template_names(&h).await, ["ren-lt2"]);

    // The Auto Scaling group.
    patch_spec(&h, "ren", serde_json::json!({"workers": {"autoScalingGroup": {"name": "ren-asg2"}}})).await;
    wait_ready_for(&h, "ren", |st| st.owned.auto_scaling_groups == ["ren-asg2"]).await;
    assert_eq!(group_names(&h).await, ["ren-asg2"]);

    // Launch template -> launch configuration.
    patch_spec(&h, "ren", serde_json::json!({"workers": {"kind": "LaunchConfiguration"}})).await;
    wait_ready_for(&h, "ren", |st| st.owned.launch_templates.is_empty() && st.instances_up_to_date == Some(2)).await;
    assert!(launch_template_names(&h).await.is_empty());
    assert_eq!(launch_configuration_names(&h).await.len(), 1);

    // Workers removed: the group and its configuration go (the cluster then has no nodes).
    patch_spec(&h, "ren", serde_json::json!({"workers": null})).await;
    eventually(READY_TIMEOUT, || async {
        let st = h.api.get("ren").await.ok()?.status?;
        (st.owned.auto_scaling_groups.is_empty() && st.owned.launch_configurations.is_empty()).then_some(())
    })
    .await
    .expect("old workers not removed");
    assert!(group_names(&h).await.is_empty());
    assert!(launch_configuration_names(&h).await.is_empty());

    // The cluster name: adding it (even spelt as the default) is refused by the API server.
    for name in ["other", "ren"] {
        let err = h
            .api
            .patch(
                "ren",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"cluster": {"name": name}}})),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("spec.cluster.name is immutable"), "{err}");
    }

    // Deletion then leaves nothing.
    h.api.delete("ren", &DeleteParams::default()).await.unwrap();
    h.wait_gone("ren", Duration::from_secs(180)).await;
    assert!(active_services(&h, "ren").await.is_empty());
    assert!(active_revisions(&h, "ren-td2").await.is_empty());
    assert!(launch_template_names(&h).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resources_with_default_names_share_a_region() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("alpha")).await.unwrap();
    h.create(&h.sample("beta")).await.unwrap();
    h.wait_condition("alpha", "Ready", "True", READY_TIMEOUT).await;
    h.wait_condition("beta", "Ready", "True", READY_TIMEOUT).await;
    assert_eq!(launch_template_names(&h).await, ["alpha-workers", "beta-workers"]);
    assert_eq!(group_names(&h).await, ["alpha-workers", "beta-workers"]);
    assert_eq!(active_services(&h, "alpha").await, ["alpha-defender"]);
    assert_eq!(active_services(&h, "beta").await, ["beta-defender"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defender_that_cannot_be_placed_says_why_then_stalls_after_the_deadline() {
    let h = Harness::start().await.unwrap();
    let mut edd = h.sample("noroom");
    // More memory than a t2.medium has: ECS can place the Defender nowhere.
    edd.spec.defender.options.memory_limit = Some(64 * 1024);
    edd.spec.progress_deadline_seconds = Some(30);
    h.create(&edd).await.unwrap();
    let waiting = eventually(Duration::from_secs(90), || async {
        let c = h.condition("noroom", "Reconciling").await?;
        (c.status == "True" && c.message.contains("unable to place")).then_some(c)
    })
    .await
    .expect("the wait does not quote ECS's placement failure");
    assert_eq!(waiting.reason, "Rolling");
    let stalled = h.wait_condition("noroom", "Stalled", "True", Duration::from_secs(90)).await;
    let c = stalled.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(c.reason, "ProgressDeadlineExceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_after_the_resource_takes_effect_in_seconds() {
    // The default stalled requeue: only the Secret watch can make this quick.
    let h = Harness::start_full(Default::default(), |c| c.stalled_requeue = Duration::from_secs(300)).await.unwrap();
    let mut edd = h.sample("late");
    edd.spec.defender.console.credentials_secret_ref.name = "late-console".into();
    h.create(&edd).await.unwrap();
    let stalled = h.wait_condition("late", "Stalled", "True", Duration::from_secs(30)).await;
    let c = stalled.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(c.reason, "SecretNotFound");
    let console = h.sandbox.console();
    let url = console.url();
    h.put_secret("late-console", &[("username", console.username()), ("password", console.password()), ("url", &url)])
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    h.wait_condition("late", "Ready", "True", Duration::from_secs(60)).await;
    println!("Ready {:?} after the Secret appeared", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_ip_choice_is_sent_only_when_set() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("subnetdecides")).await.unwrap();
    let mut edd = h.sample("public");
    edd.spec.workers.as_mut().unwrap().associate_public_ip_address = Some(true);
    h.create(&edd).await.unwrap();
    h.wait_condition("subnetdecides", "Ready", "True", READY_TIMEOUT).await;
    h.wait_condition("public", "Ready", "True", READY_TIMEOUT).await;
    let calls = h.sandbox.gate().calls();
    let sent: Vec<_> = calls
        .iter()
        .filter(|c| c.operation == "CreateLaunchTemplate")
        .filter(|c| c.params.values().any(|v| v.contains("subnetdecides")))
        .filter(|c| c.params.keys().any(|k| k.contains("AssociatePublicIpAddress")))
        .collect();
    assert!(sent.is_empty(), "{sent:#?}");
    // (The gate logs the choice where it is made: the other resource's create carries it.)
    let public = calls
        .iter()
        .filter(|c| c.operation == "CreateLaunchTemplate")
        .find(|c| c.params.values().any(|v| v.contains("public-workers")))
        .expect("the public resource's CreateLaunchTemplate");
    assert_eq!(public.params.get("AssociatePublicIpAddress").map(String::as_str), Some("true"), "{public:#?}");
    let aws = h.aws().await;
    let data = |name: &'static str| {
        let aws = &aws;
        async move {
            let v = aws.ec2.describe_launch_template_versions().launch_template_name(name).send().await.unwrap();
            v.launch_template_versions()[0].launch_template_data().unwrap().clone()
        }
    };
    let d = data("subnetdecides-workers").await;
    assert!(d.network_interfaces().iter().all(|n| n.associate_public_ip_address().is_none()), "{d:?}");
    let d = data("public-workers").await;
    assert_eq!(d.network_interfaces()[0].associate_public_ip_address(), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guide_named_launch_configuration_is_never_used_or_deleted() {
    let h = Harness::start().await.unwrap();
    let aws = h.aws().await;
    // Someone followed the manual guide in this account: an untagged configuration named pc-worker-node.
    let ami = aws_sdk_ssm::Client::new(&h.sandbox.aws_config().await)
        .get_parameter()
        .name(ecs_defender_operator::crd::DEFAULT_AMI_PARAMETER)
        .send()
        .await
        .unwrap()
        .parameter()
        .unwrap()
        .value()
        .unwrap()
        .to_string();
    aws.autoscaling
        .create_launch_configuration()
        .launch_configuration_name("pc-worker-node")
        .image_id(&ami)
        .instance_type("t2.medium")
        .send()
        .await
        .unwrap();
    let mut edd = h.sample("guide");
    let w = edd.spec.workers.as_mut().unwrap();
    w.kind = WorkerKind::LaunchConfiguration;
    w.name = Some("pc-worker-node".into());
    h.create(&edd).await.unwrap();
    let st = h.wait_condition("guide", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    let ours = st.launch_configuration_name.unwrap();
    assert_ne!(ours, "pc-worker-node");
    assert!(ours.starts_with("pc-worker-node-"), "{ours}");
    assert!(group_instances(&h, "guide-workers").await.iter().all(|(_, _, lc)| lc.as_deref() == Some(ours.as_str())));

    h.api.delete("guide", &DeleteParams::default()).await.unwrap();
    h.wait_gone("guide", Duration::from_secs(180)).await;
    assert_eq!(launch_configuration_names(&h).await, ["pc-worker-node"], "the user's configuration stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_put_back_within_one_resync_with_an_event() {
    // Every resync a full observation (deep), so drift no glance reads (a deregistered revision)
    // is put back within one too; tests/quiet_reconciles.rs shows the glance's share.
    let h = Harness::start_full(Default::default(), |c| {
        c.steady_requeue = Duration::from_secs(2);
        c.deep_resync = Duration::from_secs(2);
    })
    .await
    .unwrap();
    h.create(&h.sample("drift")).await.unwrap();
    let ready = h.wait_condition("drift", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    let aws = h.aws().await;

    // The group resized outside the operator.
    aws.autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name("drift-workers")
        .min_size(1)
        .desired_capacity(1)
        .send()
        .await
        .unwrap();
    eventually(Duration::from_secs(60), || async {
        let g = aws
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names("drift-workers")
            .send()
            .await
            .ok()?;
        (g.auto_scaling_groups()[0].desired_capacity() == Some(2)).then_some(())
    })
    .await
    .expect("the group's size was not put back");

    // The launch template's default version changed.
    let lt_id = ready.launch_template_id.clone().unwrap();
    aws.ec2
        .create_launch_template_version()
        .launch_template_id(&lt_id)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder().instance_type("t3.micro".into()).build(),
        )
        .send()
        .await
        .unwrap();
    aws.ec2.modify_launch_template().launch_template_id(&lt_id).default_version("2").send().await.unwrap();
    eventually(Duration::from_secs(60), || async {
        let lt = aws.ec2.describe_launch_templates().launch_template_ids(&lt_id).send().await.ok()?;
        (lt.launch_templates()[0].default_version_number() == Some(1)).then_some(())
    })
    .await
    .expect("the default version was not set back");

    // The task definition deregistered.
    let td = ready.task_definition_arn.clone().unwrap();
    aws.ecs.deregister_task_definition().task_definition(&td).send().await.unwrap();
    let st = wait_ready_for(&h, "drift", |st| st.task_definition_arn.as_deref() != Some(td.as_str())).await;
    assert!(st.status.unwrap().task_definition_arn.unwrap().ends_with("drift-defender:2"));

    // The service deleted.
    aws.ecs.delete_service().cluster("drift").service("drift-defender").force(true).send().await.unwrap();
    eventually(READY_TIMEOUT, || async {
        let ok = active_services(&h, "drift").await == ["drift-defender"]
            && h.condition("drift", "Ready").await.is_some_and(|c| c.status == "True");
        ok.then_some(())
    })
    .await
    .expect("the service was not created again");

    // The service pointed at a revision of someone else's.
    let other = aws
        .ecs
        .register_task_definition()
        .family("drift-other")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder().name("other").image("busybox").memory(64).build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_string();
    aws.ecs.update_service().cluster("drift").service("drift-defender").task_definition(&other).send().await.unwrap();
    eventually(READY_TIMEOUT, || async {
        let s = aws.ecs.describe_services().cluster("drift").services("drift-defender").send().await.ok()?;
        let running = s.services().first()?.task_definition()?.to_string();
        let ready = h.condition("drift", "Ready").await.is_some_and(|c| c.status == "True");
        (running.contains("task-definition/drift-defender:") && ready).then_some(())
    })
    .await
    .expect("the service was not pointed back at our revision");

    // The group deleted (it shows `Delete in progress` for a while, then a new one is created).
    let creates = count(&h, "autoscaling:CreateAutoScalingGroup");
    aws.autoscaling
        .delete_auto_scaling_group()
        .auto_scaling_group_name("drift-workers")
        .force_delete(true)
        .send()
        .await
        .unwrap();
    eventually(READY_TIMEOUT, || async {
        let groups = group_names(&h).await;
        let g = aws.autoscaling.describe_auto_scaling_groups().auto_scaling_group_names("drift-workers").send().await;
        let deleting = g.ok()?.auto_scaling_groups().first().is_none_or(|g| g.status().is_some());
        if count(&h, "autoscaling:CreateAutoScalingGroup") <= creates || deleting {
            return None;
        }
        let st = h.api.get("drift").await.ok()?.status?;
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (groups == ["drift-workers"] && ready && st.defenders_connected == Some(2)).then_some(())
    })
    .await
    .expect("the group was not created again");

    let events: Vec<_> = event_reasons(&h).await.into_iter().filter(|(r, _)| r == "DriftRepaired").collect();
    for what in [
        "resized",
        "default version",
        "deregistered",
        "service drift-defender was deleted",
        "service drift-defender was changed to run drift-other:1",
        "Auto Scaling group drift-workers was deleted",
    ] {
        assert!(
            events.iter().any(|(_, note)| note.contains(what)),
            "no DriftRepaired Event about {what:?}: {events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_start_says_why_then_stalls_after_the_deadline() {
    // A missing instance profile is refused before anything is created (tests/tenancy.rs); here it
    // goes missing later, outside the operator, and a replacement instance cannot start.
    let h = Harness::start_full(Default::default(), |c| c.steady_requeue = Duration::from_secs(2)).await.unwrap();
    let mut edd = h.sample("noprofile");
    edd.spec.progress_deadline_seconds = Some(30);
    h.create(&edd).await.unwrap();
    h.wait_condition("noprofile", "Ready", "True", READY_TIMEOUT).await;
    let iam = aws_sdk_iam::Client::new(&h.sandbox.aws_config().await);
    let profile = iam.get_instance_profile().instance_profile_name("ecsInstanceRole").send().await.unwrap();
    for role in profile.instance_profile().unwrap().roles() {
        iam.remove_role_from_instance_profile()
            .instance_profile_name("ecsInstanceRole")
            .role_name(role.role_name())
            .send()
            .await
            .unwrap();
    }
    iam.delete_instance_profile().instance_profile_name("ecsInstanceRole").send().await.unwrap();
    let (victim, _, _) = group_instances(&h, "noprofile-workers").await.remove(0);
    h.aws().await.ec2.terminate_instances().instance_ids(victim).send().await.unwrap();

    let waiting = eventually(Duration::from_secs(60), || async {
        let c = h.condition("noprofile", "Reconciling").await?;
        (c.status == "True" && c.message.contains("Invalid IAM Instance Profile")).then_some(c)
    })
    .await
    .expect("the wait does not quote the failed scaling activity");
    assert_eq!(waiting.reason, "WaitingForContainerInstances");
    let stalled = h.wait_condition("noprofile", "Stalled", "True", Duration::from_secs(90)).await;
    let c = stalled.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(c.reason, "ProgressDeadlineExceeded");
    assert!(c.message.contains("Invalid IAM Instance Profile"), "{}", c.message);
}
