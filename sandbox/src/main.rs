//! `sandbox up`: starts the test world for a person (or another tool) and keeps it running until
//! Ctrl-C, printing (and with `--env-file FILE` writing) what is needed to use it.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sandbox::world::{Sandbox, SandboxOptions};

mod show;

#[derive(Parser)]
#[command(name = "sandbox", about = "The ecs-defender-operator local test world")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start etcd, kube-apiserver, moto and the simulators; keep them running until Ctrl-C.
    Up {
        /// Also write the environment as shell `KEY=value` lines to this file.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// Print what is in the sandbox's AWS and Console (reads the variables `up` printed).
    Show,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let env_file = match Cli::parse().command {
        Cmd::Up { env_file } => env_file,
        Cmd::Show => return show::show().await,
    };
    eprintln!("starting the sandbox (etcd, kube-apiserver, moto, ...)");
    let sandbox = Sandbox::start(SandboxOptions::default()).await?;
    let lines: String = sandbox.env()?.iter().map(|(k, v)| format!("{k}={}\n", shell_quote(v))).collect();
    if let Some(path) = &env_file {
        // Written whole, then renamed, so a reader never sees half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &lines)?;
        std::fs::rename(&tmp, path)?;
    }
    println!("{lines}");
    eprintln!("sandbox is up; `source` the lines above (or --env-file) to use it. Ctrl-C stops everything.");
    // Ctrl-C or SIGTERM (what `make demo` and process managers send).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    eprintln!("stopping the sandbox");
    if let Some(path) = &env_file {
        let _ = std::fs::remove_file(path);
    }
    drop(sandbox);
    Ok(())
}

fn shell_quote(v: &str) -> String {
    if v.chars().all(|c| c.is_ascii_alphanumeric() || "/:._-=@,+".contains(c)) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}
