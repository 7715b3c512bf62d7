//! The whole test world started together, as tests and `sandbox up` use it: the control plane,
//! moto behind the AWS gate, the ECS world playing the instances, and a Console simulator whose
//! Defenders the ECS world connects.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Result;
use tempfile::TempDir;

use crate::{
    console::{ConsoleConfig, ConsoleSim},
    control_plane::ControlPlane,
    ecs_world::{EcsWorld, EcsWorldConfig},
    gate::{Gate, GateConfig},
    moto::{self, Moto},
};

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
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            kubernetes: true,
            aws: true,
            console: Some(ConsoleConfig::default()),
            boot_delay: Duration::from_secs(1),
        }
    }
}

/// A running test world; everything stops when it drops.
pub struct Sandbox {
    // Drop order: the loops that call others first, the processes last.
    pub ecs_world: Option<EcsWorld>,
    pub console: Option<ConsoleSim>,
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
        let console = match &opts.console {
            Some(cfg) => Some(ConsoleSim::start(cfg.clone()).await?),
            None => None,
        };
        let (gate, ecs_world) = match &moto {
            Some(m) => {
                let gate = Gate::start(GateConfig::new(m.url())).await?;
                let mut cfg = EcsWorldConfig::new(m.url());
                cfg.boot_delay = opts.boot_delay;
                if let Some(c) = &console {
                    cfg.registries.push(Arc::new(c.clone()));
                }
                (Some(gate), Some(EcsWorld::start(cfg).await?))
            }
            None => (None, None),
        };
        Ok(Sandbox { ecs_world, console, gate, moto, control_plane, dir })
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

    /// Everything a person or tool needs to use this world, as environment variables.
    pub fn env(&self) -> Result<BTreeMap<&'static str, String>> {
        let mut env = BTreeMap::new();
        if let Some(cp) = &self.control_plane {
            env.insert("KUBECONFIG", cp.kubeconfig().display().to_string());
        }
        if let Some(gate) = &self.gate {
            env.insert("AWS_ENDPOINT_URL", gate.url());
            env.insert("AWS_REGION", REGION.to_string());
            env.insert("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY_ID.to_string());
            env.insert("AWS_SECRET_ACCESS_KEY", moto::SECRET_ACCESS_KEY.to_string());
            env.insert("SANDBOX_GATE_URL", gate.control_url());
        }
        if let Some(c) = &self.console {
            env.insert("PRISMA_CONSOLE_URL", c.url());
            env.insert("PRISMA_CONSOLE_USERNAME", c.username().to_string());
            env.insert("PRISMA_CONSOLE_PASSWORD", c.password().to_string());
            if let Some(pem) = c.ca_pem() {
                let path = self.dir.path().join("console-ca.pem");
                std::fs::write(&path, pem)?;
                env.insert("PRISMA_CONSOLE_CA_FILE", path.display().to_string());
            }
        }
        Ok(env)
    }
}

/// An AWS SDK config for `endpoint` with the sandbox's credentials.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
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
}

impl AwsClientsForTests {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            ecs: aws_sdk_ecs::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
        }
    }
}
