//! (IO) The bench's side of Kubernetes: the CRD and the Secrets a sample needs, the
//! `EcsDefenderDeployment` objects (as JSON: the bench does not link the operator crate), and a
//! watch that notes when each one is first seen Ready.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::core::v1::Secret, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use crate::world::Sandbox;

pub const NAMESPACE: &str = "default";
/// Label every bench object carries, with its case as the value.
pub const CASE_LABEL: &str = "bench.ecsdefender.io/case";
const CRD_NAME: &str = "ecsdefenderdeployments.ecsdefender.io";

/// The resource type, as the committed CRD defines it.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ecsdefender.io", "v1alpha1", "EcsDefenderDeployment"),
        "ecsdefenderdeployments",
    )
}

pub fn api(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NAMESPACE, &api_resource())
}

/// Applies the committed CRD and waits until it is served; then the Secrets `pc-console` and
/// `aws` that the specs name.
pub async fn prepare(sandbox: &Sandbox, client: &Client) -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/ecsdefenderdeployments.ecsdefender.io.yaml");
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?)?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(CRD_NAME, &PatchParams::apply("ecs-defender-bench").force(), &Patch::Apply(&crd)).await?;
    let edds = api(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while edds.list(&ListParams::default().limit(1)).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("the CRD is not served after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let console = sandbox.console();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    for (name, data) in [
        (
            "pc-console",
            vec![
                ("username", console.username().to_string()),
                ("password", console.password().to_string()),
                ("url", console.url()),
            ],
        ),
        (
            "aws",
            vec![
                ("AWS_ACCESS_KEY_ID", crate::moto::ACCESS_KEY_ID.to_string()),
                ("AWS_SECRET_ACCESS_KEY", crate::moto::SECRET_ACCESS_KEY.to_string()),
            ],
        ),
    ] {
        let data: BTreeMap<_, _> = data.into_iter().collect();
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))?;
        secrets.create(&PostParams::default(), &secret).await?;
    }
    Ok(())
}

/// The sample (`examples/sample.yaml`) pointed at the sandbox: new cluster, workers, the install
/// bundle in Secrets Manager with an execution role of ours.
pub fn sample_spec(console_url: &str) -> Value {
    json!({
        "region": crate::world::REGION,
        "aws": {"credentialsSecretRef": {"name": "aws"}},
        "workers": {},
        "defender": {
            "console": {"url": console_url, "credentialsSecretRef": {"name": "pc-console"}},
            "secrets": {"createExecutionRole": true},
        },
    })
}

/// The sample with one worker (min = max = desired = 1).
pub fn small_workers_spec(console_url: &str) -> Value {
    let mut spec = sample_spec(console_url);
    spec["workers"] = json!({"autoScalingGroup": {"minSize": 1, "maxSize": 1, "desiredCapacity": 1}});
    spec
}

/// An existing cluster (with its container instances) adopted: no workers.
pub fn adopt_spec(console_url: &str, cluster: &str) -> Value {
    let mut spec = sample_spec(console_url);
    spec.as_object_mut().expect("object").remove("workers");
    spec["cluster"] = json!({"name": cluster, "adopt": true});
    spec
}

/// Workers whose instances can never reach ECS: no public IP in the default VPC, whose only way
/// out is an internet gateway (`ecs_world::network`), so they never register.
pub fn unreachable_workers_spec(console_url: &str) -> Value {
    let mut spec = small_workers_spec(console_url);
    spec["workers"]["associatePublicIpAddress"] = json!(false);
    spec
}

/// Creates the objects (a few at a time) and returns when each create was sent.
pub async fn create_all(
    client: &Client,
    case: &str,
    objects: Vec<(String, Value)>,
) -> Result<HashMap<String, SystemTime>> {
    let api = api(client);
    let ar = api_resource();
    let created = futures::stream::iter(objects)
        .map(|(name, spec)| {
            let api = api.clone();
            let mut obj = DynamicObject::new(&name, &ar).data(json!({"spec": spec}));
            obj.metadata.labels = Some([(CASE_LABEL.to_string(), case.to_string())].into());
            async move {
                let at = SystemTime::now();
                api.create(&PostParams::default(), &obj).await.with_context(|| format!("creating {name}"))?;
                anyhow::Ok((name, at))
            }
        })
        .buffer_unordered(16)
        .try_collect::<HashMap<_, _>>()
        .await?;
    Ok(created)
}

/// Whether the object's status says Ready for its current generation.
pub fn is_ready(obj: &DynamicObject) -> bool {
    let status = &obj.data["status"];
    let current = obj.metadata.generation.is_some_and(|g| status["observedGeneration"].as_i64() == Some(g));
    current
        && status["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Watches one case's objects and notes when each is first seen Ready (the time it arrives here).
pub struct ReadyWatch {
    seen: Arc<Mutex<HashMap<String, SystemTime>>>,
    last: Arc<Mutex<HashMap<String, DynamicObject>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyWatch {
    pub fn start(client: &Client, case: &str) -> ReadyWatch {
        let seen: Arc<Mutex<HashMap<String, SystemTime>>> = Arc::default();
        let last: Arc<Mutex<HashMap<String, DynamicObject>>> = Arc::default();
        let stream = watcher(api(client), watcher::Config::default().labels(&format!("{CASE_LABEL}={case}")))
            .default_backoff()
            .applied_objects();
        let (s, l) = (seen.clone(), last.clone());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let Ok(obj) = item else { continue };
                let now = SystemTime::now();
                let name = obj.metadata.name.clone().unwrap_or_default();
                if is_ready(&obj) {
                    s.lock().unwrap().entry(name.clone()).or_insert(now);
                }
                l.lock().unwrap().insert(name, obj);
            }
        });
        ReadyWatch { seen, last, task }
    }

    /// When each object was first seen Ready.
    pub fn ready_at(&self) -> HashMap<String, SystemTime> {
        self.seen.lock().unwrap().clone()
    }

    pub fn ready_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The latest version of each object the watch saw.
    pub fn objects(&self) -> HashMap<String, DynamicObject> {
        self.last.lock().unwrap().clone()
    }

    /// Waits until `n` objects were seen Ready, or `timeout`; returns how many were. `progress`
    /// hears the count (and whether it changed) every 100 ms.
    pub async fn wait_ready(&self, n: usize, timeout: Duration, mut progress: impl FnMut(usize, bool)) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = usize::MAX;
        loop {
            let k = self.ready_count();
            progress(k, k != last);
            last = k;
            if k >= n || tokio::time::Instant::now() > deadline {
                return k;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The message of a condition of the object, if it has that condition.
pub fn condition_message(obj: &DynamicObject, type_: &str) -> Option<String> {
    obj.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).map(|c| {
        format!(
            "{}={} {}: {}",
            type_,
            c["status"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        )
    })
}
