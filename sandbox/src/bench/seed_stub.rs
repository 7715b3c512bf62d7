//! TEMPORARY: stands in for `Sandbox::seed_adopted_clusters` until branch helper-sandbox (which
//! writes it) is merged; the adopt case fails with this message meanwhile.

use anyhow::{Result, bail};

use crate::world::Sandbox;

impl Sandbox {
    pub async fn seed_adopted_clusters(&self, _prefix: &str, _count: usize) -> Result<Vec<String>> {
        bail!("Sandbox::seed_adopted_clusters is not merged yet (branch helper-sandbox)")
    }
}
