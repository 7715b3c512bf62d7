//! Quiet reconciles. A *glance* is the few cheap reads that change whenever anything a resource
//! waits for or guards changes: the cluster's counts and the Auto Scaling group, launch template and
//! AMI parameter (batched across the fleet, [`crate::aws::fleet`]), the service (one
//! DescribeServices, the only read that is truly per cluster) and the Console's version and
//! connected Defenders (one paged list per Console, shared). The [`Memo`] remembers what the last
//! full pass saw of those parts ([`View::observed`]; the glance taken before it when the pass did
//! not see them all); when that pass changed nothing and the next glance is the same, the
//! reconcile stops there: no full observation, no status patch. Anything else (a new generation,
//! a changed Secret, a pass that changed something, a deep resync due, a progress deadline
//! reached) runs the whole pipeline.
//!
//! The baseline is what the full pass judged (or a glance taken before it), so a change that
//! lands after it shows as a different glance next time: a glance can make a reconcile late,
//! never blind.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    observed::{LaunchInputs, Observed, Prerequisites},
    plan::{Action, Plan, StepState},
};
use crate::{
    aws::{
        AwsClients, AwsError, AwsTarget, ec2::LaunchTemplateVersion, ecs::TaskDefinition, iam::Role,
        secretsmanager::Secret,
    },
    crd::WorkerKind,
    prisma::{ConsoleClient, Defender},
    validate::{Desired, ImageSource},
};

/// Which reads a glance makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Looks {
    pub cluster: bool,
    pub service: bool,
    pub group: bool,
    pub launch_template: bool,
    pub image: bool,
    pub console: bool,
    /// A Ready resource's look: the cluster's task and service counts do not count (see
    /// `View::fingerprint`).
    pub ready: bool,
}

impl Looks {
    /// Everything a Ready resource guards (drift shows in one of these).
    pub fn steady(desired: &Desired) -> Self {
        let workers = desired.workers.as_ref();
        Looks {
            cluster: true,
            service: true,
            group: workers.is_some(),
            launch_template: workers.is_some_and(|w| w.kind == WorkerKind::LaunchTemplate),
            image: workers.is_some_and(|w| matches!(w.image, ImageSource::SsmParameter(_))),
            console: true,
            ready: true,
        }
    }

    /// Only what the steps still in progress wait for (AWS's waiters poll one thing, too).
    pub fn waiting(desired: &Desired, plan: &Plan) -> Self {
        let s = &plan.steps;
        let progressing = |st: StepState| st == StepState::Progressing;
        let workers = progressing(s.workers.state) && desired.workers.is_some();
        // Tasks start only on registered instances: while instances are awaited, the cluster's
        // counts show the next step, not the service (a full look each resync still reads it).
        let service = progressing(s.service.state) && !workers;
        Looks {
            // Instances registering and tasks starting show in the cluster's counts.
            cluster: true,
            service,
            group: workers,
            launch_template: false,
            image: false,
            // The Console generates the task definition and lists the Defenders.
            console: progressing(s.task_definition.state) || progressing(s.defenders.state),
            ready: false,
        }
    }
}

/// (IO) The glance's fingerprint. Console failures do not fail it: they make it differ, and the
/// full pass deals with them.
pub async fn take(
    aws: &AwsClients,
    consoles: &ConsoleGlances,
    console: &Arc<ConsoleClient>,
    desired: &Desired,
    looks: Looks,
    not_before: Instant,
) -> Result<Glance, AwsError> {
    let mut view = View::default();
    let mut console_version = None;
    if looks.cluster {
        view.cluster = Some(aws.glance_cluster(&desired.cluster_name, not_before).await?);
    }
    if looks.service {
        view.service = Some(aws.describe_service(&desired.cluster_name, &desired.service_name).await?);
    }
    if let Some(w) = desired.workers.as_ref() {
        if looks.group {
            view.group = Some(aws.glance_auto_scaling_group(&w.asg_name, not_before).await?);
        }
        if looks.launch_template {
            view.launch_template = Some(aws.glance_launch_template(&w.name, not_before).await?);
        }
        if looks.image
            && let ImageSource::SsmParameter(p) = &w.image
        {
            view.image = Some(aws.glance_ssm_parameter(p, not_before).await?);
        }
    }
    if looks.console {
        view.console = Some(match consoles.get(console, not_before).await {
            (asked, Some((version, defenders))) => {
                console_version = Some((version.clone(), asked));
                Some((version, connected_hosts(desired, &defenders)))
            }
            // Never equal to an earlier glance: the full pass finds out what is wrong.
            (_, None) => None,
        });
    }
    let fingerprint = view.fingerprint(looks).unwrap_or_else(|| {
        let mut h = DefaultHasher::new();
        Instant::now().hash(&mut h);
        h.finish()
    });
    Ok(Glance { fingerprint, service: view.service, console_version })
}

/// The hosts of the cluster's connected Defenders in a Console's list. Defenders report the
/// cluster override when one is set (as in the full observation).
fn connected_hosts(desired: &Desired, defenders: &[Defender]) -> BTreeSet<String> {
    connected_hosts_of(defender_cluster(desired), defenders)
}

/// The cluster name a resource's Defenders report: the generator's override, else the ECS cluster's.
pub fn defender_cluster(desired: &Desired) -> &str {
    desired.generator_options.get("cluster").and_then(|c| c.as_str()).unwrap_or(&desired.cluster_name)
}

/// The hosts of the connected Defenders reporting `cluster`.
pub fn connected_hosts_of(cluster: &str, defenders: &[Defender]) -> BTreeSet<String> {
    defenders.iter().filter(|d| d.connected && d.cluster == cluster).map(|d| d.hostname.clone()).collect()
}

/// What a glance compares: each part `None` when not looked at (the Console's inner `None`: it
/// did not answer).
#[derive(Debug, Default)]
pub struct View {
    cluster: Option<Option<crate::aws::ecs::Cluster>>,
    service: Option<Option<crate::aws::ecs::Service>>,
    group: Option<Option<crate::aws::autoscaling::AutoScalingGroup>>,
    launch_template: Option<Option<crate::aws::ec2::LaunchTemplate>>,
    image: Option<Option<String>>,
    console: Option<Option<(String, BTreeSet<String>)>>,
}

impl View {
    /// The same parts as a full pass saw them: what it judged is the baseline the next glance is
    /// compared with (a change between the glance and the full pass is then not looked at twice).
    /// `None` when the pass did not see every part `looks` names.
    pub fn observed(desired: &Desired, o: &Observed, looks: Looks) -> Option<u64> {
        let cluster = o.cluster.clone()?; // no cluster: nothing else was looked at
        let workers = desired.workers.as_ref();
        let image = match workers.map(|w| &w.image) {
            Some(ImageSource::SsmParameter(_)) if looks.image => {
                Some(Some(o.launch_inputs.as_ref()?.image_id.clone().ok()?))
            }
            _ => None,
        };
        let console = match looks.console {
            true => {
                let version = o.console_version.clone()?;
                Some(Some((version, connected_hosts(desired, o.defenders.as_deref()?))))
            }
            false => None,
        };
        let view = View {
            cluster: looks.cluster.then_some(Some(cluster)),
            service: looks.service.then(|| o.service.clone()),
            group: (looks.group && workers.is_some()).then(|| o.auto_scaling_group.clone()),
            launch_template: (looks.launch_template && workers.is_some()).then(|| o.launch_template.clone()),
            image,
            console,
        };
        view.fingerprint(looks)
    }

    /// `None` when the Console was looked at and did not answer (never equal to anything).
    fn fingerprint(&self, looks: Looks) -> Option<u64> {
        let mut h = DefaultHasher::new();
        looks.hash(&mut h);
        if let Some(c) = &self.cluster {
            // Ready, the service's counts are our tasks': the cluster's task and service counts also
            // move with whatever else runs in it (an adopted cluster's own workloads), which is no
            // reason for a full pass. While waiting they are how tasks starting show (and they may
            // catch up with the service's only later: the full pass lists tasks by them).
            match looks.ready {
                true => c.as_ref().map(|c| (&c.status, c.registered_container_instances)).hash(&mut h),
                false => c
                    .as_ref()
                    .map(|c| {
                        (
                            &c.status,
                            c.registered_container_instances,
                            c.active_services,
                            c.running_tasks,
                            c.pending_tasks,
                        )
                    })
                    .hash(&mut h),
            }
        }
        if let Some(s) = &self.service {
            s.as_ref()
                .map(|s| {
                    let deployments: Vec<_> = s
                        .deployments
                        .iter()
                        .map(|d| (&d.status, &d.task_definition, &d.rollout_state, d.running))
                        .collect();
                    (&s.arn, &s.status, &s.task_definition, s.desired, s.running, deployments)
                })
                .hash(&mut h);
        }
        if let Some(g) = &self.group {
            g.as_ref()
                .map(|g| {
                    let instances: Vec<_> = g
                        .instances
                        .iter()
                        .map(|i| (&i.id, &i.lifecycle_state, &i.launch_template_version, &i.launch_configuration_name))
                        .collect();
                    let launch = (&g.launch_template_id, &g.launch_template_version, &g.launch_configuration_name);
                    ((g.min_size, g.max_size, g.desired_capacity), instances, &g.subnet_ids, launch, &g.status)
                })
                .hash(&mut h);
        }
        if let Some(lt) = &self.launch_template {
            lt.as_ref().map(|t| (&t.id, t.default_version, t.latest_version)).hash(&mut h);
        }
        if let Some(i) = &self.image {
            i.hash(&mut h);
        }
        if let Some(c) = &self.console {
            c.as_ref()?.hash(&mut h);
        }
        Some(h.finish())
    }
}

/// A glance: its fingerprint, and the service and Console version as it read them (the full pass
/// that may follow takes them rather than asking again).
#[derive(Debug)]
pub struct Glance {
    pub fingerprint: u64,
    pub service: Option<Option<crate::aws::ecs::Service>>,
    /// The Console's version, and when the shared view holding it was asked for.
    pub console_version: Option<(String, Instant)>,
}

/// What the full pass depends on besides the spec's generation: the Secrets' contents (the
/// Console and AWS clients are per credentials) and the proxy credentials in the options.
pub fn inputs_key(desired: &Desired, target: &AwsTarget, console: &Arc<ConsoleClient>) -> u64 {
    let mut h = DefaultHasher::new();
    target.key().hash(&mut h);
    (Arc::as_ptr(console) as usize).hash(&mut h);
    desired.generator_options.to_string().hash(&mut h);
    h.finish()
}

type ConsoleView = (String, Arc<Vec<Defender>>);

/// One Console answer (version and connected Defenders) shared by every resource using that
/// Console, refreshed at most as often as asked.
#[derive(Default)]
pub struct ConsoleGlances {
    views: Mutex<HashMap<usize, Arc<ConsoleSlot>>>,
}

#[derive(Default)]
struct ConsoleSlot {
    view: Mutex<Option<(Instant, Option<ConsoleView>)>>,
    flight: tokio::sync::Mutex<()>,
}

impl ConsoleSlot {
    fn fresh(&self, not_before: Instant) -> Option<(Instant, Option<ConsoleView>)> {
        self.view.lock().unwrap().as_ref().filter(|(at, _)| *at >= not_before).cloned()
    }
}

impl ConsoleGlances {
    /// The view, and when it was asked for; `None` when the Console does not answer (or refuses).
    pub(crate) async fn get(
        &self,
        console: &Arc<ConsoleClient>,
        not_before: Instant,
    ) -> (Instant, Option<ConsoleView>) {
        let slot = self.views.lock().unwrap().entry(Arc::as_ptr(console) as usize).or_default().clone();
        if let Some(v) = slot.fresh(not_before) {
            return v;
        }
        let _flight = slot.flight.lock().await;
        if let Some(v) = slot.fresh(not_before) {
            return v;
        }
        let asked = Instant::now(); // what the answer shows is as of when it was asked
        let version = console.guarded(console.version()).await.ok().and_then(Result::ok);
        let view = match version {
            Some(version) => match console.guarded(console.defenders(None, Some(true))).await {
                Ok(Ok(defenders)) => Some((version, Arc::new(defenders))),
                _ => None,
            },
            None => None,
        };
        *slot.view.lock().unwrap() = Some((asked, view.clone()));
        (asked, view)
    }
}

/// What a full pass may take from the pass before instead of asking AWS again: what only this
/// resource changes (its task definition, the install bundle's secret, its execution role and
/// policy), what the spec fixes (its subnets and security groups) and what never changes (a
/// launch-template version). Anything this resource changes is dropped from it. Drift in these
/// (a deregistered revision, an edited policy, a changed secret, a new default subnet) is seen at
/// the deep resync, which recalls nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recall {
    pub task_definition: Option<Option<TaskDefinition>>,
    pub defender_secret: Option<Option<Secret>>,
    pub execution_role: Option<(Option<Role>, Option<serde_json::Value>)>,
    /// (template id, its default version as read).
    pub launch_template_default: Option<(String, LaunchTemplateVersion)>,
    /// The launch inputs but the AMI, which is read each pass.
    pub network: Option<LaunchInputs>,
    /// The instance type, profile and key pair found, when they were (the names taken are
    /// judged again from the pass's own reads).
    pub instance_checks: Option<Prerequisites>,
}

impl Recall {
    /// What the pass read (with the cluster there, describe_world read all of it) and `actions`,
    /// all carried out, left as it was.
    pub fn of(desired: &Desired, o: &Observed, actions: &[Action]) -> Self {
        let mut r = Recall::default();
        if o.cluster.is_some() {
            r.task_definition = Some(o.task_definition.clone());
            if let Some(want) = desired.secrets.secrets_manager() {
                r.defender_secret = Some(o.defender_secret.clone());
                if matches!(want.execution_role, crate::validate::ExecutionRole::Create { .. }) {
                    r.execution_role = Some((o.execution_role.clone(), o.execution_role_policy.clone()));
                }
            }
            r.launch_template_default = o
                .launch_template
                .as_ref()
                .zip(o.launch_template_default.as_ref())
                .map(|(lt, v)| (lt.id.clone(), v.clone()));
        }
        r.network = o.launch_inputs.clone();
        r.instance_checks = o
            .prerequisites
            .clone()
            .filter(|p| p.instance_type_exists && p.instance_profile_exists && p.key_pair_exists != Some(false));
        for a in actions {
            match a {
                Action::RegisterTaskDefinition { .. } | Action::TagTaskDefinition { .. } => r.task_definition = None,
                Action::CreateSecret { .. } | Action::RestoreSecret { .. } | Action::PutSecretValue { .. } => {
                    r.defender_secret = None
                }
                Action::CreateExecutionRole(_) | Action::PutExecutionRolePolicy { .. } => r.execution_role = None,
                // What stale things a removal touches is not worth tracking: forget everything.
                Action::Remove(_) => r = Recall::default(),
                // Not recalled (launch-template versions are recalled by number: a new one differs).
                Action::CreateCluster { .. }
                | Action::CreateLaunchTemplate(_)
                | Action::CreateLaunchTemplateVersion { .. }
                | Action::SetDefaultLaunchTemplateVersion { .. }
                | Action::CreateLaunchConfiguration(_)
                | Action::CreateAutoScalingGroup(_)
                | Action::UpdateAutoScalingGroup(_)
                | Action::StartInstanceRefresh { .. }
                | Action::CreateService { .. }
                | Action::UpdateService { .. } => {}
            }
        }
        r
    }
}

/// What the last full pass of a resource left to compare with.
#[derive(Clone, Debug)]
pub struct Memo {
    pub generation: i64,
    pub inputs: u64,
    /// The looks `fingerprint` was taken with, and those for the next glance.
    pub looked: Looks,
    pub looks: Looks,
    pub fingerprint: u64,
    /// The pass changed nothing and had nothing to change (or is suspended).
    pub settled: bool,
    /// Still waiting (for instances, tasks, Defenders); `false`: Ready.
    pub waiting: bool,
    /// Looks in a row (glances, or full passes) that found the same wait without progress.
    pub quiet: u32,
    pub last_full: Instant,
    /// When a wait without progress reaches the progress deadline (a full pass says Stalled).
    pub deadline_at: Option<Instant>,
    /// The metadata of the object the pass ran for, and when its next look is due: a watch
    /// event for the same metadata before then (our own status patch) is no reason to look.
    pub meta: u64,
    pub due: Option<Instant>,
    /// When this resource last changed something in AWS: answers asked for before then do not
    /// show it.
    pub changed_at: Option<Instant>,
    /// The last full pass that recalled nothing.
    pub last_deep: Instant,
    pub recall: Arc<Recall>,
    pub dereferenced: Option<Arc<Dereferenced>>,
}

/// What the pass read from the resource's Secrets, as clients (and the spec with the proxy's
/// credentials): a quiet look uses them rather than read the Secrets again. In memory only, like
/// the client pools; never printed.
pub struct Dereferenced {
    pub target: AwsTarget,
    pub aws: AwsClients,
    pub console: Arc<ConsoleClient>,
    pub desired: Desired,
}

impl std::fmt::Debug for Dereferenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dereferenced(..)")
    }
}

impl Memo {
    /// Why a reconcile with this glance needs a full pass (logged at debug); `None`: it may stop
    /// without one (one is due at least every `full_every`).
    pub fn why_full(
        &self,
        generation: i64,
        inputs: u64,
        fingerprint: u64,
        now: Instant,
        full_every: Duration,
    ) -> Option<&'static str> {
        if !self.settled {
            Some("the last pass changed something or had something to change")
        } else if self.generation != generation {
            Some("the spec changed")
        } else if self.inputs != inputs {
            Some("a Secret changed")
        } else if self.looked != self.looks {
            Some("the next look covers other parts than the last")
        } else if self.fingerprint != fingerprint {
            Some("the glance differs from the last look")
        } else if now >= self.last_full + full_every {
            Some("a full look is due")
        } else if self.deadline_at.is_some_and(|d| now >= d) {
            Some("the progress deadline is reached")
        } else {
            None
        }
    }

    /// The next look of a quiet wait: doubling from `first` up to `max` (like AWS's waiters), never
    /// past the progress deadline.
    pub fn wait_delay(&self, first: Duration, max: Duration, now: Instant) -> Duration {
        let d = first.saturating_mul(1u32.checked_shl(self.quiet.min(20)).unwrap_or(u32::MAX)).min(max);
        match self.deadline_at {
            Some(at) => d.min(at.saturating_duration_since(now) + Duration::from_millis(100)),
            None => d,
        }
    }
}

/// Memos by resource UID; shared with the Secret watch, which forgets a resource's memo when one
/// of its Secrets changes.
#[derive(Clone, Default)]
pub struct Memos(Arc<Mutex<MemoMap>>);

#[derive(Default)]
struct MemoMap {
    memos: HashMap<String, Memo>,
    /// How often each resource's memo was forgotten: a pass that read its Secrets before a
    /// forget must not leave a memo after it.
    forgets: HashMap<String, u64>,
}

impl Memos {
    pub fn get(&self, uid: &str) -> Option<Memo> {
        self.0.lock().unwrap().memos.get(uid).cloned()
    }

    /// Taken before a pass reads anything; [`Memos::put`] leaves no memo when it changed since.
    pub fn epoch(&self, uid: &str) -> u64 {
        self.0.lock().unwrap().forgets.get(uid).copied().unwrap_or(0)
    }

    pub fn put(&self, uid: &str, memo: Memo, epoch: u64) {
        let mut m = self.0.lock().unwrap();
        if m.forgets.get(uid).copied().unwrap_or(0) == epoch {
            m.memos.insert(uid.to_string(), memo);
        }
    }

    pub fn forget(&self, uid: &str) {
        let mut m = self.0.lock().unwrap();
        m.memos.remove(uid);
        *m.forgets.entry(uid.to_string()).or_default() += 1;
    }

    /// The resource is gone: nothing of it is kept.
    pub fn drop_resource(&self, uid: &str) {
        let mut m = self.0.lock().unwrap();
        m.memos.remove(uid);
        m.forgets.remove(uid);
    }

    /// Counts a quiet glance; returns the memo as it is now.
    pub fn quiet(&self, uid: &str) -> Option<Memo> {
        let mut memos = self.0.lock().unwrap();
        let m = memos.memos.get_mut(uid)?;
        m.quiet = m.quiet.saturating_add(1);
        Some(m.clone())
    }

    /// Something the resource waits for changed (wake.rs): its next look is due now, whatever
    /// the watch brings.
    pub fn wake(&self, uid: &str) {
        if let Some(m) = self.0.lock().unwrap().memos.get_mut(uid) {
            m.due = None;
        }
    }

    /// Records when the resource's next look is due, for the object whose metadata hashes to `meta`.
    pub fn set_due(&self, uid: &str, meta: u64, due: Instant) {
        if let Some(m) = self.0.lock().unwrap().memos.get_mut(uid) {
            m.meta = meta;
            m.due = Some(due);
        }
    }

    /// How long until the next look when a watch event brings nothing new (our own status patch).
    pub fn early(&self, uid: &str, meta: u64, now: Instant) -> Option<Duration> {
        let memos = self.0.lock().unwrap();
        let m = memos.memos.get(uid)?;
        let due = m.due?;
        (m.meta == meta && now < due).then(|| due - now)
    }
}

/// What in an object's metadata calls for a look: its spec's generation, deletion, finalizers and
/// labels (status and our own patches do not).
pub fn meta_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    let mut h = DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster `demo` with these counts.
    fn cluster(running: i32, pending: i32, services: i32, registered: i32) -> crate::aws::ecs::Cluster {
        crate::aws::ecs::Cluster {
            arn: "arn:cluster/demo".into(),
            name: "demo".into(),
            status: "ACTIVE".into(),
            registered_container_instances: registered,
            active_services: services,
            running_tasks: running,
            pending_tasks: pending,
            tags: Default::default(),
        }
    }

    fn memo() -> Memo {
        Memo {
            generation: 1,
            inputs: 7,
            looked: Looks::default(),
            looks: Looks::default(),
            fingerprint: 42,
            settled: true,
            waiting: false,
            quiet: 0,
            last_full: Instant::now(),
            deadline_at: None,
            meta: 0,
            due: None,
            changed_at: None,
            last_deep: Instant::now(),
            recall: Default::default(),
            dereferenced: None,
        }
    }

    #[test]
    fn a_recall_keeps_what_the_pass_read_and_drops_what_it_changed() {
        let d = crate::validate::validate(&crate::fixtures::sample("demo")).unwrap();
        let cluster = cluster(0, 0, 0, 0);
        let inputs = LaunchInputs {
            image_id: Ok("ami-1".into()),
            security_group_ids: vec![],
            missing_security_groups: vec![],
            subnet_ids: vec!["subnet-a".into()],
            missing_subnets: vec![],
        };
        let o = Observed {
            cluster: Some(cluster),
            execution_role_policy: Some(serde_json::json!({"Version": "2012-10-17"})),
            launch_inputs: Some(inputs.clone()),
            ..Default::default()
        };
        let r = Recall::of(&d, &o, &[]);
        assert_eq!(r.task_definition, Some(None), "looked at, and there is none: recalled as such");
        assert_eq!(r.defender_secret, Some(None));
        assert_eq!(r.execution_role, Some((None, o.execution_role_policy.clone())));
        assert_eq!(r.network, Some(inputs));

        let register = Action::RegisterTaskDefinition {
            family: "demo-defender".into(),
            generated: super::super::observe::build_generated(serde_json::json!({}), "demo-defender", "1".into()),
            tags: Default::default(),
            defender_secret: None,
        };
        let policy = Action::PutExecutionRolePolicy { role: "r".into(), document: "{}".into() };
        let r = Recall::of(&d, &o, &[register, policy]);
        assert_eq!((r.task_definition, r.execution_role), (None, None), "changed by the pass: read again");
        assert_eq!(r.defender_secret, Some(None), "not changed: kept");
        let remove =
            Action::Remove(super::super::teardown::TeardownAction::DeleteAutoScalingGroup { name: "old".into() });
        assert_eq!(Recall::of(&d, &o, &[remove]), Recall::default(), "a removal forgets everything");
        // Before the cluster exists nothing else is read: only the launch inputs are recalled.
        let r = Recall::of(&d, &Observed { cluster: None, ..o.clone() }, &[]);
        assert_eq!((r.task_definition, r.network.is_some()), (None, true));
    }

    #[test]
    fn a_full_pass_sees_the_same_fingerprint_a_glance_takes_of_the_same_world() {
        let d = crate::validate::validate(&crate::fixtures::sample("demo")).unwrap();
        let cluster = cluster(2, 0, 1, 2);
        let defender = |host: &str, cluster: &str| Defender {
            hostname: host.into(),
            connected: true,
            cluster: cluster.into(),
            version: "34.03.138".into(),
            cloud_metadata: Default::default(),
        };
        let looks = Looks { cluster: true, console: true, ..Default::default() };
        let o = Observed {
            cluster: Some(cluster.clone()),
            console_version: Some("34.03.138".into()),
            defenders: Some(vec![defender("ip-10-0-0-1", "demo"), defender("ip-10-0-0-2", "demo")]),
            ..Default::default()
        };
        // The glance lists every Defender of the Console and keeps the cluster's.
        let all = [defender("ip-10-0-0-2", "demo"), defender("ip-10-0-0-1", "demo"), defender("other", "x")];
        let glanced = View {
            cluster: Some(Some(cluster)),
            console: Some(Some(("34.03.138".into(), connected_hosts(&d, &all)))),
            ..Default::default()
        };
        assert_eq!(View::observed(&d, &o, looks), glanced.fingerprint(looks));
        let one_less = Observed { defenders: Some(vec![defender("ip-10-0-0-1", "demo")]), ..o.clone() };
        assert_ne!(View::observed(&d, &one_less, looks), glanced.fingerprint(looks));
        // A part the pass did not see: no baseline from it.
        assert_eq!(View::observed(&d, &Observed { defenders: None, ..o.clone() }, looks), None);
        let steady = Looks::steady(&d);
        assert_eq!(View::observed(&d, &o, steady), None, "no launch inputs, so no AMI seen");
    }

    #[test]
    fn other_workloads_in_an_adopted_cluster_change_no_ready_glance() {
        let view = |c| View { cluster: Some(Some(c)), service: Some(None), ..Default::default() };
        let ready = Looks { cluster: true, service: true, ready: true, ..Default::default() };
        let before = view(cluster(2, 0, 1, 2)).fingerprint(ready);
        assert_eq!(before, view(cluster(7, 3, 4, 2)).fingerprint(ready), "someone else's tasks and services");
        assert_ne!(before, view(cluster(2, 0, 1, 3)).fingerprint(ready), "a new instance needs a Defender");
        // Waiting for tasks: the counts are the progress (and may catch up with the service's later).
        let waiting = Looks { cluster: true, service: true, ..Default::default() };
        assert_ne!(view(cluster(0, 2, 1, 2)).fingerprint(waiting), view(cluster(2, 0, 1, 2)).fingerprint(waiting));
        assert_ne!(view(cluster(0, 0, 1, 2)).fingerprint(waiting), view(cluster(1, 0, 1, 2)).fingerprint(waiting));
    }

    #[test]
    fn only_an_unchanged_glance_after_a_pass_that_changed_nothing_is_quiet() {
        let now = Instant::now();
        let day = Duration::from_secs(86400);
        let m = memo();
        let why =
            |m: &Memo, generation, inputs, fingerprint, now| m.why_full(generation, inputs, fingerprint, now, day);
        assert_eq!(why(&m, 1, 7, 42, now), None, "the same glance after a settled pass: quiet");
        assert_eq!(why(&m, 1, 7, 43, now), Some("the glance differs from the last look"));
        assert_eq!(why(&m, 2, 7, 42, now), Some("the spec changed"));
        assert_eq!(why(&m, 1, 8, 42, now), Some("a Secret changed"));
        let unsettled = Memo { settled: false, ..memo() };
        assert_eq!(why(&unsettled, 1, 7, 42, now), Some("the last pass changed something or had something to change"));
        assert_eq!(why(&m, 1, 7, 42, now + day + Duration::from_secs(1)), Some("a full look is due"));
        let other = Memo { looks: Looks { cluster: true, ..Default::default() }, ..memo() };
        assert_eq!(why(&other, 1, 7, 42, now), Some("the next look covers other parts than the last"));
        let deadline = Memo { deadline_at: Some(now), ..memo() };
        assert_eq!(why(&deadline, 1, 7, 42, now), Some("the progress deadline is reached"));
    }

    #[test]
    fn quiet_waits_back_off_to_the_cap_and_never_past_the_deadline() {
        let now = Instant::now();
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let at = |quiet| Memo { quiet, ..memo() }.wait_delay(first, max, now);
        assert_eq!([at(0), at(1), at(2), at(5)], [1, 2, 4, 32].map(Duration::from_secs));
        assert_eq!(at(6), max);
        assert_eq!(at(40), max);
        let near = Memo { quiet: 9, deadline_at: Some(now + Duration::from_secs(5)), ..memo() };
        assert_eq!(near.wait_delay(first, max, now), Duration::from_millis(5100));
    }

    #[test]
    fn a_pass_that_read_its_secrets_before_they_changed_leaves_no_memo() {
        let memos = Memos::default();
        let epoch = memos.epoch("u");
        memos.forget("u"); // the Secret watch, while the pass runs
        memos.put("u", memo(), epoch);
        assert!(memos.get("u").is_none(), "the next pass reads the Secrets again");
        memos.put("u", memo(), memos.epoch("u"));
        assert!(memos.get("u").is_some());
        memos.drop_resource("u");
        assert_eq!((memos.get("u").is_none(), memos.epoch("u")), (true, 0));
    }

    #[test]
    fn our_own_status_patch_is_no_reason_to_look_but_a_spec_or_deletion_is() {
        let memos = Memos::default();
        let mut meta =
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { generation: Some(1), ..Default::default() };
        let now = Instant::now();
        memos.put("u", memo(), 0);
        memos.set_due("u", meta_key(&meta), now + Duration::from_secs(300));
        assert_eq!(memos.early("u", meta_key(&meta), now), Some(Duration::from_secs(300)));
        meta.generation = Some(2);
        assert_eq!(memos.early("u", meta_key(&meta), now), None, "a new spec");
        meta.generation = Some(1);
        meta.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(memos.early("u", meta_key(&meta), now), None, "deleted");
        meta.deletion_timestamp = None;
        assert_eq!(memos.early("u", meta_key(&meta), now + Duration::from_secs(301)), None, "due");
        memos.forget("u");
        assert_eq!(memos.early("u", meta_key(&meta), now), None, "a Secret changed");
    }
}
