//! Where the test world's external binaries are. `hack/install-test-tools.sh` builds and caches them
//! (and owns their versions); this asks it where they are. Explicit environment variables win:
//! `KUBEBUILDER_ASSETS` (directory with `kube-apiserver`, `etcd`, `kubectl`), `MOTO_SERVER`.

use std::{collections::HashMap, path::PathBuf, process::Command, sync::OnceLock};

use anyhow::{Context, Result, bail};

#[derive(Clone, Debug)]
pub struct Tools {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    pub moto_server: PathBuf,
}

/// The repository's `hack/install-test-tools.sh`.
pub fn install_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hack/install-test-tools.sh")
}

impl Tools {
    /// Locates the tools (cached after the first call); fails with a hint when one is missing.
    pub fn locate() -> Result<Tools> {
        static TOOLS: OnceLock<std::result::Result<Tools, String>> = OnceLock::new();
        TOOLS.get_or_init(|| Self::locate_uncached().map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
    }

    fn locate_uncached() -> Result<Tools> {
        let out = Command::new("bash")
            .arg(install_script())
            .arg("--print-env")
            .output()
            .context("running hack/install-test-tools.sh --print-env")?;
        if !out.status.success() {
            bail!("hack/install-test-tools.sh --print-env failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let vars: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let var = |k: &str| -> PathBuf {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| vars.get(k).cloned())
                .map(PathBuf::from)
                .unwrap_or_default()
        };
        let assets = var("KUBEBUILDER_ASSETS");
        let tools = Tools {
            kube_apiserver: assets.join("kube-apiserver"),
            etcd: assets.join("etcd"),
            kubectl: var("KUBECTL"),
            helm: var("HELM"),
            moto_server: var("MOTO_SERVER"),
        };
        for (name, path) in
            [("kube-apiserver", &tools.kube_apiserver), ("etcd", &tools.etcd), ("moto_server", &tools.moto_server)]
        {
            if !path.is_file() {
                bail!("{name} not found at {}; run `make tools` (hack/install-test-tools.sh) first", path.display());
            }
        }
        Ok(tools)
    }
}
