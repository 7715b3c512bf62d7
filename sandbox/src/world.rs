//! The whole test world started together, as tests and `sandbox up` use it: the control plane,
//! moto behind the AWS gate, the ECS world playing the instances in every region asked for, and one
//! or more Console simulators whose Defenders the ECS world connects.
//!
//! The ECS world's AWS rules ([`Rules`]) are all on by default: tests run against a world as strict
//! as AWS unless they say otherwise.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Result;
use tempfile::TempDir;

use crate::{
    console::{ConsoleConfig, ConsoleSim},
    control_plane::ControlPlane,
    ecs_world::{EcsWorld, EcsWorldConfig, Rules},
    gate::{Gate, GateConfig},
    moto::{self, Moto},
};

/// The default region (the first of [`SandboxOptions::regions`] unless set).
pub const REGION: &str = "us-east-1";

/// What to start. Tests that need only AWS or only Kubernetes can skip the rest.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub kubernetes: bool,
    /// moto, the gate and the ECS world.
    pub aws: bool,
    /// The Console simulator (needs `aws` for its Defenders to connect).
    pub console: Option<ConsoleConfig>,
    /// How long an instance takes to boot and register.
    pub boot_delay: Duration,
    /// More Console simulators besides `console` (the env file numbers them from 2).
    pub extra_consoles: Vec<ConsoleConfig>,
    /// The regions the ECS world plays (instances elsewhere never register); the first is
    /// `AWS_REGION` in the env file.
    pub regions: Vec<String>,
    /// The AWS rules the ECS world plays; all on by default.
    pub rules: Rules,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            kubernetes: true,
            aws: true,
            console: Some(ConsoleConfig::default()),
            boot_delay: Duration::from_secs(1),
            extra_consoles: Vec::new(),
            regions: vec![REGION.to_string()],
            rules: Rules::default(),
        }
    }
}

/// A running test world; everything stops when it drops.
pub struct Sandbox {
    // Drop order: the loops that call others first, the processes last.
    pub ecs_world: Option<EcsWorld>,
    pub console: Option<ConsoleSim>,
    /// Every Console simulator, `console` first.
    pub consoles: Vec<ConsoleSim>,
    regions: Vec<String>,
    pub gate: Option<Gate>,
    pub moto: Option<Moto>,
    pub control_plane: Option<ControlPlane>,
    dir: TempDir,
}

impl Sandbox {
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox> {
        crate::install_crypto_provider();
        let dir = tempfile::Builder::new().prefix("edo-sandbox-").tempdir()?;
        // Start the slow parts concurrently.
        let (control_plane, moto) = tokio::join!(
            async { if opts.kubernetes { ControlPlane::start().await.map(Some) } else { Ok(None) } },
            async { if opts.aws { Moto::start(dir.path()).await.map(Some) } else { Ok(None) } },
        );
        let (control_plane, moto) = (control_plane?, moto?);
        let mut consoles = Vec::new();
        for cfg in opts.console.iter().chain(&opts.extra_consoles) {
            consoles.push(ConsoleSim::start(cfg.clone()).await?);
        }
        let console = opts.console.as_ref().map(|_| consoles[0].clone());
        let regions = if opts.regions.is_empty() { vec![REGION.to_string()] } else { opts.regions.clone() };
        let (gate, ecs_world) = match &moto {
            Some(m) => {
                let gate = Gate::start(GateConfig::new(m.url())).await?;
                let mut cfg = EcsWorldConfig::new(m.url());
                cfg.boot_delay = opts.boot_delay;
                cfg.regions = regions.clone();
                cfg.rules = opts.rules;
                for c in &consoles {
                    cfg.registries.push(Arc::new(c.clone()));
                }
                let world = EcsWorld::start(cfg).await?;
                gate.set_service_events(world.service_event_source());
                gate.set_change_listener(world.change_listener());
                (Some(gate), Some(world))
            }
            None => (None, None),
        };
        Ok(Sandbox { ecs_world, console, consoles, regions, gate, moto, control_plane, dir })
    }

    /// The regions the ECS world plays, the default first.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    pub fn ecs_world(&self) -> &EcsWorld {
        self.ecs_world.as_ref().expect("sandbox started without AWS")
    }

    pub fn control_plane(&self) -> &ControlPlane {
        self.control_plane.as_ref().expect("sandbox started without Kubernetes")
    }

    pub async fn kube_client(&self) -> Result<kube::Client> {
        self.control_plane().client().await
    }

    pub fn gate(&self) -> &Gate {
        self.gate.as_ref().expect("sandbox started without AWS")
    }

    pub fn console(&self) -> &ConsoleSim {
        self.console.as_ref().expect("sandbox started without a Console")
    }

    /// The AWS endpoint the operator and tests use: the gate.
    pub fn aws_endpoint(&self) -> String {
        self.gate().url()
    }

    /// An AWS SDK config pointed at the gate.
    pub async fn aws_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.aws_endpoint()).await
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything a person or tool needs to use this world, as environment variables. The first
    /// Console is `PRISMA_CONSOLE_*`, the next `PRISMA_CONSOLE_2_*`, and so on.
    pub fn env(&self) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        if let Some(cp) = &self.control_plane {
            env.insert("KUBECONFIG".into(), cp.kubeconfig().display().to_string());
        }
        if let Some(gate) = &self.gate {
            env.insert("AWS_ENDPOINT_URL".into(), gate.url());
            env.insert("AWS_REGION".into(), self.regions[0].clone());
            env.insert("AWS_ACCESS_KEY_ID".into(), moto::ACCESS_KEY_ID.to_string());
            env.insert("AWS_SECRET_ACCESS_KEY".into(), moto::SECRET_ACCESS_KEY.to_string());
            env.insert("SANDBOX_GATE_URL".into(), gate.control_url());
            env.insert("SANDBOX_REGIONS".into(), self.regions.join(","));
        }
        if let Some(w) = &self.ecs_world {
            env.insert("SANDBOX_ECS_WORLD_URL".into(), w.control_url());
        }
        for (i, c) in self.consoles.iter().enumerate() {
            let prefix = if i == 0 { "PRISMA_CONSOLE".to_string() } else { format!("PRISMA_CONSOLE_{}", i + 1) };
            env.insert(format!("{prefix}_URL"), c.url());
            env.insert(format!("{prefix}_USERNAME"), c.username().to_string());
            env.insert(format!("{prefix}_PASSWORD"), c.password().to_string());
            env.insert(format!("{prefix}_CONTROL_URL"), c.control_url());
            if let Some((id, secret)) = c.access_keys().first() {
                env.insert(format!("{prefix}_ACCESS_KEY_ID"), id.clone());
                env.insert(format!("{prefix}_SECRET_KEY"), secret.clone());
            }
            if let Some(pem) = c.ca_pem() {
                let name = if i == 0 { "console-ca.pem".to_string() } else { format!("console-{}-ca.pem", i + 1) };
                let path = self.dir.path().join(name);
                std::fs::write(&path, pem)?;
                env.insert(format!("{prefix}_CA_FILE"), path.display().to_string());
            }
        }
        Ok(env)
    }
}

/// An AWS SDK config for `endpoint` with the sandbox's credentials, in the default region.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    sdk_config_in(endpoint, REGION).await
}

/// An AWS SDK config for `endpoint` with the sandbox's credentials, in `region`.
pub async fn sdk_config_in(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            moto::ACCESS_KEY_ID,
            moto::SECRET_ACCESS_KEY,
            None,
            None,
            "sandbox",
        ))
        .load()
        .await
}

/// SDK clients for tests that look at what is in AWS.
pub struct AwsClientsForTests {
    pub ecs: aws_sdk_ecs::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    pub iam: aws_sdk_iam::Client,
}

impl AwsClientsForTests {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            ecs: aws_sdk_ecs::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            secretsmanager: aws_sdk_secretsmanager::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
        }
    }
}
