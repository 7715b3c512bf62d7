//! (IO) The operator under test as a child process: started with its default timings (only what
//! the sandbox needs is set), its `/metrics` read over HTTP, its CPU time and peak RSS read from
//! `/proc`, its log written to a file.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::world::Sandbox;

pub struct OperatorProcess {
    child: tokio::process::Child,
    pid: u32,
    /// `http://127.0.0.1:PORT` of `/metrics`.
    url: String,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl OperatorProcess {
    /// Starts `binary` against `sandbox`, with `extra_env` on top of what the sandbox needs, and
    /// waits until it serves `/metrics`.
    pub async fn start(binary: &Path, sandbox: &Sandbox, extra_env: &[(String, String)], log: PathBuf) -> Result<Self> {
        let mut cmd = tokio::process::Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", sandbox.control_plane().kubeconfig())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("OPERATOR_AWS_ENDPOINT_URL", sandbox.aws_endpoint())
            .env("ALLOW_INSECURE_CONSOLE", "true")
            .env("LEADER_ELECT", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; the operator must not outlive a killed bench.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting the operator {}", binary.display()))?;
        let pid = child.id().context("the operator exited at once")?;
        if let Some(dir) = log.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::File::create(&log).await.with_context(|| format!("creating {}", log.display()))?;
        let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for stream in [
            Box::new(child.stdout.take().context("stdout")?) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(child.stderr.take().context("stderr")?),
        ] {
            let tx = line_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(line_tx);
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            let mut file = tokio::io::BufWriter::new(file);
            let mut addr_tx = Some(addr_tx);
            while let Some(line) = line_rx.recv().await {
                // main.rs logs the bound address of /metrics.
                if addr_tx.is_some()
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(addr) = v["fields"]["addr"].as_str()
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
                let _ = file.write_all(line.as_bytes()).await;
                let _ = file.write_all(b"\n").await;
                if line_rx.is_empty() {
                    let _ = file.flush().await;
                }
            }
            let _ = file.flush().await;
        });
        let addr = match tokio::time::timeout(Duration::from_secs(60), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => bail!("the operator did not start serving /metrics within 60 s; see {}", log.display()),
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(OperatorProcess { child, pid, url: format!("http://{addr}"), log, http })
    }

    /// The sum of every series of the metric whose name ends with `suffix` (`reconciles_total`),
    /// so a renamed prefix still matches.
    pub async fn metric(&self, suffix: &str) -> Result<f64> {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await?.error_for_status()?.text().await?;
        Ok(sum_metric(&text, suffix))
    }

    /// User + system CPU seconds so far (`/proc/PID/stat`).
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds_of(self.pid)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Peak resident set size in bytes (`VmHWM` of `/proc/PID/status`).
    pub fn peak_rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        parse_vm_hwm(&status).context("no VmHWM in /proc/PID/status")
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and waits until it is gone.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// User + system CPU seconds a process used so far (`/proc/PID/stat`).
pub fn cpu_seconds_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_seconds(&stat, clock_ticks()).context("parsing /proc/PID/stat")
}

/// CPU seconds so far of each process of a case: the operator, moto, kube-apiserver, etcd, and
/// this process (the gate, the ECS world, the Console simulator and the bench itself; with the
/// `waiting` case alongside, its in-process parts too).
pub fn cpu_by_process(sandbox: &Sandbox, operator: &OperatorProcess) -> BTreeMap<String, f64> {
    let mut pids = vec![("operator", operator.pid), ("sandbox process", std::process::id())];
    if let Some(m) = &sandbox.moto {
        pids.push(("moto", m.pid()));
    }
    if let Some(cp) = &sandbox.control_plane {
        pids.extend(cp.pids());
    }
    pids.into_iter().filter_map(|(name, pid)| Some((name.to_string(), cpu_seconds_of(pid).ok()?))).collect()
}

/// `after - before`, per process.
pub fn cpu_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).collect()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime (fields 14 and 15) in seconds; the command name (field 2) may hold spaces, so
/// fields are counted after its closing parenthesis.
fn parse_cpu_seconds(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")" the fields start at 3 (state), so utime (14) is index 11.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn sum_metric(text: &str, suffix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let bare = name.split('{').next()?;
            bare.ends_with(suffix).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_and_metrics_parse() {
        let stat = "1234 (ecs defender) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_cpu_seconds(stat, 100.0), Some(3.0));
        assert_eq!(parse_vm_hwm("Name:\tx\nVmHWM:\t  51200 kB\nVmRSS:\t1 kB\n"), Some(51200 * 1024));
        let text = "# HELP x\necs_defender_operator_reconciles_total 7\n\
                    ecs_defender_operator_reconcile_failures_total{category=\"A\"} 2\n\
                    other_reconciles_total{a=\"b\"} 1\n";
        assert_eq!(sum_metric(text, "_reconciles_total"), 8.0);
    }
}
