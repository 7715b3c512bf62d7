//! The operator as a real process (the `ecs-defender-operator` binary) against a sandbox with no
//! operator of its own: for tests that kill it with SIGKILL or run several replicas.

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use ecs_defender_operator::crd::{AwsSpec, EcsDefenderDeployment, SecretRef};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{Api, Client, api::PostParams};
use sandbox::world::{Sandbox, SandboxOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::eventually;

pub const LEASE: &str = "ecs-defender-operator";
/// Short, so a takeover is quick to wait for; the grace is the renewal margin.
pub const LEASE_SECONDS: u64 = 6;
pub const GRACE_SECONDS: u64 = 2;

/// One operator process, its HTTP endpoints and its log.
pub struct Operator {
    pub name: String,
    pub child: tokio::process::Child,
    pub url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    pub async fn start(name: &str, world: &World, extra_env: &[(&str, &str)]) -> Operator {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-defender-operator"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", world.sandbox.control_plane().kubeconfig())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("OPERATOR_AWS_ENDPOINT_URL", world.sandbox.aws_endpoint())
            .env("REQUEUE_CONVERGING_SECONDS", "1")
            .env("ALLOW_INSECURE_CONSOLE", "true")
            .env("POD_NAME", name)
            .env("LEADER_ELECT_LEASE_NAME", LEASE)
            .env("LEADER_ELECT_LEASE_DURATION_SECONDS", LEASE_SECONDS.to_string())
            .env("LEADER_ELECT_RENEW_GRACE_SECONDS", GRACE_SECONDS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the operator binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        let mut addr_tx = Some(addr_tx);
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // main.rs logs the bound address of /metrics, /healthz, /readyz.
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(addr) = v["fields"]["addr"].as_str()
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let log = log.lock().unwrap().join("\n");
                panic!("{name} did not start; log:\n{log}")
            }
        };
        Operator { name: name.to_string(), child, url: format!("http://{addr}"), log }
    }

    /// `/readyz`'s body: `ready: leader` or `ready: standby`.
    pub async fn readyz(&self) -> Option<String> {
        let resp = reqwest::get(format!("{}/readyz", self.url)).await.ok()?;
        resp.status().is_success().then_some(())?;
        resp.text().await.ok()
    }

    /// Sum of the metric's series (`name` or `name{...}`), from this process's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn aws_calls(&self) -> f64 {
        self.metric("ecs_defender_operator_aws_calls_total").await
    }

    pub async fn reconciles(&self) -> f64 {
        self.metric("ecs_defender_operator_reconciles_total").await
    }

    pub async fn wait_role(&self, role: &str, timeout: Duration) {
        let want = format!("ready: {role}");
        if eventually(timeout, || async { (self.readyz().await.as_deref() == Some(want.as_str())).then_some(()) })
            .await
            .is_none()
        {
            panic!("{} is not {role} after {timeout:?}; log:\n{}", self.name, self.log());
        }
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }
}

/// The sandbox with the CRD and the Secrets a sample needs, and no operator.
pub struct World {
    pub sandbox: Sandbox,
    pub client: Client,
    pub api: Api<EcsDefenderDeployment>,
}

impl World {
    pub async fn start() -> World {
        Self::start_with(SandboxOptions::default()).await
    }

    pub async fn start_with(opts: SandboxOptions) -> World {
        ecs_defender_operator::install_crypto_provider();
        let sandbox = Sandbox::start(opts).await.unwrap();
        let client = sandbox.kube_client().await.unwrap();
        super::install_crd(&client).await.unwrap();
        let console = sandbox.console();
        let console_url = console.url();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        for (name, data) in [
            (
                "pc-console",
                vec![("username", console.username()), ("password", console.password()), ("url", &console_url)],
            ),
            (
                "aws",
                vec![
                    ("AWS_ACCESS_KEY_ID", sandbox::moto::ACCESS_KEY_ID),
                    ("AWS_SECRET_ACCESS_KEY", sandbox::moto::SECRET_ACCESS_KEY),
                ],
            ),
        ] {
            let data: BTreeMap<_, _> = data.into_iter().collect();
            let secret: Secret =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "stringData": data})).unwrap();
            secrets.create(&PostParams::default(), &secret).await.unwrap();
        }
        let api = Api::namespaced(client.clone(), "default");
        World { sandbox, client, api }
    }

    pub fn sample(&self, name: &str) -> EcsDefenderDeployment {
        let mut edd = ecs_defender_operator::fixtures::sample(name);
        edd.metadata.uid = None;
        edd.metadata.generation = None;
        edd.spec.defender.console.url = self.sandbox.console().url();
        edd.spec.aws =
            Some(AwsSpec { credentials_secret_ref: Some(SecretRef { name: "aws".into() }), ..Default::default() });
        edd
    }

    pub fn count(&self, key: &str) -> u64 {
        self.sandbox.gate().counts().get(key).copied().unwrap_or(0)
    }

    pub async fn ready(&self, name: &str) -> bool {
        let Ok(edd) = self.api.get(name).await else { return false };
        edd.status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    pub async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "default");
        leases.get(LEASE).await.ok()?.spec?.holder_identity
    }
}
