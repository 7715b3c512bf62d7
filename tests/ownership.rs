//! Ownership conflicts (issue 13, reliability): two resources naming the same ECS cluster in one
//! AWS account and region (same endpoint and identity), applied together, in one namespace and
//! across namespaces. Exactly one owns it; the other is `Stalled` with `OwnershipConflict`, naming
//! the owner, and makes no AWS call at all. Deleting the loser leaves the owner's AWS resources
//! alone; deleting the owner lets the loser take over at once (not at its next stalled requeue).

mod common;

use std::time::{Duration, Instant};

use common::{Harness, eventually, inventory::Inventory};
use ecs_defender_operator::crd::EcsDefenderDeployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};

const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The creates one resource makes on its way to Ready (launch template, Secrets Manager storage).
const CREATES: [&str; 7] = [
    "ecs:CreateCluster",
    "ec2:CreateLaunchTemplate",
    "autoscaling:CreateAutoScalingGroup",
    "secretsmanager:CreateSecret",
    "iam:CreateRole",
    "ecs:RegisterTaskDefinition",
    "ecs:CreateService",
];

fn count(h: &Harness, key: &str) -> u64 {
    h.sandbox.gate().counts().get(key).copied().unwrap_or(0)
}

/// `name` in `namespace`, its cluster named `cluster`.
fn resource(h: &Harness, namespace: &str, name: &str, cluster: &str) -> EcsDefenderDeployment {
    let mut edd = h.sample(name);
    edd.metadata.namespace = Some(namespace.into());
    edd.spec.cluster.name = Some(cluster.into());
    edd
}

async fn create_in(h: &Harness, edd: &EcsDefenderDeployment) -> EcsDefenderDeployment {
    let api: Api<EcsDefenderDeployment> = Api::namespaced(h.client.clone(), &edd.namespace().unwrap());
    api.create(&PostParams::default(), edd).await.unwrap()
}

/// A second namespace with the same AWS and Console Secrets as `default` (one AWS identity).
async fn namespace_like_default(h: &Harness, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(h.client.clone());
    let n: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    namespaces.create(&PostParams::default(), &n).await.unwrap();
    let from: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    let to: Api<Secret> = Api::namespaced(h.client.clone(), ns);
    for name in ["aws", "pc-console"] {
        let s = from.get(name).await.unwrap();
        let copy = Secret { metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() }, ..s };
        to.create(&PostParams::default(), &copy).await.unwrap();
    }
}

/// A condition of `namespace/name`.
async fn condition(
    h: &Harness,
    namespace: &str,
    name: &str,
    kind: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let api: Api<EcsDefenderDeployment> = Api::namespaced(h.client.clone(), namespace);
    api.get(name).await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == kind)
}

/// Waits until one of the two is Ready and the other `Stalled` with `OwnershipConflict`; returns
/// (owner, loser) as `namespace/name`, and the loser's message.
async fn one_owner(h: &Harness, a: (&str, &str), b: (&str, &str)) -> ((String, String), (String, String), String) {
    let found = eventually(READY_TIMEOUT, || async {
        for (owner, loser) in [(a, b), (b, a)] {
            let ready = condition(h, owner.0, owner.1, "Ready").await.is_some_and(|c| c.status == "True");
            let stalled = condition(h, loser.0, loser.1, "Stalled").await;
            if let Some(s) = stalled.filter(|s| ready && s.status == "True" && s.reason == "OwnershipConflict") {
                let pair = |(ns, n): (&str, &str)| (ns.to_string(), n.to_string());
                return Some((pair(owner), pair(loser), s.message));
            }
        }
        None
    })
    .await;
    match found {
        Some(f) => f,
        None => panic!(
            "no single owner after {READY_TIMEOUT:?}: {:?} / {:?}",
            condition(h, a.0, a.1, "Ready").await,
            condition(h, b.0, b.1, "Stalled").await.or(condition(h, b.0, b.1, "Ready").await)
        ),
    }
}

/// Everything created exactly once, every create answered, the cluster tagged with the owner.
async fn created_once_by(h: &Harness, owner: &EcsDefenderDeployment, cluster: &str) {
    for op in CREATES {
        assert_eq!(count(h, op), 1, "{op}: {:?}", h.sandbox.gate().counts());
    }
    let failed: Vec<_> = h.sandbox.gate().calls().into_iter().filter(|c| c.mutating && c.status >= 300).collect();
    assert!(failed.is_empty(), "mutations refused (a second creator?): {failed:#?}");
    let aws = h.aws().await;
    let out = aws
        .ecs
        .describe_clusters()
        .clusters(cluster)
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .send()
        .await
        .unwrap();
    let tags = out.clusters()[0].tags();
    let owner_tag = tags.iter().find(|t| t.key() == Some("ecsdefender.io/owner")).and_then(|t| t.value());
    assert_eq!(owner_tag, owner.uid().as_deref(), "the cluster's owner tag");
}

/// The loser, reconciled again and again (each change of its labels makes the operator look at
/// it), calls AWS not once: a window with only its reconciles in it leaves the gate's log empty.
async fn loser_is_silent(h: &Harness, loser: &(String, String)) {
    tokio::time::sleep(Duration::from_secs(2)).await; // the owner's last reconcile after Ready
    h.sandbox.gate().clear_calls();
    let before = h.metric("ecs_defender_operator_reconciles_total");
    let api: Api<EcsDefenderDeployment> = Api::namespaced(h.client.clone(), &loser.0);
    for n in 0..4 {
        let patch = serde_json::json!({"metadata": {"labels": {"nudge": n.to_string()}}});
        api.patch(&loser.1, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let reconciles = h.metric("ecs_defender_operator_reconciles_total") - before;
    assert!(reconciles >= 4.0, "the loser was reconciled {reconciles} times in the window");
    assert!(condition(h, &loser.0, &loser.1, "Stalled").await.is_some_and(|c| c.reason == "OwnershipConflict"));
    let calls = h.sandbox.gate().calls();
    assert!(calls.is_empty(), "AWS calls while only the loser reconciled: {calls:#?}");
}

async fn get(h: &Harness, (ns, name): &(String, String)) -> EcsDefenderDeployment {
    Api::<EcsDefenderDeployment>::namespaced(h.client.clone(), ns).get(name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_namespace_applied_together_one_owns_and_takes_over_when_the_owner_goes() {
    // The loser's stalled requeue is far away: taking over within seconds needs the owner's
    // deletion to re-queue it.
    let h = Harness::start_full(Default::default(), |c| c.stalled_requeue = Duration::from_secs(600)).await.unwrap();
    let (a, b) = (resource(&h, "default", "alpha", "shared"), resource(&h, "default", "beta", "shared"));
    let (a, b) = tokio::join!(create_in(&h, &a), create_in(&h, &b));
    let (owner, loser, message) = one_owner(&h, ("default", "alpha"), ("default", "beta")).await;
    println!("owner {owner:?}, loser {loser:?}: {message}");
    let owner_obj = if owner.1 == "alpha" { &a } else { &b };
    assert!(message.contains(&format!("EcsDefenderDeployment default/{}", owner.1)), "{message}");
    assert!(message.contains("ECS cluster shared"), "{message}");
    created_once_by(&h, owner_obj, "shared").await;
    let l = get(&h, &loser).await.status.unwrap();
    assert!(l.owned.is_empty() && l.cluster_arn.is_none() && l.service_arn.is_none(), "{l:#?}");
    loser_is_silent(&h, &loser).await;

    // The owner goes: its teardown runs, then the loser takes over at once and becomes Ready.
    h.api.delete(&owner.1, &DeleteParams::default()).await.unwrap();
    h.wait_gone(&owner.1, READY_TIMEOUT).await;
    let gone = Instant::now();
    eventually(Duration::from_secs(15), || async {
        condition(&h, &loser.0, &loser.1, "Stalled").await.filter(|c| c.status == "False").map(|_| ())
    })
    .await
    .expect("the loser was not re-queued within 15 s of the owner's deletion");
    println!("the loser took over {:?} after the owner was gone", gone.elapsed());
    h.wait_condition(&loser.1, "Ready", "True", READY_TIMEOUT).await;
    let new_owner = get(&h, &loser).await;
    let aws = h.aws().await;
    let out = aws
        .ecs
        .describe_clusters()
        .clusters("shared")
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .send()
        .await
        .unwrap();
    let active = out.clusters().iter().find(|c| c.status() == Some("ACTIVE")).expect("no ACTIVE cluster");
    let tag = active.tags().iter().find(|t| t.key() == Some("ecsdefender.io/owner")).and_then(|t| t.value());
    assert_eq!(tag, new_owner.uid().as_deref());
    assert_eq!(Inventory::read(&h.sandbox.aws_config().await).await, Inventory::one());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_namespaces_applied_together_one_owns_and_deleting_the_loser_touches_nothing() {
    let h = Harness::start().await.unwrap();
    namespace_like_default(&h, "team-b").await;
    let (a, b) = (resource(&h, "default", "edge", "shared"), resource(&h, "team-b", "edge", "shared"));
    let (a, b) = tokio::join!(create_in(&h, &a), create_in(&h, &b));
    let (owner, loser, message) = one_owner(&h, ("default", "edge"), ("team-b", "edge")).await;
    println!("owner {owner:?}, loser {loser:?}: {message}");
    let owner_obj = if owner.0 == "default" { &a } else { &b };
    assert!(message.contains(&format!("EcsDefenderDeployment {}/edge", owner.0)), "{message}");
    created_once_by(&h, owner_obj, "shared").await;
    loser_is_silent(&h, &loser).await;

    // The loser goes at once (nothing of its own to delete) and AWS is not called.
    h.sandbox.gate().clear_calls();
    let loser_api: Api<EcsDefenderDeployment> = Api::namespaced(h.client.clone(), &loser.0);
    loser_api.delete(&loser.1, &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(15), || async {
        matches!(loser_api.get_opt(&loser.1).await, Ok(None)).then_some(())
    })
    .await
    .expect("the loser was not released at once");
    let calls = h.sandbox.gate().calls();
    assert!(calls.iter().all(|c| !c.mutating), "deleting the loser changed AWS: {calls:#?}");
    assert_eq!(Inventory::read(&h.sandbox.aws_config().await).await, Inventory::one());
    assert!(condition(&h, &owner.0, &owner.1, "Ready").await.is_some_and(|c| c.status == "True"));

    // Applied again, later (the owner holds by its status now), and after an operator restart
    // (nothing remembered in the process): it loses again and calls nothing.
    let again = resource(&h, &loser.0, "late", "shared");
    h.restart_operator();
    h.sandbox.gate().clear_calls();
    create_in(&h, &again).await;
    let stalled = eventually(Duration::from_secs(30), || async {
        condition(&h, &loser.0, "late", "Stalled").await.filter(|c| c.status == "True")
    })
    .await
    .expect("the late resource did not stall");
    assert_eq!(stalled.reason, "OwnershipConflict", "{}", stalled.message);
    assert!(stalled.message.contains(&format!("{}/{}", owner.0, owner.1)), "{}", stalled.message);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mutations: Vec<_> = h.sandbox.gate().calls().into_iter().filter(|c| c.mutating).collect();
    assert!(mutations.is_empty(), "{mutations:#?}");
    assert_eq!(Inventory::read(&h.sandbox.aws_config().await).await, Inventory::one());
}
