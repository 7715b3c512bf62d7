//! Crash consistency (issue 13): the operator, a real process, is killed with SIGKILL at seeded
//! points spread over create, each kind of day-two update and delete, then restarted (or, in
//! failover points, replaced by a standby replica that takes the Lease); afterwards AWS holds
//! exactly what the spec asks for, counted per kind, and nothing at all after the delete.
//!
//! The points are not written by hand: a fault-free reference run records, per scenario, the
//! mutating AWS calls the operator makes in order. Every (call, occurrence) gives two points: the
//! call held by the gate before it reaches AWS (`Hang`), or carried out and its answer held back
//! (`HangAfterDone`: AWS did it, the operator never learnt). The operator is killed while the call
//! is held. "Delete during create" points issue the delete right after the kill, once per create
//! step. Which points run is drawn with a seed:
//!
//! - `CRASH_SEED` (default 13) picks the points and which of them are failovers;
//! - `CRASH_POINTS` (default 8: one per scenario) or `all`; `make soak` runs `all`.
//!
//! Every point prints one line, and the run ends with a summary (reproduce with the same seed).

mod common;

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime},
};

use common::{
    eventually,
    inventory::Inventory,
    process::{Operator, World},
};
use ecs_defender_operator::crd::{EcsDefenderDeployment, WorkerKind};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use sandbox::gate::{Fault, FaultKind};

const CONVERGE: Duration = Duration::from_secs(150);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    /// The sample, launch template workers, created from nothing.
    Create,
    /// The same with a launch configuration.
    CreateLaunchConfiguration,
    /// A new instance type: a new template version, the group pointed at it, an instance refresh.
    LaunchData,
    /// New group sizes.
    Sizes,
    /// The service and the Auto Scaling group renamed at once.
    Rename,
    /// A Defender option that changes the Console's output: a new revision, the service updated.
    Revision,
    /// The resource deleted.
    Delete,
    /// The resource deleted while a create step is in flight (the kill comes during the create).
    DeleteDuringCreate,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::Create,
        Scenario::CreateLaunchConfiguration,
        Scenario::LaunchData,
        Scenario::Sizes,
        Scenario::Rename,
        Scenario::Revision,
        Scenario::Delete,
        Scenario::DeleteDuringCreate,
    ];

    /// Whose reference calls it is killed in.
    fn reference(self) -> Scenario {
        if self == Scenario::DeleteDuringCreate { Scenario::Create } else { self }
    }

    /// Whether the resource must exist and be Ready before the phase begins.
    fn needs_setup(self) -> bool {
        matches!(
            self,
            Scenario::LaunchData | Scenario::Sizes | Scenario::Rename | Scenario::Revision | Scenario::Delete
        )
    }

    fn kind(self) -> WorkerKind {
        if self == Scenario::CreateLaunchConfiguration {
            WorkerKind::LaunchConfiguration
        } else {
            WorkerKind::LaunchTemplate
        }
    }

    /// The spec patch of an update scenario.
    fn patch(self, name: &str) -> Option<serde_json::Value> {
        Some(match self {
            Scenario::LaunchData => serde_json::json!({"workers": {"instanceType": "t3.large"}}),
            Scenario::Sizes => {
                serde_json::json!({"workers": {"autoScalingGroup": {"minSize": 1, "desiredCapacity": 2, "maxSize": 3}}})
            }
            Scenario::Rename => serde_json::json!({
                "service": {"name": format!("{name}-svc2")},
                "workers": {"autoScalingGroup": {"name": format!("{name}-asg2")}},
            }),
            Scenario::Revision => serde_json::json!({"defender": {"options": {"memoryLimit": 640}}}),
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// Held before AWS: the call never happened.
    BeforeAws,
    /// Carried out, the answer held back: AWS did it, the operator never knew.
    AfterAws,
}

#[derive(Clone, Debug)]
struct Point {
    scenario: Scenario,
    /// `"ecs:CreateCluster"`.
    key: String,
    /// Which call of that operation within the phase (0: the first).
    nth: u32,
    when: When,
    /// Two replicas with leader election; the leader is killed and the standby finishes.
    failover: bool,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {}#{} {:?}{}",
            self.scenario,
            self.key,
            self.nth,
            self.when,
            if self.failover { " failover" } else { "" }
        )
    }
}

/// The operators of one point: a single process without leader election, or two replicas that
/// campaign for the Lease.
struct Operators {
    running: Vec<Operator>,
    started: u32,
    failover: bool,
}

impl Operators {
    async fn start(world: &World, failover: bool) -> Operators {
        let mut ops = Operators { running: vec![], started: 0, failover };
        ops.spawn(world).await;
        if failover {
            ops.running[0].wait_role("leader", Duration::from_secs(30)).await;
            ops.spawn(world).await;
            ops.running[1].wait_role("standby", Duration::from_secs(30)).await;
        }
        ops
    }

    async fn spawn(&mut self, world: &World) {
        self.started += 1;
        let name = format!("op-{}", self.started);
        let env: &[(&str, &str)] = if self.failover { &[] } else { &[("LEADER_ELECT", "false")] };
        self.running.push(Operator::start(&name, world, env).await);
    }

    /// SIGKILLs the process that reconciles; a restart starts a new one, a failover leaves the
    /// standby to take the Lease.
    async fn kill_and_recover(&mut self, world: &World) {
        let mut killed = self.running.remove(0);
        killed.kill().await;
        if !self.failover {
            self.spawn(world).await;
        }
    }

    fn logs(&self) -> String {
        self.running.iter().map(|o| format!("--- {} ---\n{}", o.name, o.log())).collect::<Vec<_>>().join("\n")
    }

    async fn stop(mut self) {
        for op in self.running.iter_mut() {
            op.kill().await;
        }
    }
}

fn spec_of(world: &World, name: &str, kind: WorkerKind) -> EcsDefenderDeployment {
    let mut edd = world.sample(name);
    let workers = edd.spec.workers.as_mut().unwrap();
    workers.kind = kind;
    // One instance keeps every point short; the sizes scenario grows it.
    let asg = &mut workers.auto_scaling_group;
    asg.min_size = 1;
    asg.desired_capacity = 1;
    asg.max_size = 2;
    edd
}

/// Ready for its current generation, with every instance on the current launch data.
async fn converged(world: &World, name: &str) -> bool {
    let Ok(edd) = world.api.get(name).await else { return false };
    let Some(st) = edd.status.as_ref() else { return false };
    let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    ready && st.observed_generation == edd.metadata.generation && st.instances_up_to_date == st.container_instances
}

async fn wait_converged(world: &World, ops: &Operators, name: &str, what: &str) -> Result<(), String> {
    if eventually(CONVERGE, || async { converged(world, name).await.then_some(()) }).await.is_none() {
        let status = world.api.get(name).await.ok().and_then(|e| e.status);
        return Err(format!("{what}: not converged; status {status:#?}\n{}", ops.logs()));
    }
    Ok(())
}

async fn delete_and_wait(world: &World, ops: &Operators, name: &str) -> Result<(), String> {
    let _ = world.api.delete(name, &DeleteParams::default()).await;
    if eventually(CONVERGE, || async { world.api.get_opt(name).await.ok()?.is_none().then_some(()) }).await.is_none() {
        let status = world.api.get(name).await.ok().and_then(|e| e.status);
        return Err(format!("not deleted; status {status:#?}\n{}", ops.logs()));
    }
    Ok(())
}

/// Waits for AWS to hold exactly `want` (deletes of groups and instances finish in the background).
async fn expect_inventory(world: &World, want: &Inventory, what: &str) -> Result<(), String> {
    let got = eventually(Duration::from_secs(60), || async {
        let got = Inventory::read(&world.sandbox.aws_config().await).await;
        (got == *want).then_some(got)
    })
    .await;
    match got {
        Some(_) => Ok(()),
        None => Err(format!(
            "{what}: AWS holds {:?}, expected {want:?}",
            Inventory::read(&world.sandbox.aws_config().await).await
        )),
    }
}

/// Starts the phase: creates, patches or deletes.
async fn trigger(world: &World, scenario: Scenario, name: &str) {
    match scenario {
        Scenario::Create | Scenario::CreateLaunchConfiguration | Scenario::DeleteDuringCreate => {
            world.api.create(&PostParams::default(), &spec_of(world, name, scenario.kind())).await.unwrap();
        }
        Scenario::Delete => {
            world.api.delete(name, &DeleteParams::default()).await.unwrap();
        }
        update => {
            let patch = serde_json::json!({ "spec": update.patch(name).unwrap() });
            world.api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
        }
    }
}

/// The phase has ended: converged for its generation, or gone.
async fn phase_done(world: &World, ops: &Operators, scenario: Scenario, name: &str) -> Result<(), String> {
    match scenario {
        Scenario::Delete | Scenario::DeleteDuringCreate => delete_and_wait(world, ops, name).await,
        _ => wait_converged(world, ops, name, "after the phase").await,
    }
}

/// The mutating calls (keys, in order) a fault-free run makes in each scenario's phase.
async fn reference_calls(world: &World) -> BTreeMap<Scenario, Vec<String>> {
    let ops = Operators::start(world, false).await;
    let mut out = BTreeMap::new();
    let mutations_since = |t: SystemTime| -> Vec<String> {
        world.sandbox.gate().calls().into_iter().filter(|c| c.mutating && c.at >= t).map(|c| c.key()).collect()
    };
    for (name, scenarios) in [
        (
            "ref",
            vec![
                Scenario::Create,
                Scenario::LaunchData,
                Scenario::Sizes,
                Scenario::Rename,
                Scenario::Revision,
                Scenario::Delete,
            ],
        ),
        ("reflc", vec![Scenario::CreateLaunchConfiguration, Scenario::Delete]),
    ] {
        for scenario in scenarios {
            let t = SystemTime::now();
            trigger(world, scenario, name).await;
            phase_done(world, &ops, scenario, name).await.unwrap_or_else(|e| panic!("reference {scenario:?}: {e}"));
            // Let the phase's last calls land (a delete's tail runs after the object is gone).
            tokio::time::sleep(Duration::from_millis(500)).await;
            if scenario != Scenario::Delete || name == "ref" {
                out.insert(scenario, mutations_since(t));
            }
        }
        expect_inventory(world, &Inventory::default(), "after the reference delete").await.unwrap();
    }
    ops.stop().await;
    out
}

/// All points of the reference calls: every occurrence of every mutating call, before and after AWS.
fn all_points(reference: &BTreeMap<Scenario, Vec<String>>) -> Vec<Point> {
    let mut points = vec![];
    for scenario in Scenario::ALL {
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        for key in &reference[&scenario.reference()] {
            let nth = seen.entry(key).or_default();
            for when in [When::BeforeAws, When::AfterAws] {
                points.push(Point { scenario, key: key.clone(), nth: *nth, when, failover: false });
            }
            *nth += 1;
        }
    }
    points
}

/// The points to run: all, or `n` drawn with the seed, at least one per scenario; about a third
/// are failovers.
fn choose(mut points: Vec<Point>, n: Option<usize>, seed: u64) -> Vec<Point> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    points.shuffle(&mut rng);
    if let Some(n) = n {
        let mut chosen: Vec<Point> = vec![];
        for scenario in Scenario::ALL {
            if let Some(p) = points.iter().find(|p| p.scenario == scenario) {
                chosen.push(p.clone());
            }
        }
        for p in &points {
            if chosen.len() >= n {
                break;
            }
            if !chosen.iter().any(|c| (c.scenario, &c.key, c.nth, c.when) == (p.scenario, &p.key, p.nth, p.when)) {
                chosen.push(p.clone());
            }
        }
        points = chosen;
    }
    for p in points.iter_mut() {
        p.failover = rng.random_bool(1.0 / 3.0);
    }
    points.sort_by_key(|p| p.scenario);
    points
}

/// Runs one point on a fresh resource; the world is empty before and after.
async fn run_point(world: &World, point: &Point, index: usize) -> Result<(), String> {
    let name = format!("c{index}");
    let scenario = point.scenario;
    let mut ops = Operators::start(world, point.failover).await;
    let result = async {
        if scenario.needs_setup() {
            trigger(world, Scenario::Create, &name).await;
            wait_converged(world, &ops, &name, "setup").await?;
        }
        let (service, operation) = point.key.split_once(':').unwrap();
        let kind = match point.when {
            When::BeforeAws => FaultKind::Hang,
            When::AfterAws => FaultKind::HangAfterDone,
        };
        let armed = SystemTime::now();
        world.sandbox.gate().add_fault(Fault::new(service, kind).on(operation).after(point.nth).times(1));
        trigger(world, scenario, &name).await;
        let held = eventually(Duration::from_secs(90), || async {
            world
                .sandbox
                .gate()
                .calls()
                .into_iter()
                .any(|c| c.at >= armed && c.key() == point.key && c.answer_lost)
                .then_some(())
        })
        .await;
        world.sandbox.gate().clear_faults();
        if held.is_none() {
            return Err(format!("the held call was never made\n{}", ops.logs()));
        }
        ops.kill_and_recover(world).await;
        if scenario == Scenario::DeleteDuringCreate {
            world.api.delete(&name, &DeleteParams::default()).await.map_err(|e| e.to_string())?;
        }
        phase_done(world, &ops, scenario, &name).await?;
        if !matches!(scenario, Scenario::Delete | Scenario::DeleteDuringCreate) {
            expect_inventory(world, &Inventory::one_of(scenario.kind()), "converged").await?;
            delete_and_wait(world, &ops, &name).await?;
        }
        expect_inventory(world, &Inventory::default(), "deleted").await
    }
    .await;
    ops.stop().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_seeded_points_over_create_update_and_delete_leaves_exactly_the_spec() {
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(13);
    let n = match std::env::var("CRASH_POINTS").ok().as_deref() {
        Some("all") => None,
        Some(n) => Some(n.parse().expect("CRASH_POINTS: a number or `all`")),
        None => Some(8),
    };
    let world = World::start().await;
    let reference = reference_calls(&world).await;
    for (scenario, calls) in &reference {
        println!("reference {scenario:?}: {}", calls.join(" "));
        assert!(!calls.is_empty(), "{scenario:?} made no AWS change");
    }
    let points = choose(all_points(&reference), n, seed);
    println!("seed {seed}: {} points", points.len());
    let mut failures = vec![];
    for (i, point) in points.iter().enumerate() {
        let started = std::time::Instant::now();
        let result = run_point(&world, point, i).await;
        println!("point {i:>3} {point}: {} in {:.0?}", if result.is_ok() { "ok" } else { "FAILED" }, started.elapsed());
        if let Err(e) = result {
            failures.push(format!("{point}: {e}"));
            break; // the world is no longer empty: later points would fail for this one's reason
        }
    }
    let failovers = points.iter().filter(|p| p.failover).count();
    println!(
        "crash consistency: seed {seed}, {} points ({failovers} failovers), {} failed",
        points.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
