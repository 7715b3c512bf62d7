//! The whole test world started together, as tests and `sandbox up` use it.

use std::collections::BTreeMap;

use anyhow::Result;
use tempfile::TempDir;

use crate::{control_plane::ControlPlane, moto::{self, Moto}};

pub const REGION: &str = "us-east-1";

/// What to start. Tests that need only AWS or only Kubernetes can skip the rest.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub kubernetes: bool,
    pub aws: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self { kubernetes: true, aws: true }
    }
}

/// A running test world; everything stops when it drops.
pub struct Sandbox {
    pub control_plane: Option<ControlPlane>,
    pub moto: Option<Moto>,
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
        Ok(Sandbox { control_plane: control_plane?, moto: moto?, dir })
    }

    pub fn control_plane(&self) -> &ControlPlane {
        self.control_plane.as_ref().expect("sandbox started without Kubernetes")
    }

    pub async fn kube_client(&self) -> Result<kube::Client> {
        self.control_plane().client().await
    }

    /// The AWS endpoint the operator and tests use.
    pub fn aws_endpoint(&self) -> &str {
        self.moto.as_ref().expect("sandbox started without AWS").url()
    }

    /// An AWS SDK config pointed at the sandbox.
    pub async fn aws_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(self.aws_endpoint())
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

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything a person or tool needs to use this world, as environment variables.
    pub fn env(&self) -> BTreeMap<&'static str, String> {
        let mut env = BTreeMap::new();
        if let Some(cp) = &self.control_plane {
            env.insert("KUBECONFIG", cp.kubeconfig().display().to_string());
        }
        if self.moto.is_some() {
            env.insert("AWS_ENDPOINT_URL", self.aws_endpoint().to_string());
            env.insert("AWS_REGION", REGION.to_string());
            env.insert("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY_ID.to_string());
            env.insert("AWS_SECRET_ACCESS_KEY", moto::SECRET_ACCESS_KEY.to_string());
        }
        env
    }
}
