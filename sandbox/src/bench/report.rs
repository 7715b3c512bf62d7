//! (pure) What one bench run measured, the markdown table made of it, and the targets
//! checked against it. The JSON the bench writes is [`Report`] serialized.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use super::measure::Dist;

/// The mutating calls converging the sample (a new cluster with workers, the install bundle in
/// Secrets Manager with an execution role of ours) needs at the least, as `service:Operation`.
/// Found in the gate log of a run of the operator as it was on 2026-12 (tags are set in the
/// create calls; the secret is created empty and its value put once).
pub const MINIMUM_MUTATING_WITH_WORKERS: &[&str] = &[
    "ecs:CreateCluster",
    "ec2:CreateLaunchTemplate",
    "autoscaling:CreateAutoScalingGroup",
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "iam:CreateRole",
    "iam:PutRolePolicy",
    "ecs:RegisterTaskDefinition",
    "ecs:CreateService",
];

/// The same for an adopted cluster: no cluster, no workers.
pub const MINIMUM_MUTATING_ADOPT: &[&str] = &[
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "iam:CreateRole",
    "iam:PutRolePolicy",
    "ecs:RegisterTaskDefinition",
    "ecs:CreateService",
];

/// The cases the bench knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CaseKind {
    /// One resource with workers: the sample.
    Single,
    /// Many resources with workers (one instance each).
    Workers,
    /// Many resources adopting existing clusters (seeded straight into the sandbox).
    Adopt,
    /// One resource whose instances never register, for a fixed time: AWS calls while it waits.
    Waiting,
}

/// AWS calls to converge, per resource (medians over resources; see `measure` for attribution).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Converge {
    pub aws_mutating: f64,
    pub aws_read: f64,
    pub aws_total: f64,
    /// Console requests while converging, divided by the resources (a mean: requests name no resource).
    pub console_mean: f64,
    /// Mutating operations of the median resource (the first one), `service:Operation` -> count.
    pub mutating_operations: BTreeMap<String, u64>,
    /// Every call while converging (all resources), `service:Operation` -> count.
    pub aws_operations: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Steady {
    pub window_seconds: f64,
    pub resync_seconds: f64,
    /// Resources counted (a resource whose service the bench deleted in the window is not).
    pub resources: usize,
    /// Median over resources, scaled to an hour.
    pub aws_per_resource_hour: f64,
    /// All AWS calls in the window / resources counted, scaled to an hour.
    pub aws_total_per_resource_hour: f64,
    pub aws_operations: BTreeMap<String, u64>,
    /// Console requests per Console per resync, and the same without further pages of a list.
    pub console_per_resync: f64,
    pub console_per_resync_beyond_paging: f64,
    pub reconciles: f64,
    pub cpu_seconds: f64,
    pub cpu_ms_per_reconcile: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Repair {
    pub resource: String,
    /// Deletion to the operator's first call naming the resource.
    pub detect_seconds: Option<f64>,
    /// Deletion to the service ACTIVE again (created by the operator).
    pub repaired_seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Waiting {
    pub window_seconds: f64,
    pub aws_calls: u64,
    pub aws_mutating: u64,
    pub aws_operations: BTreeMap<String, u64>,
    /// The resource's Ready/Reconciling conditions at the end (it must still be waiting).
    pub conditions: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseReport {
    pub kind: CaseKind,
    pub resources: usize,
    pub ready: usize,
    /// First create to last Ready seen.
    pub all_ready_seconds: Option<f64>,
    pub converge: Option<Converge>,
    /// Creation to Ready seen, seconds.
    pub time_to_ready: Option<Dist>,
    /// Last Defender of the resource's cluster connected (Console) to Ready seen, seconds.
    pub ready_after_defenders: Option<Dist>,
    pub steady: Option<Steady>,
    pub repair: Option<Repair>,
    pub peak_rss_mib: Option<f64>,
    pub waiting: Option<Waiting>,
    /// CPU seconds per process (operator, moto, kube-apiserver, etcd, the sandbox process) from
    /// the first create to the last Ready (+ settle), and over the steady window: where time went.
    pub cpu_converge: BTreeMap<String, f64>,
    pub cpu_steady: BTreeMap<String, f64>,
    /// Wall time of the case, sandbox start to stop.
    pub wall_seconds: f64,
    /// Sandbox start (control plane, moto, seeding) and case set-up, seconds.
    pub setup_seconds: f64,
    pub notes: Vec<String>,
}

impl CaseReport {
    pub fn new(kind: CaseKind, resources: usize) -> CaseReport {
        CaseReport {
            kind,
            resources,
            ready: 0,
            all_ready_seconds: None,
            converge: None,
            time_to_ready: None,
            ready_after_defenders: None,
            steady: None,
            repair: None,
            peak_rss_mib: None,
            waiting: None,
            cpu_converge: BTreeMap::new(),
            cpu_steady: BTreeMap::new(),
            wall_seconds: 0.0,
            setup_seconds: 0.0,
            notes: Vec::new(),
        }
    }

    pub fn title(&self) -> String {
        match self.kind {
            CaseKind::Single => "1 with workers (the sample)".to_string(),
            CaseKind::Workers => format!("{} with workers (1 instance each)", self.resources),
            CaseKind::Adopt => format!("{} adopting clusters", self.resources),
            CaseKind::Waiting => "1 whose instances never register".to_string(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// When the run started (RFC 3339).
    pub started: String,
    pub operator: String,
    /// The command that reproduces it.
    pub command: String,
    pub cases: Vec<CaseReport>,
    pub targets: Vec<TargetCheck>,
    pub notes: Vec<String>,
}

fn f1(x: f64) -> String {
    if x.abs() >= 100.0 { format!("{x:.0}") } else { format!("{x:.1}") }
}

fn secs(x: f64) -> String {
    if x < 10.0 { format!("{x:.1} s") } else { format!("{x:.0} s") }
}

fn dash() -> String {
    "–".to_string()
}

impl Report {
    /// The table (markdown), the targets under it, then the notes.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| case | Ready | AWS calls to converge / resource (mutating + read) | Console calls to converge / resource | \
             time to Ready (median / p95) | Ready after last Defender connected (median / max) | \
             steady AWS calls / resource / hour | Console calls / Console / resync | deleted service: detected / repaired | \
             peak RSS | CPU / steady reconcile | AWS calls while waiting |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        for c in &self.cases {
            let converge = c
                .converge
                .as_ref()
                .map_or_else(dash, |v| format!("{} ({} + {})", f1(v.aws_total), f1(v.aws_mutating), f1(v.aws_read)));
            let console = c.converge.as_ref().map_or_else(dash, |v| format!("{} (mean)", f1(v.console_mean)));
            let ttr = c.time_to_ready.map_or_else(dash, |d| format!("{} / {}", secs(d.median), secs(d.p95)));
            let rad = c.ready_after_defenders.map_or_else(dash, |d| {
                let of = if d.n < c.ready { format!(" ({} of {} matched)", d.n, c.ready) } else { String::new() };
                format!("{} / {}{of}", secs(d.median), secs(d.max))
            });
            let short = |s: &Steady| if s.window_seconds + 0.5 < s.resync_seconds { " (window < resync)" } else { "" };
            let steady = c.steady.as_ref().map_or_else(dash, |s| {
                let resync = if (s.resync_seconds - 300.0).abs() > 0.5 {
                    format!(", resync {:.0} s", s.resync_seconds)
                } else {
                    String::new()
                };
                format!("{} (over {:.0} s{resync}){}", f1(s.aws_per_resource_hour), s.window_seconds, short(s))
            });
            let console_steady = c.steady.as_ref().map_or_else(dash, |s| {
                if (s.console_per_resync - s.console_per_resync_beyond_paging).abs() < 0.05 {
                    f1(s.console_per_resync)
                } else {
                    format!("{} ({} beyond paging)", f1(s.console_per_resync), f1(s.console_per_resync_beyond_paging))
                }
            });
            let repair = c.repair.as_ref().map_or_else(dash, |r| {
                let o = |x: Option<f64>| x.map_or_else(|| "not seen".to_string(), secs);
                format!("{} / {}", o(r.detect_seconds), o(r.repaired_seconds))
            });
            let rss = c.peak_rss_mib.map_or_else(dash, |m| format!("{m:.0} MiB"));
            let cpu =
                c.steady.as_ref().and_then(|s| s.cpu_ms_per_reconcile).map_or_else(dash, |ms| format!("{ms:.2} ms"));
            let waiting = c.waiting.as_ref().map_or_else(dash, |w| {
                format!("{} in {:.0} s ({} mutating)", w.aws_calls, w.window_seconds, w.aws_mutating)
            });
            let ready = if c.kind == CaseKind::Waiting {
                format!("{}/{} (expected 0)", c.ready, c.resources)
            } else {
                format!(
                    "{}/{}{}",
                    c.ready,
                    c.resources,
                    c.all_ready_seconds.map_or_else(String::new, |s| format!(" in {}", secs(s)))
                )
            };
            let _ = writeln!(
                out,
                "| {} | {ready} | {converge} | {console} | {ttr} | {rad} | {steady} | {console_steady} | {repair} | {rss} | {cpu} | {waiting} |",
                c.title()
            );
        }
        out.push('\n');
        out.push_str("| target | measured | met |\n| --- | --- | --- |\n");
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "not measured",
            };
            let _ = writeln!(out, "| {} | {} | {met} |", t.target, t.measured);
        }
        let cpu: Vec<String> = self
            .cases
            .iter()
            .filter(|c| !c.cpu_converge.is_empty())
            .map(|c| {
                let mut parts: Vec<(&String, &f64)> = c.cpu_converge.iter().collect();
                parts.sort_by(|a, b| b.1.total_cmp(a.1));
                let parts: Vec<String> = parts.iter().map(|(k, v)| format!("{k} {v:.0} s")).collect();
                format!("{}: {}", c.title(), parts.join(", "))
            })
            .collect();
        if !cpu.is_empty() {
            out.push_str("\nCPU seconds while converging (first create to last Ready), by process: ");
            out.push_str(&cpu.join("; "));
            out.push('\n');
        }
        let case_notes: Vec<String> =
            self.cases.iter().flat_map(|c| c.notes.iter().map(move |n| format!("{}: {n}", c.title()))).collect();
        if !self.notes.is_empty() || !case_notes.is_empty() {
            out.push('\n');
            for n in self.notes.iter().chain(&case_notes) {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

fn case(cases: &[CaseReport], kind: CaseKind) -> Option<&CaseReport> {
    cases.iter().find(|c| c.kind == kind)
}

/// The targets, checked against what was measured.
pub fn check_targets(cases: &[CaseReport]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let not_measured = |target: &str| TargetCheck { target: target.into(), measured: "–".into(), met: None };

    // Converging one resource: mutating = the minimum.
    let target =
        format!("converging the sample: mutating calls = the minimum ({})", MINIMUM_MUTATING_WITH_WORKERS.join(", "));
    match case(cases, CaseKind::Single).and_then(|c| c.converge.as_ref()) {
        Some(v) => {
            let want: BTreeMap<String, u64> =
                MINIMUM_MUTATING_WITH_WORKERS.iter().map(|k| (k.to_string(), 1)).collect();
            let extra: Vec<String> = v
                .mutating_operations
                .iter()
                .filter(|(k, n)| want.get(*k).is_none_or(|w| *n > w))
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            let missing: Vec<&str> = MINIMUM_MUTATING_WITH_WORKERS
                .iter()
                .copied()
                .filter(|k| !v.mutating_operations.contains_key(*k))
                .collect();
            let mut measured = format!("{} mutating", f1(v.aws_mutating));
            if !extra.is_empty() {
                let _ = write!(measured, "; beyond the minimum: {}", extra.join(", "));
            }
            if !missing.is_empty() {
                let _ = write!(measured, "; not seen: {}", missing.join(", "));
            }
            out.push(TargetCheck { target, measured, met: Some(extra.is_empty() && missing.is_empty()) });
        }
        None => out.push(not_measured(&target)),
    }

    // All calls <= 2 x mutating + 1 per second of waiting.
    let target = "converging one resource: all AWS calls ≤ 2 × mutating + 1 per second of waiting (time to Ready)";
    match case(cases, CaseKind::Single).and_then(|c| Some((c.converge.as_ref()?, c.time_to_ready?))) {
        Some((v, t)) => {
            let allowed = 2.0 * v.aws_mutating + t.median.ceil();
            out.push(TargetCheck {
                target: target.into(),
                measured: format!(
                    "{} ≤ 2 × {} + {:.0} = {}",
                    f1(v.aws_total),
                    f1(v.aws_mutating),
                    t.median.ceil(),
                    f1(allowed)
                ),
                met: Some(v.aws_total <= allowed),
            });
        }
        None => out.push(not_measured(target)),
    }

    // Steady state.
    let steady: Vec<(String, &Steady)> = cases.iter().filter_map(|c| Some((c.title(), c.steady.as_ref()?))).collect();
    let target =
        "steady state: ≤ 13 AWS requests per resource per hour (5-minute resync; the target is at 1000 resources)";
    if steady.is_empty() {
        out.push(not_measured(target));
    } else {
        let measured =
            steady.iter().map(|(t, s)| format!("{t}: {}", f1(s.aws_per_resource_hour))).collect::<Vec<_>>().join("; ");
        let representative = steady.iter().all(|(_, s)| s.window_seconds + 0.5 >= s.resync_seconds);
        let met = steady.iter().all(|(_, s)| s.aws_per_resource_hour <= 13.0);
        out.push(TargetCheck { target: target.into(), measured, met: representative.then_some(met) });
    }
    let target = "steady state: Console ≤ 2 requests per Console per resync beyond paging";
    if steady.is_empty() {
        out.push(not_measured(target));
    } else {
        let measured = steady
            .iter()
            .map(|(t, s)| format!("{t}: {}", f1(s.console_per_resync_beyond_paging)))
            .collect::<Vec<_>>()
            .join("; ");
        let met = steady.iter().all(|(_, s)| s.console_per_resync_beyond_paging <= 2.0);
        out.push(TargetCheck { target: target.into(), measured, met: Some(met) });
    }

    // RSS with 1000 resources.
    let target = "peak RSS ≤ 64 MiB with 1000 resources (release build)";
    match case(cases, CaseKind::Adopt).and_then(|c| Some((c.resources, c.peak_rss_mib?))) {
        Some((n, mib)) => out.push(TargetCheck {
            target: target.into(),
            measured: format!("{mib:.0} MiB with {n}"),
            met: (n >= 1000).then_some(mib <= 64.0),
        }),
        None => out.push(not_measured(target)),
    }

    // CPU per steady reconcile.
    let cpu: Vec<(String, f64)> =
        steady.iter().filter_map(|(t, s)| Some((t.clone(), s.cpu_ms_per_reconcile?))).collect();
    let target = "CPU per steady reconcile ≤ 1 ms";
    if cpu.is_empty() {
        out.push(not_measured(target));
    } else {
        out.push(TargetCheck {
            target: target.into(),
            measured: cpu.iter().map(|(t, ms)| format!("{t}: {ms:.2} ms")).collect::<Vec<_>>().join("; "),
            met: Some(cpu.iter().all(|(_, ms)| *ms <= 1.0)),
        });
    }

    // Ready after the last Defender connected.
    let rad: Vec<(String, Dist)> = cases.iter().filter_map(|c| Some((c.title(), c.ready_after_defenders?))).collect();
    let target = "Ready ≤ 2 s after the last Defender connects (max over resources)";
    if rad.is_empty() {
        out.push(not_measured(target));
    } else {
        out.push(TargetCheck {
            target: target.into(),
            measured: rad.iter().map(|(t, d)| format!("{t}: max {}", secs(d.max))).collect::<Vec<_>>().join("; "),
            met: Some(rad.iter().all(|(_, d)| d.max <= 2.0)),
        });
    }

    // Waiting.
    let target = "a resource waiting 10 minutes makes ≤ 60 AWS calls in that time";
    match case(cases, CaseKind::Waiting).and_then(|c| c.waiting.as_ref()) {
        Some(w) => {
            let full = w.window_seconds >= 599.5;
            let allowed = 60.0 * w.window_seconds / 600.0;
            out.push(TargetCheck {
                target: target.into(),
                measured: format!("{} in {:.0} s", w.aws_calls, w.window_seconds),
                met: Some(w.aws_calls as f64 <= allowed).filter(|_| full || w.aws_calls as f64 > 60.0),
            });
        }
        None => out.push(not_measured(target)),
    }

    // 1000 adopt-mode resources Ready within 5 minutes.
    let target = "1000 adopt-mode resources all Ready within 5 minutes (two cores)";
    match case(cases, CaseKind::Adopt) {
        Some(c) => {
            let measured = match c.all_ready_seconds {
                Some(s) if c.ready == c.resources => format!("{} of {} in {}", c.ready, c.resources, secs(s)),
                _ => format!("{} of {} Ready", c.ready, c.resources),
            };
            let met = c.ready == c.resources && c.all_ready_seconds.is_some_and(|s| s <= 300.0);
            out.push(TargetCheck { target: target.into(), measured, met: (c.resources >= 1000).then_some(met) });
        }
        None => out.push(not_measured(target)),
    }
    out
}
