//! Helpers shared by the end-to-end tests: the CRD on a real apiserver, polling with deadlines.
#![allow(dead_code)]

use std::time::Duration;

use ecs_defender_operator::crd::EcsDefenderDeployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, CustomResourceExt,
    api::{Patch, PatchParams},
};

/// Applies the committed CRD by server-side apply and waits until it is Established.
pub async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/ecsdefenderdeployments.ecsdefender.io.yaml"))?)?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = EcsDefenderDeployment::crd_name();
    api.patch(name, &PatchParams::apply("e2e-tests").force(), &Patch::Apply(&crd)).await?;
    eventually(Duration::from_secs(30), || async {
        let c = api.get(name).await.ok()?;
        c.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("CRD not Established within 30s"))?;
    // Discovery can lag Established by a moment.
    let edds: Api<EcsDefenderDeployment> = Api::all(client.clone());
    eventually(Duration::from_secs(30), || async { edds.list(&Default::default()).await.ok().map(|_| ()) })
        .await
        .ok_or_else(|| anyhow::anyhow!("CRD not served within 30s"))
}

/// Polls `f` every 100 ms until it returns `Some`, or `None` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
