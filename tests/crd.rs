//! The CRD: the committed YAML is what the Rust types generate, and a real apiserver accepts it,
//! serves the resource (create, status by server-side apply, watch) and rejects invalid ones
//! with the schema's message.

mod common;

use std::time::Duration;

use ecs_defender_operator::{
    crd::{EcsDefenderDeployment, EcsDefenderDeploymentStatus, FIELD_MANAGER},
    fixtures,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, CustomResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use sandbox::control_plane::ControlPlane;

#[test]
fn committed_crd_matches_the_generated_one() {
    let generated = serde_yaml::to_string(&EcsDefenderDeployment::crd()).unwrap();
    for path in [
        "crds/ecsdefenderdeployments.ecsdefender.io.yaml",
        "charts/ecs-defender-operator/files/crds/ecsdefenderdeployments.ecsdefender.io.yaml",
    ] {
        let committed = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(committed == generated, "{path} differs from the generated CRD; run `make crd` and commit the result");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_round_trips_through_a_real_apiserver() {
    ecs_defender_operator::install_crypto_provider();
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.unwrap();
    common::install_crd(&client).await.unwrap();
    let api: Api<EcsDefenderDeployment> = Api::namespaced(client.clone(), "default");

    // A watch started before the create sees it.
    let watch = tokio::spawn({
        let api = api.clone();
        async move {
            watcher(api, watcher::Config::default())
                .applied_objects()
                .try_filter(|o| {
                    futures::future::ready(o.metadata.name.as_deref() == Some("demo") && o.status.is_some())
                })
                .boxed()
                .try_next()
                .await
        }
    });

    let created = api.create(&PostParams::default(), &fixtures::sample("demo")).await.unwrap();
    // The schema's defaults were applied by the server.
    let w = created.spec.workers.as_ref().unwrap();
    assert_eq!(w.instance_type, "t2.medium");
    assert_eq!(w.auto_scaling_group.desired_capacity, 2);
    assert_eq!(created.spec.defender.task_name, None, "derived from the cluster name by the operator");
    assert_eq!(w.rollout.min_healthy_percentage, 90);

    let status = EcsDefenderDeploymentStatus {
        observed_generation: created.metadata.generation,
        cluster_name: Some("demo".into()),
        container_instances: Some(2),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: "2 instances".into(),
            observed_generation: created.metadata.generation,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        }],
        ..Default::default()
    };
    let patch =
        serde_json::json!({"apiVersion": "ecsdefender.io/v1alpha1", "kind": "EcsDefenderDeployment", "status": status});
    api.patch_status("demo", &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await.unwrap();

    let read = api.get("demo").await.unwrap();
    let st = read.status.unwrap();
    assert_eq!(st.container_instances, Some(2));
    assert_eq!(st.conditions[0].type_, "Ready");
    // The spec is untouched by a status patch.
    assert_eq!(read.spec, created.spec);

    let seen =
        tokio::time::timeout(Duration::from_secs(20), watch).await.expect("watch saw the status").unwrap().unwrap();
    assert_eq!(seen.unwrap().status.unwrap().cluster_name.as_deref(), Some("demo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resources_are_rejected_with_the_schema_message() {
    ecs_defender_operator::install_crypto_provider();
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.unwrap();
    common::install_crd(&client).await.unwrap();
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &kube::api::ApiResource::erase::<EcsDefenderDeployment>(&()));
    let create = |spec: serde_json::Value| {
        let api = api.clone();
        async move {
            let obj = serde_json::json!({
                "apiVersion": "ecsdefender.io/v1alpha1", "kind": "EcsDefenderDeployment",
                "metadata": {"name": "bad"}, "spec": spec,
            });
            let dynamic: kube::api::DynamicObject = serde_json::from_value(obj.clone()).unwrap();
            match api.create(&PostParams::default(), &dynamic).await {
                Ok(_) => panic!("the apiserver accepted an invalid resource: {obj}"),
                Err(kube::Error::Api(s)) => s.message,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    };
    let console = serde_json::json!({"console": {"url": "https://c:8083", "credentialsSecretRef": {"name": "pc"}}});

    let msg = create(serde_json::json!({"defender": console})).await;
    assert!(msg.contains("spec.region: Required value"), "{msg}");

    let msg = create(serde_json::json!({"region": "us-east-1", "defender": console, "workers": {"autoScalingGroup": {"minSize": "one"}}})).await;
    assert!(msg.contains("spec.workers.autoScalingGroup.minSize: Invalid value: \"string\": spec.workers.autoScalingGroup.minSize in body must be of type integer"), "{msg}");

    // CEL (servers that support it; ours is 1.35).
    let msg = create(serde_json::json!({"region": "us-east-1", "defender": console, "workers": {"autoScalingGroup": {"minSize": 3, "maxSize": 2, "desiredCapacity": 2}}})).await;
    assert!(msg.contains("autoScalingGroup needs minSize <= desiredCapacity <= maxSize"), "{msg}");

    let msg = create(serde_json::json!({"region": "Mars", "defender": console})).await;
    assert!(msg.contains("spec.region: Invalid value: \"Mars\""), "{msg}");

    // cluster.name is immutable, and adding or removing it counts as a change.
    for (before, after) in [(None, Some("other")), (Some("named"), None), (Some("named"), Some("renamed"))] {
        let mut obj = serde_json::json!({
            "apiVersion": "ecsdefender.io/v1alpha1", "kind": "EcsDefenderDeployment",
            "metadata": {"name": "immutable"}, "spec": {"region": "us-east-1", "defender": console},
        });
        if let Some(n) = before {
            obj["spec"]["cluster"] = serde_json::json!({"name": n});
        }
        let created = api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
        let patch = serde_json::json!({"spec": {"cluster": {"name": after}}});
        let err = api
            .patch("immutable", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
            .expect_err(&format!("cluster.name {before:?} -> {after:?} was accepted"));
        assert!(err.to_string().contains("spec.cluster.name is immutable"), "{err}");
        api.delete("immutable", &Default::default()).await.unwrap();
        drop(created);
    }
}
