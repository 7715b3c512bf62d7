//! ecs-defender-operator: Prisma Cloud Defenders on AWS ECS, driven by `EcsDefenderDeployment`
//! resources.
//!
//! Where things live:
//! - [`crd`]: the resource (spec, status, condition types).
//! - [`validate`] (pure): the spec checked and completed, before any AWS call.
//! - [`reconcile`]: the pipeline observe (I/O) -> plan (pure) -> apply (I/O) -> status (pure), and teardown.
//! - [`aws`], [`prisma`]: the AWS calls and the Prisma Cloud Compute Console client.
//! - [`controller`]: the kube-rs controller, finalizer, requeue and backoff; [`context`]: what
//!   every reconcile shares.
//! - [`leader`]: leader election on a Lease; only the holder runs the controller.
//! - [`metrics`], [`http`]: `/metrics`, `/healthz`, `/readyz`; [`telemetry`]: the log filter.

pub mod access;
pub mod aws;
pub mod budget;
pub mod context;
pub mod controller;
pub mod crd;
pub mod error;
pub mod fixtures;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod prisma;
pub mod reconcile;
pub mod telemetry;
pub mod validate;

/// Installs the process-wide rustls crypto provider (aws-lc-rs, the AWS SDK's) once; kube,
/// reqwest and the SDK then share it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
