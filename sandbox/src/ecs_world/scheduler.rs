//! The DAEMON service scheduler, as a pure plan over one cluster's state: one task of the service's
//! current revision on every ACTIVE container instance; tasks of older revisions (or started before
//! a forced new deployment) replaced (one instance per service per round, a rolling update); no tasks on DRAINING instances; the tasks of
//! deleted services stopped.
//!
//! Placement is checked as ECS checks it: an instance whose agent is disconnected gets no task; a
//! task needs the instance's architecture and enough CPU and memory left (registered minus what
//! the instance's other tasks reserve). A task that fits nowhere becomes a service event with ECS's
//! wording ([`unable_to_place`]).

use std::collections::{BTreeMap, BTreeSet};

use super::instance_types::Resources;

/// An ACTIVE DAEMON service.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonService {
    pub name: String,
    /// Full ARN of the current revision.
    pub task_definition: String,
    /// What one task of the current revision reserves.
    pub requires: Resources,
    /// `runtimePlatform.cpuArchitecture` in EC2's spelling (`x86_64`, `arm64`); `None`: any.
    pub architecture: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub arn: String,
    /// ACTIVE (false: DRAINING).
    pub active: bool,
    /// Whether its agent is connected (it is not once the instance lost its way to ECS).
    pub connected: bool,
    /// What the agent registered; `None`: unknown, no resource check.
    pub registered: Option<Resources>,
    /// `x86_64` or `arm64`.
    pub architecture: String,
}

impl Instance {
    /// An ACTIVE, connected x86_64 instance with no resource limit (tests of the rolling logic).
    pub fn unlimited(arn: &str, active: bool) -> Instance {
        Instance {
            arn: arn.to_string(),
            active,
            connected: true,
            registered: None,
            architecture: super::instance_types::X86_64.to_string(),
        }
    }
}

/// A task that is not stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub arn: String,
    /// `service:<name>` for service tasks.
    pub group: String,
    pub task_definition: String,
    pub container_instance: String,
    /// What it reserves on its instance.
    pub reserves: Resources,
    /// Started before its service's newest deployment (`forceNewDeployment`): replaced like a task
    /// of an older revision.
    pub outdated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Stop {
        task: String,
        reason: String,
    },
    Start {
        service: String,
        task_definition: String,
        container_instance: String,
    },
    /// A task of `service` fits on no instance that lacks one; `message` is ECS's service event.
    Unplaceable {
        service: String,
        message: String,
    },
}

/// Why a task does not fit on one instance, as ECS words it in "The closest matching
/// container-instance ... <reason>".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misfit {
    Agent,
    Architecture,
    Cpu,
    Memory,
}

/// ECS's service event for a task that cannot be placed (service event messages in the ECS
/// developer guide): the closest instance and why it does not fit.
pub fn unable_to_place(service: &str, container_instance_arn: &str, misfit: Misfit) -> String {
    let id = container_instance_arn.rsplit('/').next().unwrap_or(container_instance_arn);
    let why = match misfit {
        Misfit::Agent => "encountered error \"AGENT\"".to_string(),
        Misfit::Architecture => "is missing an attribute required by your task".to_string(),
        Misfit::Cpu => "has insufficient CPU units available".to_string(),
        Misfit::Memory => "has insufficient memory available".to_string(),
    };
    format!(
        "service {service} was unable to place a task because no container instance met all of its requirements. \
         The closest matching container-instance {id} {why}. For more information, see the Troubleshooting section."
    )
}

/// Why a task needing `requires` does not fit on `inst`, given what other tasks reserve there.
fn misfit(inst: &Instance, d: &DaemonService, reserved_by_others: Resources) -> Option<Misfit> {
    if !inst.connected {
        return Some(Misfit::Agent);
    }
    if d.architecture.as_deref().is_some_and(|a| !a.eq_ignore_ascii_case(&inst.architecture)) {
        return Some(Misfit::Architecture);
    }
    let available = inst.registered?.minus(&reserved_by_others);
    if d.requires.memory > available.memory {
        Some(Misfit::Memory)
    } else if d.requires.cpu > available.cpu {
        Some(Misfit::Cpu)
    } else {
        None
    }
}

/// What the scheduler does in one round. `active_services` names every ACTIVE service of the
/// cluster (any strategy); tasks of services not in it are stopped.
pub fn plan(
    daemons: &[DaemonService],
    active_services: &BTreeSet<String>,
    instances: &[Instance],
    tasks: &[Task],
) -> Vec<Action> {
    let mut actions = Vec::new();
    let stop = |t: &Task, reason: &str| Action::Stop { task: t.arn.clone(), reason: reason.to_string() };
    let active_instances: BTreeSet<&str> = instances.iter().filter(|i| i.active).map(|i| i.arn.as_str()).collect();
    // Tasks on instances whose agent is disconnected keep running, as on ECS (nothing can stop them).
    let daemon_names: BTreeSet<&str> = daemons.iter().map(|d| d.name.as_str()).collect();
    for t in tasks {
        let Some(service) = t.group.strip_prefix("service:") else { continue };
        if !active_services.contains(service) {
            actions.push(stop(t, "Service deleted"));
        } else if daemon_names.contains(service) && !active_instances.contains(t.container_instance.as_str()) {
            actions.push(stop(t, "Container instance is draining"));
        }
    }
    for d in daemons {
        let group = format!("service:{}", d.name);
        let mut by_instance: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
        for t in tasks.iter().filter(|t| t.group == group) {
            by_instance.entry(t.container_instance.as_str()).or_default().push(t);
        }
        let mut replaced = false;
        let mut unplaced: Option<(String, Misfit)> = None;
        for inst in instances.iter().filter(|i| i.active) {
            let here = by_instance.get(inst.arn.as_str()).cloned().unwrap_or_default();
            let (current, old): (Vec<&Task>, Vec<&Task>) =
                here.into_iter().partition(|t| t.task_definition == d.task_definition && !t.outdated);
            let start = Action::Start {
                service: d.name.clone(),
                task_definition: d.task_definition.clone(),
                container_instance: inst.arn.clone(),
            };
            if current.is_empty() {
                // What the instance's other tasks reserve (this service's old tasks are replaced).
                let others = tasks.iter().filter(|t| t.container_instance == inst.arn && t.group != group).fold(
                    Resources::default(),
                    |acc, t| Resources { cpu: acc.cpu + t.reserves.cpu, memory: acc.memory + t.reserves.memory },
                );
                let fit = misfit(inst, d, others);
                if let Some(why) = fit {
                    // An old task keeps running where the new revision does not fit.
                    unplaced.get_or_insert((inst.arn.clone(), why));
                } else if old.is_empty() {
                    actions.push(start);
                } else if !replaced {
                    // Rolling update: DAEMON's maximumPercent is 100, so stop first, then start.
                    replaced = true;
                    actions.extend(old.iter().map(|t| stop(t, "Replaced by a new deployment")));
                    actions.push(start);
                }
            } else {
                actions.extend(old.iter().map(|t| stop(t, "Replaced by a new deployment")));
                actions.extend(current.iter().skip(1).map(|t| stop(t, "More than one daemon task on the instance")));
            }
        }
        if let Some((arn, why)) = unplaced {
            actions.push(Action::Unplaceable { service: d.name.clone(), message: unable_to_place(&d.name, &arn, why) });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(arn: &str, active: bool) -> Instance {
        Instance::unlimited(arn, active)
    }

    fn task(arn: &str, svc: &str, td: &str, ci: &str) -> Task {
        Task {
            arn: arn.into(),
            group: format!("service:{svc}"),
            task_definition: td.into(),
            container_instance: ci.into(),
            reserves: Resources { cpu: 0, memory: 512 },
            outdated: false,
        }
    }

    fn daemon(td: &str) -> Vec<DaemonService> {
        vec![DaemonService {
            name: "d".into(),
            task_definition: td.into(),
            requires: Resources { cpu: 0, memory: 512 },
            architecture: None,
        }]
    }

    fn active(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn start(ci: &str, td: &str) -> Action {
        Action::Start { service: "d".into(), task_definition: td.into(), container_instance: ci.into() }
    }

    #[test]
    fn one_task_per_active_instance() {
        let instances = [inst("ci1", true), inst("ci2", true), inst("ci3", false)];
        let tasks = [task("t1", "d", "td1", "ci1")];
        assert_eq!(plan(&daemon("td1"), &active(&["d"]), &instances, &tasks), vec![start("ci2", "td1")]);
        let tasks = [task("t1", "d", "td1", "ci1"), task("t2", "d", "td1", "ci2")];
        assert!(plan(&daemon("td1"), &active(&["d"]), &instances, &tasks).is_empty(), "converged");
    }

    #[test]
    fn draining_instances_and_deleted_services_lose_their_tasks() {
        let instances = [inst("ci1", false)];
        let tasks =
            [task("t1", "d", "td1", "ci1"), task("t2", "gone", "td9", "ci1"), task("t3", "replica", "td", "ci1")];
        let actions = plan(&daemon("td1"), &active(&["d", "replica"]), &instances, &tasks);
        assert_eq!(
            actions,
            vec![
                Action::Stop { task: "t1".into(), reason: "Container instance is draining".into() },
                Action::Stop { task: "t2".into(), reason: "Service deleted".into() },
            ]
        );
    }

    #[test]
    fn new_revision_rolls_one_instance_per_round() {
        let instances = [inst("ci1", true), inst("ci2", true)];
        let tasks = [task("t1", "d", "td1", "ci1"), task("t2", "d", "td1", "ci2")];
        let actions = plan(&daemon("td2"), &active(&["d"]), &instances, &tasks);
        assert_eq!(
            actions,
            vec![
                Action::Stop { task: "t1".into(), reason: "Replaced by a new deployment".into() },
                start("ci1", "td2")
            ]
        );
        let tasks = [task("t3", "d", "td2", "ci1"), task("t2", "d", "td1", "ci2")];
        let actions = plan(&daemon("td2"), &active(&["d"]), &instances, &tasks);
        assert_eq!(
            actions,
            vec![
                Action::Stop { task: "t2".into(), reason: "Replaced by a new deployment".into() },
                start("ci2", "td2")
            ]
        );
    }

    #[test]
    fn a_forced_deployment_rolls_the_same_revision() {
        let instances = [inst("ci1", true), inst("ci2", true)];
        let old = |t: Task| Task { outdated: true, ..t };
        let tasks = [old(task("t1", "d", "td1", "ci1")), old(task("t2", "d", "td1", "ci2"))];
        let actions = plan(&daemon("td1"), &active(&["d"]), &instances, &tasks);
        assert_eq!(
            actions,
            vec![
                Action::Stop { task: "t1".into(), reason: "Replaced by a new deployment".into() },
                start("ci1", "td1")
            ],
            "one instance per round, as for a new revision"
        );
        let tasks = [task("t3", "d", "td1", "ci1"), old(task("t2", "d", "td1", "ci2"))];
        let actions = plan(&daemon("td1"), &active(&["d"]), &instances, &tasks);
        assert_eq!(
            actions,
            vec![
                Action::Stop { task: "t2".into(), reason: "Replaced by a new deployment".into() },
                start("ci2", "td1")
            ]
        );
    }

    #[test]
    fn duplicates_are_stopped() {
        let instances = [inst("ci1", true)];
        let tasks = [task("t1", "d", "td1", "ci1"), task("t2", "d", "td1", "ci1")];
        let actions = plan(&daemon("td1"), &active(&["d"]), &instances, &tasks);
        assert_eq!(
            actions,
            vec![Action::Stop { task: "t2".into(), reason: "More than one daemon task on the instance".into() }]
        );
    }

    #[test]
    fn placement_honours_memory_the_agent_and_the_architecture() {
        let small = Instance { registered: Some(Resources { cpu: 1024, memory: 480 }), ..inst("ci1", true) };
        let full = Instance {
            registered: Some(Resources { cpu: 2048, memory: 1000 }),
            ..inst("arn:aws:ecs:r:1:container-instance/c/ci2", true)
        };
        let other = Task {
            reserves: Resources { cpu: 0, memory: 400 },
            ..task("t9", "other", "tdx", "arn:aws:ecs:r:1:container-instance/c/ci2")
        };
        let actions =
            plan(&daemon("td1"), &active(&["d", "other"]), std::slice::from_ref(&full), std::slice::from_ref(&other));
        assert_eq!(
            actions,
            vec![start("arn:aws:ecs:r:1:container-instance/c/ci2", "td1")],
            "1000 - 400 leaves room for 512"
        );
        let big_other = Task { reserves: Resources { cpu: 0, memory: 600 }, ..other.clone() };
        let actions = plan(&daemon("td1"), &active(&["d", "other"]), &[full], &[big_other]);
        assert_eq!(
            actions,
            vec![Action::Unplaceable {
                service: "d".into(),
                message:
                    "service d was unable to place a task because no container instance met all of its requirements. \
                          The closest matching container-instance ci2 has insufficient memory available. \
                          For more information, see the Troubleshooting section."
                        .into()
            }]
        );
        let actions = plan(&daemon("td1"), &active(&["d"]), &[small], &[]);
        assert!(
            matches!(&actions[..], [Action::Unplaceable { message, .. }] if message.contains("insufficient memory"))
        );
        // CPU counts like memory: a task reserving 1024 units does not fit beside one using 1536 of 2048.
        let mut cpu_hungry = daemon("td1");
        cpu_hungry[0].requires = Resources { cpu: 1024, memory: 128 };
        let busy = Task { reserves: Resources { cpu: 1536, memory: 0 }, ..other.clone() };
        let roomy = Instance {
            registered: Some(Resources { cpu: 2048, memory: 1000 }),
            ..inst("arn:aws:ecs:r:1:container-instance/c/ci2", true)
        };
        let actions = plan(&cpu_hungry, &active(&["d", "other"]), std::slice::from_ref(&roomy), &[busy]);
        assert!(
            matches!(&actions[..], [Action::Unplaceable { message, .. }] if message.contains("insufficient CPU units")),
            "{actions:?}"
        );
        let idle = Task { reserves: Resources { cpu: 512, memory: 0 }, ..other };
        let actions = plan(&cpu_hungry, &active(&["d", "other"]), &[roomy], &[idle]);
        assert_eq!(actions, vec![start("arn:aws:ecs:r:1:container-instance/c/ci2", "td1")]);
        let lost = Instance { connected: false, ..inst("ci3", true) };
        let actions = plan(&daemon("td1"), &active(&["d"]), &[lost], &[]);
        assert!(matches!(&actions[..], [Action::Unplaceable { message, .. }] if message.contains("\"AGENT\"")));
        let arm = Instance { architecture: "arm64".into(), ..inst("ci4", true) };
        let mut x86 = daemon("td1");
        x86[0].architecture = Some("x86_64".into());
        let actions = plan(&x86, &active(&["d"]), &[arm], &[]);
        assert!(
            matches!(&actions[..], [Action::Unplaceable { message, .. }] if message.contains("missing an attribute"))
        );
    }
}
