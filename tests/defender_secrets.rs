//! The Defender's install bundle kept out of the task definition (issue 14), end to end in the
//! sandbox: with storage `SecretsManager` (the default) no registered revision holds the bundle,
//! the secret does, the Defenders still connect (the ECS world fetches the secret with the
//! execution role at each task's start), a Console upgrade updates the secret and rolls the
//! Defenders, an unchanged Console writes nothing, and deleting the resource removes the secret and
//! our role. `Inline` keeps the bundle in the task definition, as before.

mod common;

use std::time::Duration;

use common::{Harness, eventually};
use ecs_defender_operator::crd::{DefenderSecretsSpec, EcsDefenderDeployment, SecretStorage};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use sandbox::console::CENTRAL_CONSOLE;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn count(h: &Harness, key: &str) -> u64 {
    h.sandbox.gate().counts().get(key).copied().unwrap_or(0)
}

/// Every revision of `family` (ACTIVE and INACTIVE), as the API describes it, in full.
async fn revisions(aws: &sandbox::world::AwsClientsForTests, family: &str) -> Vec<String> {
    let mut out = vec![];
    for status in [aws_sdk_ecs::types::TaskDefinitionStatus::Active, aws_sdk_ecs::types::TaskDefinitionStatus::Inactive]
    {
        let list = aws.ecs.list_task_definitions().family_prefix(family).status(status).send().await.unwrap();
        for arn in list.task_definition_arns() {
            let td = aws.ecs.describe_task_definition().task_definition(arn).send().await.unwrap();
            out.push(format!("{:?}", td.task_definition().unwrap()));
        }
    }
    out
}

/// The secret's current value, read as ECS would (the operator never reads it).
async fn secret_value(aws: &sandbox::world::AwsClientsForTests, arn: &str) -> String {
    let v = aws.secretsmanager.get_secret_value().secret_id(arn).send().await.expect("GetSecretValue");
    v.secret_string().unwrap().to_string()
}

/// An annotation change: a reconcile without a spec change.
async fn poke(h: &Harness, name: &str, n: u32) {
    h.api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"poke": n.to_string()}}})),
        )
        .await
        .unwrap();
}

fn reconciles(h: &Harness) -> f64 {
    h.metric("ecs_defender_operator_reconciles_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_lives_in_secrets_manager_and_in_no_revision() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("vault")).await.unwrap();
    let edd = h.wait_condition("vault", "Ready", "True", READY_TIMEOUT).await;
    let st = edd.status.clone().unwrap();
    assert_eq!((st.defenders_connected, st.defenders_running), (Some(2), Some(2)));
    let recorded = st.defender_secret.clone().expect("status names the secret");
    assert!(recorded.arn.contains(":secret:ecs-defender/vault-"), "{recorded:?}");
    let version = recorded.version_id.clone().expect("and the version the Defenders started with");

    let aws = h.aws().await;
    let bundle = h.sandbox.console().install_bundle(CENTRAL_CONSOLE);
    // The secret holds the Console's bundle as its current version, and is ours.
    assert_eq!(secret_value(&aws, &recorded.arn).await, bundle);
    let secret = aws.secretsmanager.describe_secret().secret_id(&recorded.arn).send().await.unwrap();
    let stages = secret.version_ids_to_stages().unwrap();
    assert!(stages[&version].iter().any(|s| s == "AWSCURRENT"), "{stages:?}");
    let owner = secret.tags().iter().find(|t| t.key() == Some("ecsdefender.io/owner")).and_then(|t| t.value());
    assert_eq!(owner, edd.metadata.uid.as_deref());

    // No revision holds the bundle; the current one takes it from the secret with our role.
    let all = revisions(&aws, "vault-defender").await;
    assert_eq!(all.len(), 1);
    for td in &all {
        assert!(!td.contains(&bundle), "a revision holds the install bundle: {td}");
    }
    let td = aws.ecs.describe_task_definition().task_definition("vault-defender").send().await.unwrap();
    let td = td.task_definition().unwrap();
    let c = &td.container_definitions()[0];
    assert!(c.environment().iter().all(|e| e.name() != Some("INSTALL_BUNDLE")));
    assert_eq!(c.secrets().len(), 1);
    assert_eq!((c.secrets()[0].name(), c.secrets()[0].value_from()), ("INSTALL_BUNDLE", recorded.arn.as_str()));
    let role_arn = td.execution_role_arn().expect("an execution role").to_string();
    let role_name = role_arn.rsplit('/').next().unwrap().to_string();
    let role = aws.iam.get_role().role_name(&role_name).send().await.unwrap();
    assert_eq!(role.role().unwrap().path(), "/ecs-defender/");
    let policy =
        aws.iam.get_role_policy().role_name(&role_name).policy_name("read-install-bundle").send().await.unwrap();
    let doc = policy.policy_document();
    let doc: serde_json::Value = serde_json::from_str(doc).unwrap_or_else(|_| {
        serde_json::from_str(&url::form_urlencoded::parse(format!("x={doc}").as_bytes()).next().unwrap().1).unwrap()
    });
    assert_eq!(doc["Statement"][0]["Action"], "secretsmanager:GetSecretValue");
    assert_eq!(doc["Statement"][0]["Resource"], recorded.arn.as_str(), "exactly that secret");

    // The Defenders connected with it: the Console lists both.
    let connected: Vec<_> = h.sandbox.console().defenders().into_iter().filter(|d| d.connected).collect();
    assert_eq!(connected.len(), 2, "{connected:?}");
    for key in ["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "iam:CreateRole", "iam:PutRolePolicy"] {
        assert_eq!(count(&h, key), 1, "{key}");
    }

    // A resync of the unchanged resource writes nothing: no secret, no revision, no Console generation.
    h.sandbox.gate().clear_calls();
    h.sandbox.console().clear_requests();
    let n0 = reconciles(&h);
    poke(&h, "vault", 1).await;
    eventually(Duration::from_secs(30), || async { (reconciles(&h) > n0).then_some(()) }).await.expect("a reconcile");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mutations: Vec<_> = h.sandbox.gate().calls().iter().filter(|c| c.mutating).map(|c| c.key()).collect();
    assert!(mutations.is_empty(), "a converged resource was changed: {mutations:?}");
    assert!(h.sandbox.console().requests().iter().all(|r| !r.endpoint.contains("ecs-task")));

    // The bundle is nowhere in status or Events.
    let status = serde_json::to_string(&h.api.get("vault").await.unwrap().status).unwrap();
    assert!(!status.contains(&bundle));
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    assert!(!events.contains(&bundle), "the bundle is in an Event");
    assert!(events.contains("stored the Console's install bundle in secret"), "{events}");

    // Deletion removes the secret (with a recovery window) and our role, after the revisions.
    h.sandbox.gate().clear_calls();
    h.api.delete("vault", &DeleteParams::default()).await.unwrap();
    h.wait_gone("vault", Duration::from_secs(120)).await;
    let order: Vec<String> =
        h.sandbox.gate().calls().iter().filter(|c| c.mutating && c.status == 200).map(|c| c.key()).collect();
    let pos = |key: &str| order.iter().position(|k| k == key).unwrap_or_else(|| panic!("{key} not called: {order:?}"));
    assert!(pos("ecs:DeregisterTaskDefinition") < pos("secretsmanager:DeleteSecret"), "{order:?}");
    assert!(pos("ecs:DeregisterTaskDefinition") < pos("iam:DeleteRole"), "{order:?}");
    assert!(pos("iam:DeleteRolePolicy") < pos("iam:DeleteRole"), "{order:?}");
    assert!(pos("secretsmanager:DeleteSecret") < pos("autoscaling:DeleteAutoScalingGroup"), "{order:?}");
    let gone = aws.secretsmanager.describe_secret().secret_id(&recorded.arn).send().await.unwrap();
    assert!(gone.deleted_date().is_some(), "the secret is scheduled for deletion");
    assert!(aws.iam.get_role().role_name(&role_name).send().await.is_err(), "the role is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_upgrade_updates_the_secret_and_rolls_the_defenders_an_unchanged_console_writes_nothing() {
    // A short resync, so the Console's version is looked at again soon.
    let h = Harness::start_full(Default::default(), |c| c.steady_requeue = Duration::from_secs(1)).await.unwrap();
    h.create(&h.sample("upgrade")).await.unwrap();
    let before = h.wait_condition("upgrade", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    let before_secret = before.defender_secret.clone().unwrap();
    // Resyncs of an unchanged Console: no new revision, no secret write.
    let n0 = reconciles(&h);
    eventually(Duration::from_secs(30), || async { (reconciles(&h) >= n0 + 3.0).then_some(()) })
        .await
        .expect("resyncs");
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 1);
    assert_eq!(count(&h, "secretsmanager:PutSecretValue"), 1);

    h.sandbox.console().set_version("34.04.200");
    let after = eventually(READY_TIMEOUT, || async {
        let st = h.api.get("upgrade").await.ok()?.status?;
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.console_version.as_deref() == Some("34.04.200") && st.defenders_running == Some(2)).then_some(st)
    })
    .await
    .expect("not rolled to the new Console version");
    let after_secret = after.defender_secret.clone().unwrap();
    assert_eq!(after_secret.arn, before_secret.arn, "the same secret, updated in place");
    assert_ne!(after_secret.version_id, before_secret.version_id, "a new version of it");
    let aws = h.aws().await;
    let bundle = h.sandbox.console().install_bundle(CENTRAL_CONSOLE);
    assert_eq!(secret_value(&aws, &after_secret.arn).await, bundle, "the secret holds the new bundle");
    assert_eq!(count(&h, "secretsmanager:PutSecretValue"), 2);
    assert_eq!(count(&h, "secretsmanager:CreateSecret"), 1);
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 2, "the image changed: one new revision");
    for td in revisions(&aws, "upgrade-defender").await {
        assert!(!td.contains(&bundle), "a revision holds the install bundle: {td}");
    }
    // Every Defender runs the new version: they started with the bundle the secret holds now.
    let connected: Vec<_> = h.sandbox.console().defenders().into_iter().filter(|d| d.connected).collect();
    assert_eq!(connected.len(), 2, "{connected:?}");
    assert!(connected.iter().all(|d| d.version == "34.04.200"), "{connected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_pinned_image_a_new_bundle_restarts_the_defenders_without_a_new_revision() {
    let h = Harness::start_full(Default::default(), |c| c.steady_requeue = Duration::from_secs(1)).await.unwrap();
    let mut edd = h.sample("pinned");
    edd.spec.defender.options.image = Some("registry.example.com/twistlock/defender:pinned".into());
    h.create(&edd).await.unwrap();
    let before = h.wait_condition("pinned", "Ready", "True", READY_TIMEOUT).await.status.unwrap();
    h.sandbox.console().set_version("34.04.200");
    let after = eventually(READY_TIMEOUT, || async {
        let st = h.api.get("pinned").await.ok()?.status?;
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let on_new = h.sandbox.console().defenders().iter().filter(|d| d.connected && d.version == "34.04.200").count();
        (ready && st.console_version.as_deref() == Some("34.04.200") && on_new == 2).then_some(st)
    })
    .await
    .expect("the Defenders did not restart with the new bundle");
    assert_eq!(after.task_definition_arn, before.task_definition_arn, "no new revision");
    assert_eq!(count(&h, "ecs:RegisterTaskDefinition"), 1);
    assert_eq!(count(&h, "secretsmanager:PutSecretValue"), 2);
    assert_ne!(after.defender_secret.unwrap().version_id, before.defender_secret.unwrap().version_id);
    let forced = h.sandbox.gate().calls().into_iter().filter(|c| c.operation == "UpdateService").count();
    assert_eq!(forced, 1, "one forced deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_keeps_the_bundle_in_the_task_definition() {
    let h = Harness::start().await.unwrap();
    let mut edd = h.sample("inline");
    edd.spec.defender.secrets = DefenderSecretsSpec { storage: SecretStorage::Inline, ..Default::default() };
    h.create(&edd).await.unwrap();
    let ready = h.wait_condition("inline", "Ready", "True", READY_TIMEOUT).await;
    let st = ready.status.unwrap();
    assert_eq!(st.defenders_connected, Some(2));
    assert!(st.defender_secret.is_none());
    let aws = h.aws().await;
    let td = aws.ecs.describe_task_definition().task_definition("inline-defender").send().await.unwrap();
    let td = td.task_definition().unwrap();
    let bundle = td.container_definitions()[0]
        .environment()
        .iter()
        .find(|e| e.name() == Some("INSTALL_BUNDLE"))
        .and_then(|e| e.value());
    assert_eq!(bundle, Some(h.sandbox.console().install_bundle(CENTRAL_CONSOLE).as_str()));
    assert!(td.execution_role_arn().is_none());
    // (The instance profile check before the workers are created is the only IAM call.)
    let secrets_or_roles = |k: &&String| {
        k.starts_with("secretsmanager:") || (k.starts_with("iam:") && k.as_str() != "iam:GetInstanceProfile")
    };
    let counts = h.sandbox.gate().counts();
    let touched: Vec<_> = counts.keys().filter(secrets_or_roles).collect();
    assert!(touched.is_empty(), "Inline needs neither Secrets Manager nor IAM roles: {touched:?}");
    h.api.delete("inline", &DeleteParams::default()).await.unwrap();
    h.wait_gone("inline", Duration::from_secs(120)).await;
    let counts = h.sandbox.gate().counts();
    assert!(!counts.keys().any(|k| secrets_or_roles(&k)), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_without_an_execution_role_stalls_before_any_aws_call() {
    let h = Harness::start().await.unwrap();
    let mut edd: EcsDefenderDeployment = h.sample("norole");
    edd.spec.defender.secrets = DefenderSecretsSpec::default();
    h.create(&edd).await.unwrap();
    let st = h.wait_condition("norole", "Stalled", "True", Duration::from_secs(30)).await;
    let stalled = st.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, "InvalidSpec");
    assert!(stalled.message.contains("createExecutionRole: true"), "{}", stalled.message);
    assert!(h.sandbox.gate().calls().is_empty(), "AWS was called for an invalid spec");
    // The schema refuses plain contradictions outright.
    let mut both = h.sample("both");
    both.spec.defender.secrets.execution_role_arn = Some("arn:aws:iam::123456789012:role/mine".into());
    let err = h.create(&both).await.unwrap_err().to_string();
    assert!(err.contains("set executionRoleArn or createExecutionRole, not both"), "{err}");
}
