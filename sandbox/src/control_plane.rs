//! A real Kubernetes control plane as local processes: `etcd` and `kube-apiserver` with token auth
//! and RBAC on, on free loopback ports, with an admin kubeconfig written to a temp dir.
//! Both processes stop when the handle drops.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use base64::Engine;
use tempfile::TempDir;

use crate::{pki, ports::free_port, process::ChildProcess, tools::Tools};

pub struct ControlPlane {
    // Field order is drop order: the apiserver goes before etcd, the directory last.
    /// `None` while stopped (a test of the operator across an API server restart).
    apiserver: std::sync::Mutex<Option<ChildProcess>>,
    apiserver_bin: PathBuf,
    etcd_url: String,
    port: u16,
    etcd: ChildProcess,
    url: String,
    admin_token: String,
    ca_pem: String,
    kubeconfig: PathBuf,
    dir: TempDir,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the apiserver is ready.
    pub async fn start() -> Result<ControlPlane> {
        let tools = Tools::locate()?;
        let dir = tempfile::Builder::new().prefix("edo-control-plane-").tempdir()?;
        let etcd = start_etcd(&tools, dir.path()).await?;

        let admin_token = random_token();
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{admin_token},sandbox-admin,sandbox-admin,\"system:masters\"\n"),
        )?;
        let sa = rcgen::KeyPair::generate()?;
        std::fs::write(dir.path().join("sa.key"), sa.serialize_pem())?;
        std::fs::write(dir.path().join("sa.pub"), sa.public_key_pem())?;
        let tls = pki::serving_cert("sandbox-apiserver-ca", &["127.0.0.1".to_string(), "localhost".to_string()])?;
        std::fs::write(dir.path().join("apiserver.crt"), &tls.cert_pem)?;
        std::fs::write(dir.path().join("apiserver.key"), &tls.key_pem)?;

        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let d = dir.path();
            let cmd = apiserver_command(&tools.kube_apiserver, &etcd.1, port, d);
            let mut apiserver = ChildProcess::spawn("kube-apiserver", cmd, &d.join("kube-apiserver.log"))?;
            let url = format!("https://127.0.0.1:{port}");
            match wait_ready(&url, &admin_token, &tls.ca_pem, &mut apiserver).await {
                Ok(()) => {
                    let kubeconfig = d.join("kubeconfig");
                    std::fs::write(&kubeconfig, kubeconfig_yaml(&url, &tls.ca_pem, &admin_token))?;
                    return Ok(ControlPlane {
                        apiserver: std::sync::Mutex::new(Some(apiserver)),
                        apiserver_bin: tools.kube_apiserver.clone(),
                        etcd_url: etcd.1,
                        port,
                        etcd: etcd.0,
                        url,
                        admin_token,
                        ca_pem: tls.ca_pem,
                        kubeconfig,
                        dir,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap()).context("kube-apiserver did not start")
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Process ids of etcd and (while it runs) kube-apiserver, for the bench's CPU accounting.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        let mut out = vec![("etcd", self.etcd.pid())];
        if let Some(a) = self.apiserver.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            out.push(("kube-apiserver", a.pid()));
        }
        out
    }

    /// Path of an admin (system:masters) kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kube client with admin rights.
    pub async fn client(&self) -> Result<kube::Client> {
        self.client_with_token(&self.admin_token).await
    }

    /// A kube client authenticating with `token` (for example a ServiceAccount token, to test RBAC).
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig_yaml(&self.url, &self.ca_pem, token))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// `true` while both processes run.
    pub fn is_running(&mut self) -> bool {
        let apiserver = self.apiserver.get_mut().unwrap().as_mut().is_some_and(|a| a.check_alive().is_ok());
        self.etcd.check_alive().is_ok() && apiserver
    }

    /// Stops kube-apiserver (etcd keeps the data): clients see connections refused.
    pub fn stop_apiserver(&self) {
        drop(self.apiserver.lock().unwrap().take());
    }

    /// Starts kube-apiserver again on the same port and waits until it serves.
    pub async fn start_apiserver(&self) -> Result<()> {
        let d = self.dir.path();
        let cmd = apiserver_command(&self.apiserver_bin, &self.etcd_url, self.port, d);
        let mut apiserver = ChildProcess::spawn("kube-apiserver", cmd, &d.join("kube-apiserver.log"))?;
        wait_ready(&self.url, &self.admin_token, &self.ca_pem, &mut apiserver).await?;
        *self.apiserver.lock().unwrap() = Some(apiserver);
        Ok(())
    }
}

fn apiserver_command(bin: &Path, etcd_url: &str, port: u16, d: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--etcd-servers={etcd_url}"))
        .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", d.display()))
        .arg(format!("--tls-cert-file={}", d.join("apiserver.crt").display()))
        .arg(format!("--tls-private-key-file={}", d.join("apiserver.key").display()))
        .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!("--service-account-key-file={}", d.join("sa.pub").display()))
        .arg(format!("--service-account-signing-key-file={}", d.join("sa.key").display()))
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        // Each test starts its own etcd, so the etcd prefix never collides.
        .arg("--allow-privileged=true")
        .arg("--v=0");
    cmd
}

async fn start_etcd(tools: &Tools, dir: &Path) -> Result<(ChildProcess, String)> {
    let mut last_err = None;
    for attempt in 0..5 {
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let mut cmd = Command::new(&tools.etcd);
        cmd.arg(format!("--data-dir={}", dir.join(format!("etcd-{attempt}")).display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            // A test world need not survive power loss; fsync dominates etcd's latency otherwise.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let mut etcd = ChildProcess::spawn("etcd", cmd, &dir.join("etcd.log"))?;
        let client_http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let ok = loop {
            if let Err(e) = etcd.check_alive() {
                break Err(e);
            }
            if let Ok(r) = client_http.get(format!("{url}/health")).send().await
                && r.status().is_success()
            {
                break Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                break Err(anyhow::anyhow!("etcd did not become healthy in 30s:\n{}", etcd.log_tail(20)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match ok {
            Ok(()) => return Ok((etcd, url)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap()).context("etcd did not start")
}

async fn wait_ready(url: &str, token: &str, ca_pem: &str, apiserver: &mut ChildProcess) -> Result<()> {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        apiserver.check_alive()?;
        // readyz, and the `default` namespace (created by the apiserver's own bootstrap controller
        // a moment after it serves), which most tests write into.
        let ready = matches!(client.get(format!("{url}/readyz")).bearer_auth(token).send().await, Ok(r) if r.status().is_success())
            && matches!(client.get(format!("{url}/api/v1/namespaces/default")).bearer_auth(token).send().await, Ok(r) if r.status().is_success());
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("kube-apiserver at {url} not ready within 90s; log tail:\n{}", apiserver.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kubeconfig_yaml(url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\n\
         users:\n- name: sandbox-admin\n  user:\n    token: {token}\n\
         contexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox-admin\n    namespace: default\n\
         current-context: sandbox\n"
    )
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}
