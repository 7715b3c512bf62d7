//! (pure) The status a reconcile leaves behind: conditions from the plan's step reports (or from
//! the error that stopped it), the ids and counts observed or created. `lastTransitionTime` moves
//! only when a condition's status flips, so an unchanged world yields an equal status and no patch.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use std::time::Duration;

use super::{
    apply::Applied,
    plan::{Observed, Plan, StepState, count_connected},
};
use crate::{
    aws::{
        ecs::BundleSource,
        tags::{self, owned_by},
    },
    crd::{DefenderSecretStatus, EcsDefenderDeploymentStatus, reasons as r},
};

use crate::crd::conditions as c;

/// How a reconcile ended, as status needs to know it.
pub enum Outcome<'a> {
    /// The pipeline ran (possibly stopped by a failed action).
    Planned {
        uid: &'a str,
        observed: &'a Observed,
        plan: &'a Plan,
        applied: &'a Applied,
        suspended: bool,
        /// How long a wait may go without progress before it is `Stalled`.
        progress_deadline: Duration,
    },
    /// Stopped before planning by something the user must fix (bad spec, missing Secret, bad
    /// credentials): `Stalled`.
    Stalled { reason: &'static str, message: String },
    /// Stopped before planning by something passing (throttling, Console unreachable): retried.
    Retrying { reason: &'static str, message: String },
    /// Teardown in progress.
    Deleting { message: String },
}

pub fn build_status(
    prev: Option<&EcsDefenderDeploymentStatus>,
    generation: i64,
    cluster_name: Option<&str>,
    outcome: Outcome<'_>,
    now: Timestamp,
) -> EcsDefenderDeploymentStatus {
    let mut s = prev.cloned().unwrap_or_default();
    s.observed_generation = Some(generation);
    if let Some(n) = cluster_name {
        s.cluster_name = Some(n.to_string());
    }
    let mut conds = Conds { list: s.conditions.clone(), generation, now };
    match outcome {
        Outcome::Planned { uid, observed, plan, applied, suspended, progress_deadline } => {
            record_ids(&mut s, uid, observed, plan, applied);
            for (kind, step) in plan.steps.all() {
                conds.set(kind, step.state == StepState::Ready, step.reason, &step.message);
            }
            let steps_ready = plan.steps.all().iter().all(|(_, st)| st.state == StepState::Ready);
            let ready = steps_ready && plan.removing.is_none();
            let failed_step = plan.steps.all().into_iter().find(|(_, st)| st.state == StepState::Failed);
            // What is awaited: the first step not ready, else the removal of what the spec no longer names.
            let (pending_reason, pending_message) =
                match plan.steps.all().into_iter().find(|(_, st)| st.state != StepState::Ready) {
                    Some((_, step)) => (step.reason, step.message.clone()),
                    None => ("Removing", plan.removing.clone().unwrap_or_default()),
                };
            // Progress: an AWS change made, or what is awaited changed since the last reconcile. A
            // Console that does not answer is retried like a failing AWS call: no deadline.
            let waiting = applied.failed.is_none()
                && failed_step.is_none()
                && !ready
                && !suspended
                && observed.console_unavailable.is_none();
            let previously_awaited = prev
                .and_then(|p| p.conditions.iter().find(|cd| cd.type_ == c::RECONCILING && cd.status == "True"))
                .map(|cd| cd.message.as_str());
            s.last_progress_time = match prev.and_then(|p| p.last_progress_time.clone()) {
                Some(t) if waiting && !applied.changed() && previously_awaited == Some(pending_message.as_str()) => {
                    Some(t)
                }
                _ if waiting => Some(Time(now)),
                _ => None,
            };
            let waited =
                s.last_progress_time.as_ref().map(|t| now.duration_since(t.0).unsigned_abs()).unwrap_or_default();
            match (&applied.failed, failed_step) {
                (Some((action, err)), _) => {
                    let message = format!("{action}: {err}");
                    let reason = crate::error::aws_category(err);
                    conds.set(c::READY, false, reason, &message);
                    conds.set(c::RECONCILING, err.transient, reason, &message);
                    conds.set(c::STALLED, !err.transient, reason, if err.transient { "" } else { &message });
                }
                (None, Some((_, step))) => {
                    conds.set(c::READY, false, step.reason, &step.message);
                    conds.set(c::RECONCILING, false, step.reason, "");
                    conds.set(c::STALLED, true, step.reason, &step.message);
                }
                // Suspended: Ready tells what is observed, so GitOps tools see the real health
                // instead of waiting for a reconcile that will not come.
                (None, None) if suspended => {
                    let message = if ready {
                        "spec.suspend is set; nothing is changed, and everything holds".to_string()
                    } else {
                        format!("spec.suspend is set; nothing is changed ({pending_message})")
                    };
                    conds.set(c::READY, ready, r::SUSPENDED, &message);
                    conds.set(c::RECONCILING, false, r::SUSPENDED, "");
                    conds.set(c::STALLED, false, r::SUSPENDED, "");
                }
                (None, None) if ready => {
                    let msg = format!(
                        "{} instances, {} Defenders connected",
                        s.container_instances.unwrap_or_default(),
                        s.defenders_connected.unwrap_or_default()
                    );
                    conds.set(c::READY, true, r::READY, &msg);
                    conds.set(c::RECONCILING, false, r::READY, "");
                    conds.set(c::STALLED, false, r::READY, "");
                }
                (None, None) if waited > progress_deadline => {
                    let message = format!(
                        "no progress for {} minutes (progress deadline {} minutes): {pending_message}",
                        waited.as_secs() / 60,
                        progress_deadline.as_secs() / 60
                    );
                    conds.set(c::READY, false, r::PROGRESS_DEADLINE_EXCEEDED, &message);
                    conds.set(c::RECONCILING, false, r::PROGRESS_DEADLINE_EXCEEDED, "");
                    conds.set(c::STALLED, true, r::PROGRESS_DEADLINE_EXCEEDED, &message);
                }
                (None, None) => {
                    conds.set(c::READY, false, pending_reason, &pending_message);
                    conds.set(c::RECONCILING, true, pending_reason, &pending_message);
                    conds.set(c::STALLED, false, pending_reason, "");
                }
            }
        }
        Outcome::Stalled { reason, message } => {
            conds.set(c::READY, false, reason, &message);
            conds.set(c::RECONCILING, false, reason, "");
            conds.set(c::STALLED, true, reason, &message);
        }
        Outcome::Retrying { reason, message } => {
            conds.set(c::READY, false, reason, &message);
            conds.set(c::RECONCILING, true, reason, &message);
            conds.set(c::STALLED, false, reason, "");
        }
        Outcome::Deleting { message } => {
            conds.set(c::READY, false, r::DELETING, &message);
            conds.set(c::RECONCILING, true, r::DELETING, &message);
            conds.set(c::STALLED, false, r::DELETING, "");
        }
    }
    s.conditions = conds.list;
    s
}

/// Whether a status says a person must act.
pub fn is_stalled(s: &EcsDefenderDeploymentStatus) -> bool {
    s.conditions.iter().any(|cd| cd.type_ == c::STALLED && cd.status == "True")
}

/// Ids and counts: from what this reconcile created first, then from what it observed; an id
/// already recorded is kept when nothing newer is known.
fn record_ids(s: &mut EcsDefenderDeploymentStatus, uid: &str, o: &Observed, plan: &Plan, a: &Applied) {
    if let Some(arn) = a.cluster_arn.clone().or_else(|| o.cluster.as_ref().map(|c| c.arn.clone())) {
        s.cluster_arn = Some(arn);
    }
    // Only clusters we create carry our owner tag, so the tag proves who created it.
    if let Some(cl) = &o.cluster {
        s.cluster_created = Some(a.cluster_arn.is_some() || owned_by(&cl.tags, uid));
    } else if a.cluster_arn.is_some() {
        s.cluster_created = Some(true);
    }
    let w = &plan.workers;
    if let Some(id) = a.launch_template_id.clone().or_else(|| w.launch_template_id.clone()) {
        s.launch_template_id = Some(id);
    }
    if let Some(v) = a.launch_template_version.or(w.launch_template_version) {
        s.launch_template_version = Some(v);
    } else if a.launch_template_id.is_some() {
        s.launch_template_version = Some(1);
    }
    if w.launch_configuration_name.is_some() {
        s.launch_configuration_name = w.launch_configuration_name.clone();
    }
    if let Some(g) = o.auto_scaling_group.as_ref().filter(|g| owned_by(&g.tags, uid)) {
        s.auto_scaling_group_arn = Some(g.arn.clone());
    }
    if w.image_id.is_some() {
        s.image_id = w.image_id.clone();
    }
    if w.instances_up_to_date.is_some() {
        s.instances_up_to_date = w.instances_up_to_date;
    }
    // The secret the current revision takes the bundle from: as registered (or re-tagged) now, else
    // as the latest revision of ours says; none for a revision that carries the bundle itself.
    if a.defender_secret.is_some() {
        s.defender_secret = a.defender_secret.clone();
    } else if a.task_definition.is_some() {
        s.defender_secret = None;
    } else if let Some(td) = o.task_definition.as_ref().filter(|td| owned_by(&td.tags, uid)) {
        s.defender_secret = match &td.bundle {
            BundleSource::Secret(arn) => {
                Some(DefenderSecretStatus { arn: arn.clone(), version_id: td.tags.get(tags::SECRET_VERSION).cloned() })
            }
            _ => None,
        };
    }
    match (&a.task_definition, &o.task_definition) {
        (Some((arn, digest)), _) => {
            s.task_definition_arn = Some(arn.clone());
            s.task_definition_digest = Some(digest.clone());
            // Recorded only with what was registered, so a failed upgrade is never taken as done.
            if let Some(g) = &o.generated {
                s.console_version = Some(g.console_version.clone());
                if g.image.is_some() {
                    s.defender_image = g.image.clone();
                }
            }
        }
        (None, Some(td)) if owned_by(&td.tags, uid) => {
            s.task_definition_arn = Some(td.arn.clone());
            if let Some(d) = td.tags.get(tags::DIGEST) {
                s.task_definition_digest = Some(d.clone());
            }
            if let Some(v) = td.tags.get(tags::CONSOLE_VERSION) {
                s.console_version = Some(v.clone());
            }
        }
        _ => {}
    }
    if let Some(arn) =
        a.service_arn.clone().or_else(|| o.service.as_ref().filter(|s| s.status != "INACTIVE").map(|s| s.arn.clone()))
    {
        s.service_arn = Some(arn);
    }
    if o.cluster.is_some() {
        s.container_instances = Some(o.container_instances.iter().filter(|ci| ci.status == "ACTIVE").count() as i32);
        let current = o.service.as_ref().map(|s| s.task_definition.as_str());
        s.defenders_running = Some(
            o.tasks
                .iter()
                .filter(|t| t.last_status == "RUNNING" && Some(t.task_definition_arn.as_str()) == current)
                .count() as i32,
        );
    }
    if let Some(n) = count_connected(o) {
        s.defenders_connected = Some(n);
    }
    s.owned = plan.owned.clone();
}

struct Conds {
    list: Vec<Condition>,
    generation: i64,
    now: Timestamp,
}

impl Conds {
    fn set(&mut self, kind: &str, status: bool, reason: &str, message: &str) {
        let status = if status { "True" } else { "False" }.to_string();
        let reason = if reason.is_empty() { "Unknown" } else { reason }.to_string();
        let message: String = message.chars().take(1024).collect();
        match self.list.iter_mut().find(|c| c.type_ == kind) {
            Some(existing) => {
                if existing.status != status {
                    existing.last_transition_time = Time(self.now);
                }
                existing.status = status;
                existing.reason = reason;
                existing.message = message;
                existing.observed_generation = Some(self.generation);
            }
            None => self.list.push(Condition {
                type_: kind.to_string(),
                status,
                reason,
                message,
                observed_generation: Some(self.generation),
                last_transition_time: Time(self.now),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::plan::{StepReport, Steps};

    fn step(state: StepState, reason: &'static str) -> StepReport {
        StepReport { state, reason, message: format!("{reason} message") }
    }

    fn plan_with(defenders: StepState) -> Plan {
        let ready = || step(StepState::Ready, "Ok");
        Plan {
            actions: vec![],
            needs: Default::default(),
            steps: Steps {
                cluster: ready(),
                workers: ready(),
                task_definition: ready(),
                service: ready(),
                defenders: step(
                    defenders,
                    if defenders == StepState::Ready { "AllConnected" } else { "WaitingForDefenders" },
                ),
            },
            drift: vec![],
            workers: Default::default(),
            owned: Default::default(),
            removing: None,
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn build(prev: Option<&EcsDefenderDeploymentStatus>, plan: &Plan, now: Timestamp) -> EcsDefenderDeploymentStatus {
        build_with(prev, plan, now, false)
    }

    fn build_with(
        prev: Option<&EcsDefenderDeploymentStatus>,
        plan: &Plan,
        now: Timestamp,
        suspended: bool,
    ) -> EcsDefenderDeploymentStatus {
        let observed = Observed::default();
        let applied = Applied::default();
        build_status(
            prev,
            1,
            Some("demo"),
            Outcome::Planned {
                uid: "u",
                observed: &observed,
                plan,
                applied: &applied,
                suspended,
                progress_deadline: Duration::from_secs(900),
            },
            now,
        )
    }

    fn cond<'a>(s: &'a EcsDefenderDeploymentStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn an_unchanged_world_gives_an_equal_status_later() {
        let plan = plan_with(StepState::Progressing);
        let first = build(None, &plan, t(0));
        let again = build(Some(&first), &plan, t(60));
        assert_eq!(first, again, "only time passed; no patch must follow");
        assert_eq!(cond(&first, c::READY).status, "False");
        assert_eq!(cond(&first, c::READY).reason, "WaitingForDefenders");
        assert_eq!(cond(&first, c::RECONCILING).status, "True");
        assert_eq!(first.observed_generation, Some(1));
    }

    #[test]
    fn last_transition_time_moves_only_when_status_flips() {
        let first = build(None, &plan_with(StepState::Progressing), t(0));
        let ready = build(Some(&first), &plan_with(StepState::Ready), t(10));
        assert_eq!(cond(&ready, c::READY).status, "True");
        assert_eq!(cond(&ready, c::READY).last_transition_time.0, t(10));
        // ClusterReady was True before and still is: its time stays.
        assert_eq!(cond(&ready, c::CLUSTER_READY).last_transition_time.0, t(0));
        // The message changes without a flip: the time stays too.
        let mut p = plan_with(StepState::Ready);
        p.steps.cluster.message = "other words".into();
        let later = build(Some(&ready), &p, t(20));
        assert_eq!(cond(&later, c::CLUSTER_READY).last_transition_time.0, t(0));
        assert_eq!(cond(&later, c::CLUSTER_READY).message, "other words");
    }

    #[test]
    fn a_failed_step_is_stalled_and_not_reconciling() {
        let mut p = plan_with(StepState::Ready);
        p.steps.workers = step(StepState::Failed, "ImageNotFound");
        let s = build(None, &p, t(0));
        assert_eq!(
            (cond(&s, c::STALLED).status.as_str(), cond(&s, c::STALLED).reason.as_str()),
            ("True", "ImageNotFound")
        );
        assert_eq!(cond(&s, c::RECONCILING).status, "False");
        assert_eq!(cond(&s, c::READY).status, "False");
    }

    #[test]
    fn stalled_and_retrying_outcomes() {
        let s = build_status(
            None,
            2,
            None,
            Outcome::Stalled { reason: "SecretNotFound", message: "Secret default/x not found".into() },
            t(0),
        );
        assert_eq!(cond(&s, c::STALLED).status, "True");
        assert_eq!(cond(&s, c::READY).message, "Secret default/x not found");
        let s = build_status(
            Some(&s),
            2,
            None,
            Outcome::Retrying { reason: "ConsoleUnavailable", message: "timed out".into() },
            t(5),
        );
        assert_eq!(cond(&s, c::STALLED).status, "False");
        assert_eq!(cond(&s, c::RECONCILING).status, "True");
        assert_eq!(cond(&s, c::STALLED).last_transition_time.0, t(5));
    }

    #[test]
    fn a_wait_without_progress_stalls_after_the_deadline() {
        let plan = plan_with(StepState::Progressing);
        let first = build(None, &plan, t(0));
        assert_eq!(first.last_progress_time.as_ref().map(|t| t.0), Some(t(0)));
        let later = build(Some(&first), &plan, t(600));
        assert_eq!(cond(&later, c::RECONCILING).status, "True", "within the deadline");
        let overdue = build(Some(&later), &plan, t(901));
        assert_eq!(cond(&overdue, c::STALLED).status, "True");
        assert_eq!(cond(&overdue, c::STALLED).reason, "ProgressDeadlineExceeded");
        assert!(cond(&overdue, c::STALLED).message.contains("WaitingForDefenders message"), "quotes the wait");
        assert_eq!(cond(&overdue, c::RECONCILING).status, "False");
        // Progress (what is awaited changes) starts the clock again.
        let mut moved = plan_with(StepState::Progressing);
        moved.steps.defenders.message = "1 of 2 instances have a connected Defender".into();
        let s = build(Some(&later), &moved, t(901));
        assert_eq!(cond(&s, c::RECONCILING).status, "True");
        assert_eq!(s.last_progress_time.as_ref().map(|t| t.0), Some(t(901)));
        // Ready clears it.
        let ready = build(Some(&s), &plan_with(StepState::Ready), t(950));
        assert_eq!(ready.last_progress_time, None);
    }

    #[test]
    fn suspended_reports_the_observed_health() {
        let build_suspended =
            |prev: Option<&EcsDefenderDeploymentStatus>, plan: &Plan| build_with(prev, plan, t(0), true);
        let s = build_suspended(None, &plan_with(StepState::Ready));
        assert_eq!((cond(&s, c::READY).status.as_str(), cond(&s, c::READY).reason.as_str()), ("True", "Suspended"));
        assert_eq!(cond(&s, c::RECONCILING).status, "False");
        assert_eq!(cond(&s, c::STALLED).status, "False");
        let s = build_suspended(Some(&s), &plan_with(StepState::Progressing));
        assert_eq!((cond(&s, c::READY).status.as_str(), cond(&s, c::READY).reason.as_str()), ("False", "Suspended"));
        assert_eq!(s.last_progress_time, None, "a suspended resource waits for nothing");
    }
}
