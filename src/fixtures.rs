//! Builders of sample resources for tests (unit tests here and the end-to-end tests in `tests/`).

use kube::api::ObjectMeta;

use crate::crd::*;

/// A resource like `examples/sample.yaml`: workers with the guide's defaults, a Console at
/// `https://127.0.0.1:8083` with credentials in the Secret `pc-console`, the install bundle in
/// Secrets Manager read by an execution role the operator creates.
pub fn sample(name: &str) -> EcsDefenderDeployment {
    let spec: EcsDefenderDeploymentSpec = serde_json::from_value(serde_json::json!({
        "region": "us-east-1",
        "workers": {},
        "defender": {
            "console": {
                "url": "https://127.0.0.1:8083",
                "credentialsSecretRef": {"name": "pc-console"}
            },
            "secrets": {"createExecutionRole": true}
        }
    }))
    .expect("sample spec deserializes");
    let mut edd = EcsDefenderDeployment::new(name, spec);
    edd.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        ..Default::default()
    };
    edd
}
