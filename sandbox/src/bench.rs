//! `sandbox bench` (`make bench`): runs an operator binary against the sandbox and measures what
//! issue 12 asks, as one table (markdown, for the README) and as JSON.
//!
//! Each case gets a fresh sandbox and a fresh operator process with its default timings, so
//! counts, RSS and CPU belong to that case alone:
//!
//! - `single`: the sample (a new cluster with two workers);
//! - `workers`: many resources with workers, one instance each;
//! - `adopt`: many resources adopting clusters seeded straight into the sandbox (no workers);
//! - `waiting`: one resource whose instances never register (no public IP where the only way out
//!   is an internet gateway), for ten minutes: the AWS calls it makes while waiting. It runs in a
//!   sandbox of its own, alongside the other cases: calls that name no resource (the AMI,
//!   subnets, security groups) could not be told apart in a shared one.
//!
//! A case: start the world, create the resources (noting when each create was sent), watch until
//! each is seen Ready, let it settle, then a steady window of one resync in which the bench
//! deletes one resource's ECS service (for a case of one resource: after the window) and notes
//! when the operator finds and repairs it. The numbers come from the gate's call log, the Console
//! simulator's request log and Defender records, the operator's `/metrics` and `/proc`
//! ([`measure`] says how calls are attributed to resources).

pub mod measure;
pub mod operator;
pub mod report;
pub mod resources;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};

use self::{
    measure::{Attribution, Dist, per_hour, per_resource_calls, seconds},
    operator::OperatorProcess,
    report::{CaseKind, CaseReport, Converge, Repair, Report, Steady, Waiting},
    resources::ReadyWatch,
};
use crate::{
    gate::Call,
    world::{AwsClientsForTests, Sandbox, SandboxOptions},
};

/// The operator's default resync (`--resync-seconds`), for the per-resync figures.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// What to run. [`BenchConfig::new`] gives `make bench`'s defaults.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The operator binary (the release build for `make bench`).
    pub operator: PathBuf,
    pub cases: Vec<CaseKind>,
    /// Resources of the `workers` case.
    pub workers_count: usize,
    /// Resources (and seeded clusters) of the `adopt` case.
    pub adopt_count: usize,
    /// The steady window; at least one resync for a representative figure.
    pub steady: Duration,
    /// How long the `waiting` case waits.
    pub waiting: Duration,
    /// `RESYNC_SECONDS` for the operator; `None`: its default (300 s).
    pub resync: Option<Duration>,
    /// `AWS_RATE_LIMITS` for the operator (`ecs=off`, say: what the operator and sandbox do
    /// without the budget); `None`: its defaults.
    pub aws_rate_limits: Option<String>,
    /// `CONSOLE_RATE_LIMIT` for the operator (`off`, say); `None`: its default.
    pub console_rate_limit: Option<String>,
    /// The operator's `RUST_LOG`.
    pub operator_log: String,
    /// Wait after the last Ready before the steady window (the tail of convergence).
    pub settle: Duration,
    /// Give up waiting for Ready after this long (the case reports how many were).
    pub ready_timeout: Duration,
    /// Delete one service and time its repair.
    pub repair: bool,
    /// Also in a case of one resource, after its steady window (up to a resync longer).
    pub repair_single: bool,
    /// Where the operator logs go (`operator-<case>.log`).
    pub log_dir: PathBuf,
    /// The command line to print with the table.
    pub command: String,
}

impl BenchConfig {
    pub fn new(operator: PathBuf) -> BenchConfig {
        BenchConfig {
            operator,
            cases: vec![CaseKind::Single, CaseKind::Workers, CaseKind::Adopt, CaseKind::Waiting],
            workers_count: 100,
            adopt_count: 1000,
            steady: DEFAULT_RESYNC,
            waiting: Duration::from_secs(600),
            resync: None,
            aws_rate_limits: None,
            console_rate_limit: None,
            operator_log: "info".to_string(),
            settle: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(20 * 60),
            repair: true,
            repair_single: true,
            log_dir: std::env::temp_dir().join("ecs-defender-bench"),
            command: "make bench".to_string(),
        }
    }

    fn resync(&self) -> Duration {
        self.resync.unwrap_or(DEFAULT_RESYNC)
    }

    fn operator_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            self.resync.iter().map(|r| ("RESYNC_SECONDS".to_string(), r.as_secs().max(1).to_string())).collect();
        env.push(("RUST_LOG".to_string(), self.operator_log.clone()));
        env.extend(self.aws_rate_limits.iter().map(|l| ("AWS_RATE_LIMITS".to_string(), l.clone())));
        env.extend(self.console_rate_limit.iter().map(|l| ("CONSOLE_RATE_LIMIT".to_string(), l.clone())));
        env
    }
}

/// Runs the cases (the `waiting` case alongside the others) and checks the targets.
pub async fn run(cfg: &BenchConfig) -> Result<Report> {
    crate::install_crypto_provider();
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let waiting = cfg.cases.contains(&CaseKind::Waiting).then(|| {
        let cfg = cfg.clone();
        tokio::spawn(async move { run_waiting(&cfg).await })
    });
    let mut cases = Vec::new();
    for kind in cfg.cases.iter().copied().filter(|k| *k != CaseKind::Waiting) {
        let n = match kind {
            CaseKind::Single => 1,
            CaseKind::Workers => cfg.workers_count,
            CaseKind::Adopt => cfg.adopt_count,
            CaseKind::Waiting => unreachable!(),
        };
        eprintln!("bench: case {kind:?} ({n} resources)");
        // A case that fails is reported as failed; the others still run.
        cases.push(run_case(cfg, kind, n).await.unwrap_or_else(|e| failed(kind, n, e)));
    }
    if let Some(task) = waiting {
        eprintln!("bench: waiting for the `waiting` case to finish");
        let result = task.await.map_err(anyhow::Error::from).and_then(|r| r);
        cases.push(result.unwrap_or_else(|e| failed(CaseKind::Waiting, 1, e)));
    }
    let mut notes = vec![
        "Per-resource AWS figures: calls naming the resource (its cluster name or ids; a batched call naming k \
         resources counts 1/k each) plus an even share of the calls naming none; medians over resources. \
         Console requests name no resource: their figures are means."
            .to_string(),
        "Each case runs in a fresh sandbox with a fresh operator process at its default timings; time to Ready is \
         from the create request to the Ready=True status (for the current generation) arriving through a watch."
            .to_string(),
    ];
    if let Some(r) = cfg.resync {
        notes.push(format!("The operator ran with RESYNC_SECONDS={} (not its default 300).", r.as_secs()));
    }
    if let Some(l) = &cfg.aws_rate_limits {
        notes.push(format!("The operator ran with AWS_RATE_LIMITS={l} (not its default budgets)."));
    }
    if let Some(l) = &cfg.console_rate_limit {
        notes.push(format!("The operator ran with CONSOLE_RATE_LIMIT={l} (not its default budget)."));
    }
    if cfg.steady < cfg.resync() {
        notes.push(format!(
            "The steady window ({} s) is shorter than one resync ({} s): the steady figures are not representative.",
            cfg.steady.as_secs(),
            cfg.resync().as_secs()
        ));
    }
    let targets = report::check_targets(&cases);
    Ok(Report {
        started,
        operator: cfg.operator.display().to_string(),
        command: cfg.command.clone(),
        cases,
        targets,
        notes,
    })
}

fn failed(kind: CaseKind, n: usize, e: anyhow::Error) -> CaseReport {
    eprintln!("bench: case {kind:?} failed: {e:#}");
    let mut rep = CaseReport::new(kind, n);
    rep.notes.push(format!("the case failed: {e:#}"));
    rep
}

/// The world every case starts: the default sandbox (strict rules), one Console.
async fn start_world(cfg: &BenchConfig, tag: &str) -> Result<(Sandbox, kube::Client, OperatorProcess)> {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.context("starting the sandbox")?;
    let client = sandbox.kube_client().await?;
    resources::prepare(&sandbox, &client).await?;
    let log = cfg.log_dir.join(format!("operator-{tag}.log"));
    let op = OperatorProcess::start(&cfg.operator, &sandbox, &cfg.operator_env(), log).await?;
    Ok((sandbox, client, op))
}

async fn run_case(cfg: &BenchConfig, kind: CaseKind, n: usize) -> Result<CaseReport> {
    let wall = Instant::now();
    let mut rep = CaseReport::new(kind, n);
    let tag = format!("{kind:?}").to_lowercase();
    let (sandbox, client, mut op) = start_world(cfg, &tag).await?;
    let console_url = sandbox.console().url();
    // Names are fixed-width so none is a prefix of another's words.
    let prefix = match kind {
        CaseKind::Single => "one",
        CaseKind::Workers => "wk",
        _ => "ad",
    };
    let (names, objects): (Vec<String>, Vec<(String, serde_json::Value)>) = match kind {
        CaseKind::Adopt => {
            let t = Instant::now();
            let clusters = sandbox.seed_adopted_clusters(prefix, n).await.context("seeding the adopted clusters")?;
            rep.notes.push(format!("seeding {} clusters took {:.0} s", clusters.len(), t.elapsed().as_secs_f64()));
            let objects = clusters.iter().map(|c| (c.clone(), resources::adopt_spec(&console_url, c))).collect();
            (clusters, objects)
        }
        _ => {
            let names: Vec<String> =
                (0..n).map(|i| if n == 1 { "sample".to_string() } else { format!("{prefix}-{i:04}") }).collect();
            let spec = |_: &str| {
                if kind == CaseKind::Single {
                    resources::sample_spec(&console_url)
                } else {
                    resources::small_workers_spec(&console_url)
                }
            };
            let objects = names.iter().map(|m| (m.clone(), spec(m))).collect();
            (names, objects)
        }
    };
    let watch = ReadyWatch::start(&client, &tag);
    rep.setup_seconds = wall.elapsed().as_secs_f64();
    sandbox.gate().clear_calls();
    sandbox.console().clear_requests();

    // Converge.
    let cpu_start = operator::cpu_by_process(&sandbox, &op);
    let created = resources::create_all(&client, &tag, objects).await?;
    let t0 = created.values().min().copied().unwrap_or_else(SystemTime::now);
    let mut last_print = Instant::now();
    let ready = watch
        .wait_ready(n, cfg.ready_timeout, |k, changed| {
            if (changed && k == n) || last_print.elapsed() > Duration::from_secs(15) {
                eprintln!("bench:   {k}/{n} Ready after {:.0} s", seconds(t0, SystemTime::now()));
                last_print = Instant::now();
            }
        })
        .await;
    rep.ready = ready;
    let ready_at = watch.ready_at();
    let last_ready = ready_at.values().max().copied();
    if ready == n {
        rep.all_ready_seconds = last_ready.map(|t| seconds(t0, t));
    } else {
        rep.notes.push(format!("only {ready} of {n} were Ready after {} s", cfg.ready_timeout.as_secs()));
    }
    tokio::time::sleep(cfg.settle).await;
    let converge_end = SystemTime::now();
    let cpu_converged = operator::cpu_by_process(&sandbox, &op);
    // Before the repair below restarts a Defender.
    let defenders = sandbox.console().defenders();
    rep.cpu_converge = operator::cpu_delta(&cpu_start, &cpu_converged);
    if !op.running() {
        anyhow::bail!("the operator exited; see {}", op.log.display());
    }

    // Steady window (with a repair inside it when there are several resources).
    // The service of a Ready resource (the first one) is deleted; none when none is Ready.
    let repair_index = names.iter().position(|m| ready_at.contains_key(m));
    let repair_in_window = cfg.repair && n > 1 && repair_index.is_some();
    let (cpu0, rec0, s0) = (op.cpu_seconds()?, op.metric("reconciles_total").await?, SystemTime::now());
    eprintln!("bench:   steady window of {} s", cfg.steady.as_secs());
    let window = async {
        tokio::time::sleep(cfg.steady).await;
        anyhow::Ok((op.cpu_seconds()?, op.metric("reconciles_total").await?, SystemTime::now()))
    };
    let repair_wait = cfg.resync() + Duration::from_secs(120);
    let repair_name = repair_index.map(|i| names[i].clone()).unwrap_or_default();
    let (end, in_window) = if repair_in_window {
        let (end, r) = tokio::join!(window, delete_and_wait(&sandbox, &repair_name, repair_wait));
        (end?, Some(r))
    } else {
        (window.await?, None)
    };
    let (cpu1, rec1, s1) = end;
    rep.cpu_steady = operator::cpu_delta(&cpu_converged, &operator::cpu_by_process(&sandbox, &op));
    // The resource whose service was deleted in the window is left out of the steady figures.
    let excluded = repair_index.filter(|_| repair_in_window);
    let repaired = match in_window {
        Some(r) => Some(r),
        None if cfg.repair && cfg.repair_single && repair_index.is_some() => {
            Some(delete_and_wait(&sandbox, &repair_name, repair_wait).await)
        }
        None => None,
    };
    let repaired = match repaired {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            rep.notes.push(format!("the repair was not measured: {e:#}"));
            None
        }
        None => None,
    };
    rep.peak_rss_mib = Some(op.peak_rss_bytes()? as f64 / (1024.0 * 1024.0));
    let calls = sandbox.gate().calls();
    let console_requests = sandbox.console().requests();
    let objects = watch.objects();
    op.stop().await;

    // Attribution: cluster names, and the ids status recorded that carry no name.
    let mut attr = Attribution::new(&names);
    for (i, m) in names.iter().enumerate() {
        if let Some(o) = objects.get(m)
            && let Some(id) = o.data["status"]["launchTemplateId"].as_str()
        {
            attr.add_id(id, i);
        }
    }
    let bench_call = |c: &Call| repaired.as_ref().is_some_and(|r| r.is_bench_call(c));

    // Converge figures.
    let ready_times: Vec<Option<SystemTime>> = names.iter().map(|m| ready_at.get(m).copied()).collect();
    let ranges: Vec<_> = ready_times
        .iter()
        .map(|r| Some((t0, r.map_or(converge_end, |t| (t + cfg.settle).min(converge_end)))))
        .collect();
    let per = per_resource_calls(&calls, &attr, &ranges, (t0, converge_end), &bench_call);
    let (muts, reads): (Vec<f64>, Vec<f64>) = per.iter().flatten().copied().unzip();
    let first_range = ranges[0].unwrap_or((t0, converge_end));
    let first_calls: Vec<Call> =
        calls.iter().filter(|c| c.at >= first_range.0 && c.at <= first_range.1).cloned().collect();
    let console_converge = console_requests.iter().filter(|r| in_range(r.at.into(), t0, converge_end)).count();
    rep.converge = Some(Converge {
        aws_mutating: Dist::of(muts.iter().copied()).map_or(0.0, |d| d.median),
        aws_read: Dist::of(reads.iter().copied()).map_or(0.0, |d| d.median),
        aws_total: Dist::of(muts.iter().zip(&reads).map(|(m, r)| m + r)).map_or(0.0, |d| d.median),
        console_mean: console_converge as f64 / n as f64,
        mutating_operations: measure::mutating_operations(&first_calls, &attr, 0),
        aws_operations: measure::operations_in(&calls, t0, converge_end),
    });
    rep.time_to_ready = Dist::of(names.iter().filter_map(|m| Some(seconds(*created.get(m)?, *ready_at.get(m)?))));

    // Ready after the last Defender of the cluster connected.
    let mut last_connected: HashMap<&str, SystemTime> = HashMap::new();
    for d in defenders.iter().filter(|d| d.connected) {
        let t: SystemTime = d.last_modified.into();
        // The task's cluster, by name or ARN (`.../cluster/<name>`).
        let cluster = d.cluster.rsplit('/').next().unwrap_or(&d.cluster);
        let e = last_connected.entry(cluster).or_insert(t);
        *e = (*e).max(t);
    }
    rep.ready_after_defenders =
        Dist::of(names.iter().filter_map(|m| Some(seconds(*last_connected.get(m.as_str())?, *ready_at.get(m)?))));

    // Steady figures.
    let window = s1.duration_since(s0).unwrap_or_default();
    // Only resources Ready before the window count; the others were still converging.
    let ranges: Vec<_> =
        (0..n).map(|i| (Some(i) != excluded && ready_times[i].is_some_and(|t| t <= s0)).then_some((s0, s1))).collect();
    if ready < n {
        rep.notes.push(format!(
            "the steady window ran while {} resources still converged: its figures cover the {ready} Ready ones, but the calls naming no resource include the converging ones",
            n - ready
        ));
    }
    let per = per_resource_calls(&calls, &attr, &ranges, (s0, s1), &bench_call);
    let totals: Vec<f64> = per.iter().flatten().map(|(m, r)| m + r).collect();
    let in_steady: Vec<&crate::console::ConsoleRequest> =
        console_requests.iter().filter(|r| in_range(r.at.into(), s0, s1)).collect();
    let resyncs = window.as_secs_f64() / cfg.resync().as_secs_f64();
    let later_pages = in_steady.iter().filter(|r| measure::is_later_page(r.query.as_deref())).count();
    let reconciles = rec1 - rec0;
    rep.steady = (!totals.is_empty()).then(|| Steady {
        window_seconds: window.as_secs_f64(),
        resync_seconds: cfg.resync().as_secs_f64(),
        resources: totals.len(),
        aws_per_resource_hour: per_hour(Dist::of(totals.iter().copied()).map_or(0.0, |d| d.median), window),
        aws_total_per_resource_hour: per_hour(totals.iter().sum::<f64>() / totals.len().max(1) as f64, window),
        aws_operations: measure::operations_in(
            &calls.iter().filter(|c| !bench_call(c)).cloned().collect::<Vec<_>>(),
            s0,
            s1,
        ),
        console_per_resync: in_steady.len() as f64 / resyncs,
        console_per_resync_beyond_paging: (in_steady.len() - later_pages) as f64 / resyncs,
        reconciles,
        cpu_seconds: cpu1 - cpu0,
        cpu_ms_per_reconcile: (reconciles > 0.0).then(|| (cpu1 - cpu0) * 1000.0 / reconciles),
    });
    if let Some(r) = &repaired {
        rep.repair = Some(r.report(&calls, &attr, &names));
        if !r.in_window_of(s0, s1) {
            rep.notes.push("the service was deleted after the steady window".to_string());
        }
    }
    rep.wall_seconds = wall.elapsed().as_secs_f64();
    drop(watch);
    drop(sandbox);
    Ok(rep)
}

fn in_range(t: SystemTime, from: SystemTime, to: SystemTime) -> bool {
    t >= from && t <= to
}

/// One deletion of a resource's ECS service by the bench, and when it was ACTIVE again.
struct Deletion {
    name: String,
    service: String,
    /// Around the bench's own DeleteService call.
    sent: SystemTime,
    answered: SystemTime,
    active_again: Option<SystemTime>,
}

impl Deletion {
    fn is_bench_call(&self, c: &Call) -> bool {
        c.operation == "DeleteService"
            && c.at >= self.sent
            && c.at <= self.answered
            && c.params.get("service").is_some_and(|s| s.ends_with(&self.service))
    }

    fn index_of(&self, names: &[String]) -> usize {
        names.iter().position(|m| *m == self.name).unwrap_or(usize::MAX)
    }

    fn in_window_of(&self, from: SystemTime, to: SystemTime) -> bool {
        in_range(self.sent, from, to)
    }

    fn report(&self, calls: &[Call], attr: &Attribution, names: &[String]) -> Repair {
        let i = self.index_of(names);
        let detected = calls
            .iter()
            .find(|c| c.at > self.answered && !self.is_bench_call(c) && attr.resources_of(c).contains(&i))
            .map(|c| c.at);
        Repair {
            resource: self.name.clone(),
            detect_seconds: detected.map(|t| seconds(self.sent, t)),
            repaired_seconds: self.active_again.map(|t| seconds(self.sent, t)),
        }
    }
}

/// Deletes the resource's service through the gate (as someone with the console would), then
/// waits until the operator created it again and moto (asked directly, so the gate's log holds
/// only the operator's calls) shows it ACTIVE.
async fn delete_and_wait(sandbox: &Sandbox, name: &str, timeout: Duration) -> Result<Deletion> {
    let service = format!("{name}-defender");
    let via_gate = AwsClientsForTests::new(&sandbox.aws_config().await);
    let direct = aws_sdk_ecs::Client::new(&crate::world::sdk_config(sandbox.gate().upstream_url()).await);
    let creates = || sandbox.gate().counts().get("ecs:CreateService").copied().unwrap_or(0);
    let before = creates();
    let sent = SystemTime::now();
    via_gate
        .ecs
        .delete_service()
        .cluster(name)
        .service(&service)
        .force(true)
        .send()
        .await
        .with_context(|| format!("deleting the service {service}"))?;
    let answered = SystemTime::now();
    eprintln!("bench:   deleted the service {service}; waiting for the operator to repair it");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut active_again = None;
    while tokio::time::Instant::now() < deadline {
        if creates() > before {
            let out = direct.describe_services().cluster(name).services(&service).send().await?;
            if out.services().iter().any(|s| s.status() == Some("ACTIVE")) {
                active_again = Some(SystemTime::now());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match active_again {
        Some(t) => eprintln!("bench:   repaired after {:.1} s", seconds(sent, t)),
        None => eprintln!("bench:   not repaired within {} s", timeout.as_secs()),
    }
    Ok(Deletion { name: name.to_string(), service, sent, answered, active_again })
}

/// The `waiting` case: one resource whose instances never register, for `cfg.waiting` from its
/// Auto Scaling group's creation (when the wait for instances begins).
async fn run_waiting(cfg: &BenchConfig) -> Result<CaseReport> {
    let wall = Instant::now();
    let mut rep = CaseReport::new(CaseKind::Waiting, 1);
    let (sandbox, client, op) = start_world(cfg, "waiting").await?;
    rep.setup_seconds = wall.elapsed().as_secs_f64();
    let watch = ReadyWatch::start(&client, "waiting");
    sandbox.gate().clear_calls();
    let name = "waits";
    resources::create_all(
        &client,
        "waiting",
        vec![(name.to_string(), resources::unreachable_workers_spec(&sandbox.console().url()))],
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let start = loop {
        if let Some(c) =
            sandbox.gate().calls().iter().find(|c| c.operation == "CreateAutoScalingGroup" && c.status == 200)
        {
            break c.at;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the waiting resource's Auto Scaling group was not created within 120 s; see {}",
                op.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let end = start + cfg.waiting;
    if let Ok(left) = end.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    let calls: Vec<Call> = sandbox.gate().calls().into_iter().filter(|c| in_range(c.at, start, end)).collect();
    let obj = watch.objects().remove(name);
    rep.ready = watch.ready_count();
    rep.peak_rss_mib = Some(op.peak_rss_bytes()? as f64 / (1024.0 * 1024.0));
    op.stop().await;
    rep.waiting = Some(Waiting {
        window_seconds: cfg.waiting.as_secs_f64(),
        aws_calls: calls.len() as u64,
        aws_mutating: calls.iter().filter(|c| c.mutating).count() as u64,
        aws_operations: measure::operations_in(&calls, start, end),
        conditions: obj
            .iter()
            .flat_map(|o| ["Ready", "Reconciling", "Stalled"].map(|t| resources::condition_message(o, t)))
            .flatten()
            .collect(),
    });
    if let Some(w) = &rep.waiting
        && let Some(ready) = w.conditions.first()
    {
        rep.notes.push(format!("at the end of the wait: {ready}"));
    }
    rep.wall_seconds = wall.elapsed().as_secs_f64();
    drop(watch);
    drop(sandbox);
    Ok(rep)
}
