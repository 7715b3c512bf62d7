//! The DAEMON service scheduler, as a pure plan over one cluster's state: one task of the service's
//! current revision on every ACTIVE container instance; tasks of older revisions replaced (one
//! instance per service per round, a rolling update); no tasks on DRAINING instances; the tasks of
//! deleted services stopped.

use std::collections::{BTreeMap, BTreeSet};

/// An ACTIVE DAEMON service.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonService {
    pub name: String,
    /// Full ARN of the current revision.
    pub task_definition: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub arn: String,
    /// ACTIVE (false: DRAINING).
    pub active: bool,
}

/// A task that is not stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub arn: String,
    /// `service:<name>` for service tasks.
    pub group: String,
    pub task_definition: String,
    pub container_instance: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Stop { task: String, reason: String },
    Start { service: String, task_definition: String, container_instance: String },
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
        for inst in &active_instances {
            let here = by_instance.get(inst).cloned().unwrap_or_default();
            let (current, old): (Vec<&Task>, Vec<&Task>) =
                here.into_iter().partition(|t| t.task_definition == d.task_definition);
            let start = Action::Start {
                service: d.name.clone(),
                task_definition: d.task_definition.clone(),
                container_instance: inst.to_string(),
            };
            if current.is_empty() {
                if old.is_empty() {
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
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(arn: &str, active: bool) -> Instance {
        Instance { arn: arn.into(), active }
    }

    fn task(arn: &str, svc: &str, td: &str, ci: &str) -> Task {
        Task {
            arn: arn.into(),
            group: format!("service:{svc}"),
            task_definition: td.into(),
            container_instance: ci.into(),
        }
    }

    fn daemon(td: &str) -> Vec<DaemonService> {
        vec![DaemonService { name: "d".into(), task_definition: td.into() }]
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
    fn duplicates_are_stopped() {
        let instances = [inst("ci1", true)];
        let tasks = [task("t1", "d", "td1", "ci1"), task("t2", "d", "td1", "ci1")];
        let actions = plan(&daemon("td1"), &active(&["d"]), &instances, &tasks);
        assert_eq!(
            actions,
            vec![Action::Stop { task: "t2".into(), reason: "More than one daemon task on the instance".into() }]
        );
    }
}
