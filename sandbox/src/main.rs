//! `sandbox up`: starts the test world for a person (or another tool) and keeps it running until
//! Ctrl-C, printing (and with `--env-file FILE` writing) what is needed to use it.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use rand::{Rng as _, distr::Alphanumeric};
use sandbox::{
    console::{ConsoleConfig, ConsoleVariant},
    ecs_world::Rules,
    world::{Sandbox, SandboxOptions},
};

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
    Up(UpArgs),
    /// Print what is in the sandbox's AWS and Console (reads the variables `up` printed).
    Show,
}

#[derive(Args)]
struct UpArgs {
    /// Also write the environment as shell `KEY=value` lines to this file.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Regions the ECS world plays (comma-separated or repeated); the first is AWS_REGION.
    #[arg(long = "region", value_delimiter = ',', default_value = "us-east-1")]
    regions: Vec<String>,
    /// How many Console simulators to start (PRISMA_CONSOLE_*, PRISMA_CONSOLE_2_*, ...).
    #[arg(long, default_value_t = 1)]
    consoles: usize,
    /// A SaaS-style tenant path prefix for every Console (e.g. /us-2-158256885).
    #[arg(long)]
    console_prefix: Option<String>,
    /// Serve the Consoles over HTTPS with a throwaway CA (PRISMA_CONSOLE_CA_FILE).
    #[arg(long)]
    console_tls: bool,
    /// Give each Console a SaaS access key (PRISMA_CONSOLE_ACCESS_KEY_ID / _SECRET_KEY), which
    /// authenticates like the username and password.
    #[arg(long)]
    console_access_key: bool,
    /// Which plausible Console to play where the API reference is inferred.
    #[arg(long, default_value = "as-documented")]
    console_variant: ConsoleVariant,
    /// Largest page the Defender list returns (small values make clients page).
    #[arg(long)]
    console_page_size: Option<usize>,
    /// Switch off the ECS world's network rule (any instance registers).
    #[arg(long)]
    no_network_rule: bool,
    /// Switch off the ECS world's placement rule (any task fits anywhere).
    #[arg(long)]
    no_placement_rule: bool,
}

impl UpArgs {
    fn options(&self) -> SandboxOptions {
        let console = |_: usize| {
            let mut c = ConsoleConfig {
                path_prefix: self.console_prefix.clone(),
                tls: self.console_tls,
                variant: self.console_variant,
                ..Default::default()
            };
            if let Some(n) = self.console_page_size {
                c.max_page_size = n.max(1);
            }
            if self.console_access_key {
                let random = |n| rand::rng().sample_iter(Alphanumeric).take(n).map(char::from).collect::<String>();
                c.access_keys.push((random(20).to_uppercase(), random(40)));
            }
            c
        };
        SandboxOptions {
            console: (self.consoles > 0).then(|| console(0)),
            extra_consoles: (1..self.consoles).map(console).collect(),
            regions: self.regions.clone(),
            rules: Rules { network: !self.no_network_rule, placement: !self.no_placement_rule },
            ..Default::default()
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = match Cli::parse().command {
        Cmd::Up(args) => args,
        Cmd::Show => return show::show().await,
    };
    let env_file = args.env_file.clone();
    eprintln!("starting the sandbox (etcd, kube-apiserver, moto, ...)");
    let sandbox = Sandbox::start(args.options()).await?;
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
