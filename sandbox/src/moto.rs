//! The moto server: AWS wire formats and state for EC2, Auto Scaling, ECS, SSM and IAM.
//! One process per handle, on a free loopback port, stopped when the handle drops.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use crate::{ports::free_port, process::ChildProcess, tools::Tools};

/// Any key works on moto; these are what the sandbox hands out.
pub const ACCESS_KEY_ID: &str = "AKIASANDBOXTESTING00";
pub const SECRET_ACCESS_KEY: &str = "sandbox-secret-access-key-not-a-secret";
/// moto's default account.
pub const ACCOUNT_ID: &str = "123456789012";

pub struct Moto {
    url: String,
    process: ChildProcess,
}

impl Moto {
    /// Starts moto, logging to `dir/moto.log`, and waits until it answers HTTP.
    pub async fn start(dir: &Path) -> Result<Moto> {
        let tools = Tools::locate()?;
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new(&tools.moto_server);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            let mut process = ChildProcess::spawn("moto_server", cmd, &dir.join("moto.log"))?;
            let url = format!("http://127.0.0.1:{port}");
            match wait_http(&url, &mut process).await {
                Ok(()) => return Ok(Moto { url, process }),
                Err(e) => last_err = Some(e), // most likely the port was taken meanwhile
            }
        }
        Err(last_err.unwrap()).context("moto did not start")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Clears all of moto's state.
    pub async fn reset(&self) -> Result<()> {
        let resp = reqwest::Client::new().post(format!("{}/moto-api/reset", self.url)).send().await?;
        if !resp.status().is_success() {
            bail!("moto reset answered {}", resp.status());
        }
        Ok(())
    }
}

async fn wait_http(url: &str, process: &mut ChildProcess) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        process.check_alive()?;
        if client.get(format!("{url}/moto-api/")).send().await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("moto at {url} did not answer within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
