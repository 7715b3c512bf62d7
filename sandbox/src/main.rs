//! `sandbox up`: starts the test world for a person (or another tool) and keeps it running until
//! Ctrl-C, printing (and with `--env-file FILE` writing) what is needed to use it.
//! `sandbox bench`: measures an operator binary against it (`make bench`, [`sandbox::bench`]).

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
    /// Measure an operator binary against fresh sandboxes; print one table, write it as JSON.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// The operator binary to measure (`make bench`: the release build).
    #[arg(long)]
    operator: PathBuf,
    /// Also write the report as JSON to this file (the operator logs go next to it).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Cases to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "single,workers,adopt,waiting")]
    cases: Vec<sandbox::bench::report::CaseKind>,
    /// Resources of the `workers` case.
    #[arg(long, env = "BENCH_WORKERS", default_value_t = 100)]
    workers: usize,
    /// Resources of the `adopt` case (and clusters seeded for it).
    #[arg(long, env = "BENCH_ADOPT", default_value_t = 1000)]
    adopt: usize,
    /// Length of the steady window; shorter than one resync (300 s) is quicker but not representative.
    #[arg(long, env = "BENCH_STEADY_SECONDS", default_value_t = 300)]
    steady_seconds: u64,
    /// How long the `waiting` case waits.
    #[arg(long, env = "BENCH_WAIT_SECONDS", default_value_t = 600)]
    wait_seconds: u64,
    /// Run the operator with this RESYNC_SECONDS instead of its default (the table says so).
    #[arg(long, env = "BENCH_RESYNC_SECONDS")]
    resync_seconds: Option<u64>,
    /// Run the operator with these AWS rate budgets (`ecs=off`, say) instead of its defaults (the
    /// table says so).
    #[arg(long, env = "BENCH_AWS_RATE_LIMITS")]
    aws_rate_limits: Option<String>,
    /// Run the operator with this Console rate budget (`off`, say) instead of its default.
    #[arg(long, env = "BENCH_CONSOLE_RATE_LIMIT")]
    console_rate_limit: Option<String>,
    /// The operator's RUST_LOG (`info,ecs_defender_operator::reconcile=debug` tells why each
    /// full pass ran); more logging costs the operator CPU.
    #[arg(long, env = "BENCH_OPERATOR_LOG", default_value = "info")]
    operator_log: String,
    /// Give up waiting for Ready after this long.
    #[arg(long, env = "BENCH_READY_TIMEOUT_SECONDS", default_value_t = 1200)]
    ready_timeout_seconds: u64,
    /// Skip deleting a service and timing its repair.
    #[arg(long)]
    no_repair: bool,
    /// Skip it in the case of one resource (where it comes after the steady window, up to a resync longer).
    #[arg(long)]
    no_repair_single: bool,
}

async fn bench(args: BenchArgs) -> Result<()> {
    use std::time::Duration;
    let mut cfg = sandbox::bench::BenchConfig::new(args.operator.clone());
    cfg.cases = args.cases;
    cfg.workers_count = args.workers;
    cfg.adopt_count = args.adopt;
    cfg.steady = Duration::from_secs(args.steady_seconds);
    cfg.waiting = Duration::from_secs(args.wait_seconds);
    cfg.resync = args.resync_seconds.map(Duration::from_secs);
    cfg.aws_rate_limits = args.aws_rate_limits.clone();
    cfg.console_rate_limit = args.console_rate_limit.clone();
    cfg.ready_timeout = Duration::from_secs(args.ready_timeout_seconds);
    cfg.operator_log = args.operator_log.clone();
    cfg.repair = !args.no_repair;
    cfg.repair_single = !args.no_repair_single;
    if let Some(dir) = args.json.as_ref().and_then(|p| p.parent()).filter(|d| !d.as_os_str().is_empty()) {
        cfg.log_dir = dir.to_path_buf();
    }
    cfg.command = std::env::args().map(|a| shell_quote(&a)).collect::<Vec<_>>().join(" ");
    eprintln!("bench: operator {}, logs in {}", cfg.operator.display(), cfg.log_dir.display());
    let report = sandbox::bench::run(&cfg).await?;
    println!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
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
        Cmd::Bench(args) => return bench(args).await,
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
