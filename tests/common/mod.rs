//! Helpers shared by the end-to-end tests: the CRD on a real apiserver, polling with deadlines.
#![allow(dead_code)]

use std::time::Duration;

pub mod inventory;
pub mod process;

use ecs_defender_operator::crd::EcsDefenderDeployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, CustomResourceExt,
    api::{Patch, PatchParams},
};

/// Applies the committed CRD by server-side apply and waits until it is Established.
pub async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/ecsdefenderdeployments.ecsdefender.io.yaml"
    ))?)?;
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

use std::sync::{Arc, atomic::AtomicBool};

use ecs_defender_operator::{controller, metrics::Metrics};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use sandbox::{
    console::{ConsoleConfig, ConsoleVariant},
    ecs_world::Rules,
    world::{Sandbox, SandboxOptions},
};

/// Runs the whole suite against one Console variant: `SANDBOX_CONSOLE_VARIANT=hostname-only cargo
/// test --test operator_e2e` (names in `sandbox::console::ConsoleVariant`). Tests that choose a
/// variant themselves keep theirs.
pub const CONSOLE_VARIANT_ENV: &str = "SANDBOX_CONSOLE_VARIANT";
/// `SANDBOX_LENIENT=1` switches the ECS world's strict rules off, to tell whether a failure comes
/// from one of them (the suite runs with them on; never set this in CI).
pub const LENIENT_ENV: &str = "SANDBOX_LENIENT";

/// The Console variant the environment asks for, if any.
pub fn variant_from_env() -> Option<ConsoleVariant> {
    let v = std::env::var(CONSOLE_VARIANT_ENV).ok().filter(|v| !v.is_empty())?;
    Some(v.parse().unwrap_or_else(|e| panic!("{CONSOLE_VARIANT_ENV}: {e}")))
}

/// Sandbox options for a test against Console `variant`, with quick variant timings (a Defender's
/// cluster shows after 3 s; an upgrading Console upgrades 5 s after its first task definition).
pub fn variant_options(variant: ConsoleVariant) -> SandboxOptions {
    SandboxOptions {
        console: Some(ConsoleConfig { variant, upgrade_after: Duration::from_secs(5), ..Default::default() }),
        ..Default::default()
    }
}

/// The sandbox, the CRD, the Secrets a sample needs, and the operator running in-process.
pub struct Harness {
    pub sandbox: Sandbox,
    pub client: Client,
    pub api: Api<EcsDefenderDeployment>,
    pub metrics: Arc<Metrics>,
    pub config: controller::Config,
    /// `/metrics`, `/healthz`, `/readyz` of the running operator.
    pub http_url: String,
    ready: Arc<AtomicBool>,
    operator: std::sync::Mutex<tokio::task::JoinHandle<anyhow::Result<()>>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    probe: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.operator.lock().unwrap().abort();
        self.server.abort();
        self.probe.abort();
    }
}

impl Harness {
    pub async fn start() -> anyhow::Result<Harness> {
        Self::start_with(SandboxOptions::default()).await
    }

    pub async fn start_with(opts: SandboxOptions) -> anyhow::Result<Harness> {
        Self::start_full(opts, |_| {}).await
    }

    /// The harness with the Console playing `variant` ([`variant_options`]).
    pub async fn start_variant(variant: ConsoleVariant) -> anyhow::Result<Harness> {
        Self::start_with(variant_options(variant)).await
    }

    /// Like `start`, with the operator's settings adjusted by `tune`.
    pub async fn start_full(
        opts: SandboxOptions,
        tune: impl FnOnce(&mut controller::Config),
    ) -> anyhow::Result<Harness> {
        ecs_defender_operator::install_crypto_provider();
        // RUST_LOG=... shows the operator's log with the test's output (for a failing test).
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let mut opts = opts;
        // The strict rules are on unless the test or the environment says otherwise (issue 9).
        if std::env::var(LENIENT_ENV).is_ok_and(|v| v == "1") {
            opts.rules = Rules::lenient();
        }
        if let (Some(variant), Some(console)) = (variant_from_env(), opts.console.as_mut())
            && console.variant == ConsoleVariant::AsDocumented
        {
            console.variant = variant;
        }
        let sandbox = Sandbox::start(opts).await?;
        let client = sandbox.kube_client().await?;
        install_crd(&client).await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let console = sandbox.console();
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
                    ("AWS_ACCESS_KEY_ID", sandbox::moto::ACCESS_KEY_ID.to_string()),
                    ("AWS_SECRET_ACCESS_KEY", sandbox::moto::SECRET_ACCESS_KEY.to_string()),
                ],
            ),
        ] {
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "stringData": data.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            }))?;
            secrets.create(&PostParams::default(), &secret).await?;
        }
        let metrics = Arc::new(Metrics::default());
        let mut config = controller::Config {
            converging_requeue: Duration::from_millis(500),
            steady_requeue: Duration::from_secs(300),
            stalled_requeue: Duration::from_secs(3),
            max_backoff: Duration::from_secs(3),
            aws_endpoint_url: Some(sandbox.aws_endpoint()),
            // The simulator's Console is plain http unless a test asks for TLS.
            access: ecs_defender_operator::access::AccessRules { allow_insecure_console: true, ..Default::default() },
            ..Default::default()
        };
        tune(&mut config);
        let ready = Arc::new(AtomicBool::new(false));
        let operator = tokio::spawn(controller::run(client.clone(), config.clone(), metrics.clone(), ready.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(ecs_defender_operator::http::serve(
            listener,
            metrics.clone(),
            ready.clone(),
            std::future::pending(),
        ));
        let probe = tokio::spawn(ecs_defender_operator::http::probe_apiserver(
            client.clone(),
            metrics.clone(),
            Duration::from_secs(1),
        ));
        let api = Api::namespaced(client.clone(), "default");
        Ok(Harness {
            sandbox,
            client,
            api,
            metrics,
            config,
            http_url,
            ready,
            operator: std::sync::Mutex::new(operator),
            server,
            probe,
        })
    }

    /// Kills the operator (as a crash would, between any two of its calls) and starts a fresh one
    /// with empty caches.
    pub fn restart_operator(&self) {
        let mut op = self.operator.lock().unwrap();
        op.abort();
        *op = tokio::spawn(controller::run(
            self.client.clone(),
            self.config.clone(),
            self.metrics.clone(),
            self.ready.clone(),
        ));
    }

    /// Creates (or replaces) a Secret in `default`.
    pub async fn put_secret(&self, name: &str, data: &[(&str, &str)]) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), "default");
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "stringData": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        }))?;
        secrets
            .patch(name, &kube::api::PatchParams::apply("e2e-tests").force(), &kube::api::Patch::Apply(&secret))
            .await?;
        Ok(())
    }

    /// The condition `kind` of `name`, if set.
    pub async fn condition(
        &self,
        name: &str,
        kind: &str,
    ) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        self.api.get(name).await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == kind)
    }

    /// A metric's value from `/metrics` text (`name{labels}` exactly as rendered), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// `fixtures::sample(name)` pointed at this sandbox's Console, with the AWS credentials Secret.
    pub fn sample(&self, name: &str) -> EcsDefenderDeployment {
        let mut edd = ecs_defender_operator::fixtures::sample(name);
        edd.metadata.uid = None;
        edd.metadata.generation = None;
        edd.spec.defender.console.url = self.sandbox.console().url();
        edd.spec.aws = Some(ecs_defender_operator::crd::AwsSpec {
            credentials_secret_ref: Some(ecs_defender_operator::crd::SecretRef { name: "aws".into() }),
            ..Default::default()
        });
        edd
    }

    pub async fn create(&self, edd: &EcsDefenderDeployment) -> anyhow::Result<EcsDefenderDeployment> {
        Ok(self.api.create(&PostParams::default(), edd).await?)
    }

    /// Waits until condition `kind` has `status`; returns the resource.
    pub async fn wait_condition(
        &self,
        name: &str,
        kind: &str,
        status: &str,
        timeout: Duration,
    ) -> EcsDefenderDeployment {
        let found = eventually(timeout, || async {
            let edd = self.api.get(name).await.ok()?;
            let ok = edd.status.as_ref()?.conditions.iter().any(|c| c.type_ == kind && c.status == status);
            ok.then_some(edd)
        })
        .await;
        match found {
            Some(edd) => edd,
            None => {
                let now = self.api.get(name).await.ok();
                panic!("{name}: {kind} != {status} after {timeout:?}; status: {:#?}", now.and_then(|e| e.status))
            }
        }
    }

    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        let gone =
            eventually(timeout, || async { matches!(self.api.get_opt(name).await, Ok(None)).then_some(()) }).await;
        if gone.is_none() {
            let now = self.api.get(name).await.ok();
            panic!("{name} still exists after {timeout:?}; status: {:#?}", now.and_then(|e| e.status));
        }
    }

    pub async fn aws(&self) -> sandbox::world::AwsClientsForTests {
        sandbox::world::AwsClientsForTests::new(&self.sandbox.aws_config().await)
    }
}

/// `edd` with exactly one worker instance (fleets of many resources stay small).
pub fn one_instance(mut edd: EcsDefenderDeployment) -> EcsDefenderDeployment {
    let w = edd.spec.workers.as_mut().expect("a spec with workers");
    w.auto_scaling_group.min_size = 1;
    w.auto_scaling_group.max_size = 1;
    w.auto_scaling_group.desired_capacity = 1;
    edd
}

/// Whether `edd`'s status says Ready=True.
pub fn is_ready(edd: &EcsDefenderDeployment) -> bool {
    edd.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
