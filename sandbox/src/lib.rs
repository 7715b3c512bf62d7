//! The local test world the operator's tests, benchmark and demo run against (DESIGN.md section 5).
//!
//! Everything listens on 127.0.0.1 only. Each part is a handle that stops its processes or tasks
//! when dropped, also when a test panics.
//!
//! - [`control_plane`]: real `etcd` + `kube-apiserver` processes with token auth and RBAC.
//! - [`moto`]: the moto server (AWS wire formats and state).
//! - [`gate`]: our proxy in front of moto that adds the AWS behaviour moto lacks, logs calls, injects faults.
//! - [`ecs_world`]: the ECS agent, the DAEMON scheduler and the Defenders, played in-process.
//! - [`console`]: the Prisma Cloud Compute Console simulator.
//! - [`seed`]: clusters made "by hand" before the operator is installed, straight in moto.
//! - [`world`]: all of the above started together ([`world::Sandbox`]), as tests and `sandbox up` use it.
//! - [`bench`]: `sandbox bench` (`make bench`): an operator binary measured against it.

pub mod bench;
pub mod console;
pub mod control_plane;
pub mod defender;
pub mod ecs_world;
pub mod gate;
pub mod moto;
pub mod pki;
pub mod ports;
pub mod process;
pub mod seed;
pub mod tools;
pub mod world;

/// Installs the process-wide rustls crypto provider (aws-lc-rs, the one the AWS SDK uses) once.
/// Every entry point that may open a TLS connection calls this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
