//! Keeps `make bench` working: the bench's library run on tiny cases (2 resources with workers,
//! 5 adopted clusters) with short windows and a short resync, against the debug operator binary.
//! The numbers are not checked against targets (that is the bench's job), only for sanity.

use std::time::Duration;

use sandbox::bench::{
    BenchConfig,
    report::{CaseKind, Report},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_tiny_cases_and_reports_sane_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BenchConfig::new(env!("CARGO_BIN_EXE_ecs-defender-operator").into());
    cfg.cases = vec![CaseKind::Workers, CaseKind::Adopt];
    cfg.workers_count = 2;
    cfg.adopt_count = 5;
    cfg.steady = Duration::from_secs(6);
    cfg.resync = Some(Duration::from_secs(3));
    cfg.settle = Duration::from_secs(1);
    cfg.ready_timeout = Duration::from_secs(60);
    cfg.log_dir = dir.path().to_path_buf();
    let report: Report = sandbox::bench::run(&cfg).await.expect("the bench runs");
    let table = report.to_markdown();
    println!("{table}");
    assert_eq!(report.cases.len(), 2, "{table}");
    for case in &report.cases {
        let title = case.title();
        assert_eq!(case.ready, case.resources, "{title}: all Ready\n{table}");
        let converge = case.converge.as_ref().expect("converge figures");
        assert!(converge.aws_mutating >= 2.0 && converge.aws_read > 0.0, "{title}: {converge:?}");
        assert!(converge.console_mean > 0.0, "{title}: {converge:?}");
        assert!(converge.mutating_operations.contains_key("ecs:CreateService"), "{title}: {converge:?}");
        let ttr = case.time_to_ready.expect("time to Ready");
        assert!(ttr.n == case.resources && ttr.median > 0.0 && ttr.median < 60.0, "{title}: {ttr:?}");
        let rad = case.ready_after_defenders.expect("Ready after the Defenders");
        assert!(rad.n == case.resources && rad.median >= 0.0, "{title}: {rad:?}");
        let steady = case.steady.as_ref().expect("steady figures");
        assert!(steady.reconciles > 0.0 && steady.aws_per_resource_hour > 0.0, "{title}: {steady:?}");
        assert!(steady.cpu_ms_per_reconcile.is_some(), "{title}: {steady:?}");
        let repair = case.repair.as_ref().expect("a repaired service");
        assert!(repair.repaired_seconds.is_some_and(|s| s > 0.0), "{title}: {repair:?}");
        assert!(case.peak_rss_mib.is_some_and(|m| m > 1.0), "{title}");
    }
    assert!(table.contains("| 2 with workers (1 instance each) | 2/2"), "{table}");
    assert!(table.contains("| 5 adopting clusters | 5/5"), "{table}");
    // The JSON round-trips.
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.cases.len(), 2);
}
