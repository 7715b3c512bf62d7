//! Ownership, decided before observe: when several resources name the same AWS names in one place,
//! exactly one of them owns them; the others are `Stalled` with `OwnershipConflict` and touch
//! nothing in AWS (not even a read).
//!
//! The place is the [`Scope`]: a region, at an endpoint, under an AWS identity (the role assumed,
//! else the access key id of the resource's AWS Secret, else the operator's default chain). ECS
//! cluster, Auto Scaling group, launch template and task-definition family names are unique there,
//! so two resources naming one of them would take turns changing it, and one's teardown would
//! delete what the other runs. Owner tags make the second one stall once the first has created
//! something, but two resources applied together both find nothing and both create: this step
//! decides before either looks.
//!
//! The judgement, [`judge`], is pure. Among resources of one scope whose names overlap, holders
//! come first (status records something created, or the resource passed this check in this
//! process), then the oldest (`creationTimestamp`), then namespace/name, then uid; in that order
//! each one wins unless it shares a name with an earlier winner. The I/O around it, [`claim`],
//! reads the other resources from the controller's cache (and, for those whose names overlap,
//! the access key id of their AWS Secret), under one process-wide lock, so two concurrent
//! reconciles cannot both win. Only the leader reconciles, so the process is the unit that matters;
//! after a takeover, holders are known by their status.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::jiff::Timestamp;
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    aws::AwsTarget,
    context::Context,
    crd::{EcsDefenderDeployment, WorkerKind, reasons},
    error::{Error, Result},
    validate::{default_defender_name, default_worker_name},
};

/// Where AWS names are unique: a region at an endpoint, under one identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub region: String,
    /// The endpoint URL, normalized; empty: AWS's own for the region.
    pub endpoint: String,
    /// `role:<arn>`, `key:<access key id>` or `default`.
    pub identity: String,
}

impl Scope {
    /// The scope of the clients a reconcile uses.
    pub fn of(target: &AwsTarget, default_endpoint: Option<&str>) -> Scope {
        let identity = match (&target.role_arn, &target.credentials) {
            (Some(arn), _) => format!("role:{arn}"),
            (None, Some(c)) => format!("key:{}", c.access_key_id),
            (None, None) => "default".into(),
        };
        Scope {
            region: target.region.clone(),
            endpoint: endpoint(target.endpoint_url.as_deref(), default_endpoint),
            identity,
        }
    }
}

fn endpoint(spec: Option<&str>, default: Option<&str>) -> String {
    spec.or(default).unwrap_or_default().trim_end_matches('/').to_ascii_lowercase()
}

/// The AWS names a resource uses or holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Names {
    pub clusters: BTreeSet<String>,
    pub auto_scaling_groups: BTreeSet<String>,
    pub launch_templates: BTreeSet<String>,
    pub task_families: BTreeSet<String>,
    /// (cluster, service): a service name is unique within its cluster.
    pub services: BTreeSet<(String, String)>,
}

impl Names {
    /// (pure) The names the spec derives (as `validate` derives them, without validating: this runs
    /// over every resource in the cache) and those status records as created. Launch
    /// configurations, secrets and execution roles carry the owner's UID in their names: they
    /// cannot collide.
    pub fn of(edd: &EcsDefenderDeployment) -> Names {
        let spec = &edd.spec;
        let nonempty = |n: &Option<String>| n.clone().filter(|n| !n.is_empty());
        let cluster = nonempty(&spec.cluster.name).unwrap_or_else(|| edd.name_any());
        let mut n = Names::default();
        n.clusters.insert(cluster.clone());
        n.task_families.insert(nonempty(&spec.defender.task_name).unwrap_or_else(|| default_defender_name(&cluster)));
        n.services
            .insert((cluster.clone(), nonempty(&spec.service.name).unwrap_or_else(|| default_defender_name(&cluster))));
        if let Some(w) = &spec.workers {
            n.auto_scaling_groups
                .insert(nonempty(&w.auto_scaling_group.name).unwrap_or_else(|| default_worker_name(&cluster)));
            if w.kind == WorkerKind::LaunchTemplate {
                n.launch_templates.insert(nonempty(&w.name).unwrap_or_else(|| default_worker_name(&cluster)));
            }
        }
        if let Some(s) = &edd.status {
            let owned = &s.owned;
            let cluster = s.cluster_name.clone().unwrap_or(cluster);
            n.clusters.extend(owned.clusters.iter().cloned());
            n.task_families.extend(owned.task_families.iter().cloned());
            n.auto_scaling_groups.extend(owned.auto_scaling_groups.iter().cloned());
            n.launch_templates.extend(owned.launch_templates.iter().cloned());
            n.services.extend(owned.services.iter().map(|s| (cluster.clone(), s.clone())));
        }
        n
    }

    /// The first name both use, in words ("cluster shared").
    pub fn shared_with(&self, other: &Names) -> Option<String> {
        fn first<T: Ord + Clone>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> Option<T> {
            a.intersection(b).next().cloned()
        }
        if let Some(c) = first(&self.clusters, &other.clusters) {
            return Some(format!("ECS cluster {c}"));
        }
        if let Some(g) = first(&self.auto_scaling_groups, &other.auto_scaling_groups) {
            return Some(format!("Auto Scaling group {g}"));
        }
        if let Some(t) = first(&self.launch_templates, &other.launch_templates) {
            return Some(format!("launch template {t}"));
        }
        if let Some(f) = first(&self.task_families, &other.task_families) {
            return Some(format!("task definition family {f}"));
        }
        first(&self.services, &other.services).map(|(c, s)| format!("service {s} in cluster {c}"))
    }
}

/// One resource's claim on its names.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created: Option<Timestamp>,
    pub scope: Scope,
    pub names: Names,
    /// It holds its names: status records something it created, or it passed this check in this
    /// process (and may be creating right now).
    pub holds: bool,
    /// Being deleted: a holder holds until its teardown is done; anyone else claims nothing.
    pub deleting: bool,
}

impl Claim {
    /// Who wins first: holders, then the oldest, then namespace/name, then uid.
    fn rank(&self) -> (bool, Option<Timestamp>, &str, &str, &str) {
        (!self.holds, self.created, &self.namespace, &self.name, &self.uid)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Owner,
    /// `winner` owns `shared`, a name this resource also uses.
    Conflict {
        winner: Box<Claim>,
        shared: String,
    },
}

/// (pure) Whether `me` owns its names, given the other resources' claims.
pub fn judge(me: &Claim, others: &[Claim]) -> Verdict {
    let mut contenders: Vec<&Claim> = others
        .iter()
        .filter(|o| o.uid != me.uid && o.scope == me.scope && (o.holds || !o.deleting))
        .chain([me])
        .collect();
    contenders.sort_by(|a, b| a.rank().cmp(&b.rank()));
    let mut winners: Vec<&Claim> = vec![];
    for c in contenders {
        let beaten = winners.iter().find_map(|w| w.names.shared_with(&c.names).map(|shared| (*w, shared)));
        match beaten {
            Some((w, shared)) if c.uid == me.uid => {
                return Verdict::Conflict { winner: Box::new(w.clone()), shared };
            }
            Some(_) => {}
            None if c.uid == me.uid => return Verdict::Owner,
            None => winners.push(c),
        }
    }
    Verdict::Owner
}

/// (pure) What the loser's `Stalled` condition says.
pub fn conflict_message(me: &Claim, winner: &Claim, shared: &str) -> String {
    let why = if winner.deleting {
        "; it is being deleted, and this resource takes over once it is gone"
    } else if winner.holds {
        ""
    } else {
        " (it was created first)"
    };
    // A cluster's name cannot change; the other names can.
    let or = if shared.starts_with("ECS cluster") { "" } else { ", or this one names another" };
    format!(
        "{shared} in {} is also named by EcsDefenderDeployment {}/{}, which owns it{why}; this resource changes nothing in AWS until that one is deleted or no longer names it{or}",
        me.scope.region, winner.namespace, winner.name
    )
}

/// The state of the judgement in this process, and the way to re-queue losers.
pub struct Ownership {
    store: Store<EcsDefenderDeployment>,
    trigger: UnboundedSender<ObjectRef<EcsDefenderDeployment>>,
    registry: tokio::sync::Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Passed the check in this process, by uid (with the scope found then: no Secret read again).
    passed: HashMap<String, Claim>,
    /// Losers by uid: their reference and the uid they wait for.
    waiting: HashMap<String, (ObjectRef<EcsDefenderDeployment>, String)>,
    /// Released (finalizer removed) while the cache may still show them.
    released: HashSet<String>,
}

impl Ownership {
    /// `store`: the controller's cache of resources; `trigger` feeds `Controller::reconcile_on`.
    pub fn new(
        store: Store<EcsDefenderDeployment>,
        trigger: UnboundedSender<ObjectRef<EcsDefenderDeployment>>,
    ) -> Self {
        Self { store, trigger, registry: Default::default() }
    }

    /// (IO: re-queues) The resource is gone or lets go of everything (its finalizer is removed):
    /// whoever waited for it is reconciled at once.
    pub async fn release(&self, uid: &str) {
        let mut reg = self.registry.lock().await;
        reg.passed.remove(uid);
        reg.waiting.remove(uid);
        reg.released.insert(uid.to_string());
        for (r, winner) in reg.waiting.values() {
            if winner == uid {
                let _ = self.trigger.unbounded_send(r.clone());
            }
        }
    }
}

/// (IO: the cache, other resources' AWS Secrets) `Ok` when `edd` owns its names (and may go on to
/// observe); `Err(Stalled OwnershipConflict)` naming the owner otherwise.
pub async fn claim(ctx: &Arc<Context>, edd: &EcsDefenderDeployment, target: &AwsTarget) -> Result<()> {
    let own = &ctx.ownership;
    let default_endpoint = ctx.config.aws_endpoint_url.as_deref();
    let uid = edd.uid().unwrap_or_default();
    let mut reg = own.registry.lock().await;
    let cached = own.store.state();
    let present: HashSet<String> = cached.iter().filter_map(|o| o.uid()).collect();
    reg.released.retain(|u| present.contains(u));
    reg.passed.retain(|u, _| present.contains(u) || *u == uid);
    reg.waiting.retain(|u, _| present.contains(u));

    let me = Claim {
        scope: Scope::of(target, default_endpoint),
        holds: reg.passed.contains_key(&uid) || holds_by_status(edd),
        ..claim_of(edd)
    };
    // Others in the same region and endpoint whose names overlap, directly or through one another.
    let mut pending: Vec<(Arc<EcsDefenderDeployment>, Names)> = cached
        .iter()
        .filter(|o| o.uid().is_some_and(|u| u != uid && !reg.released.contains(&u)))
        .filter(|o| {
            o.spec.region == me.scope.region
                && endpoint(o.spec.aws.as_ref().and_then(|a| a.endpoint_url.as_deref()), default_endpoint)
                    == me.scope.endpoint
        })
        .map(|o| (o.clone(), Names::of(o)))
        .collect();
    let mut component = vec![me.names.clone()];
    let mut linked = vec![];
    loop {
        let (near, far): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, n)| component.iter().any(|c| c.shared_with(n).is_some()));
        pending = far;
        if near.is_empty() {
            break;
        }
        component.extend(near.iter().map(|(_, n)| n.clone()));
        linked.extend(near);
    }
    let mut others = vec![];
    for (o, names) in linked {
        let o_uid = o.uid().unwrap_or_default();
        let passed = reg.passed.get(&o_uid);
        let scope = match passed {
            Some(c) => c.scope.clone(),
            // A resource whose identity cannot be told (its Secret is missing) claims nothing yet:
            // it stops at that Secret itself, and meets this check once it gets past it.
            None => match scope_of_spec(ctx, &o).await {
                Some(s) => s,
                None => continue,
            },
        };
        others.push(Claim { scope, names, holds: passed.is_some() || holds_by_status(&o), ..claim_of(&o) });
    }
    match judge(&me, &others) {
        Verdict::Owner => {
            reg.waiting.remove(&uid);
            reg.passed.insert(uid, me);
            Ok(())
        }
        Verdict::Conflict { winner, shared } => {
            reg.passed.remove(&uid);
            reg.waiting.insert(uid, (ObjectRef::from_obj(edd), winner.uid.clone()));
            Err(Error::Stalled { step: reasons::OWNERSHIP_CONFLICT, message: conflict_message(&me, &winner, &shared) })
        }
    }
}

/// (pure) A claim with what the object alone tells (scope and holding are the caller's to set).
fn claim_of(edd: &EcsDefenderDeployment) -> Claim {
    Claim {
        namespace: edd.namespace().unwrap_or_default(),
        name: edd.name_any(),
        uid: edd.uid().unwrap_or_default(),
        created: edd.metadata.creation_timestamp.as_ref().map(|t| t.0),
        scope: Scope { region: edd.spec.region.clone(), endpoint: String::new(), identity: String::new() },
        names: Names::of(edd),
        holds: false,
        deleting: edd.metadata.deletion_timestamp.is_some(),
    }
}

/// Status records something this resource created.
fn holds_by_status(edd: &EcsDefenderDeployment) -> bool {
    edd.status.as_ref().is_some_and(|s| !s.owned.is_empty() || s.cluster_created == Some(true))
}

/// (IO: one Secret) Another resource's scope, as its spec and AWS Secret say; `None` when the
/// Secret cannot be read.
async fn scope_of_spec(ctx: &Arc<Context>, edd: &EcsDefenderDeployment) -> Option<Scope> {
    let aws = edd.spec.aws.clone().unwrap_or_default();
    let identity = match (&aws.assume_role, &aws.credentials_secret_ref) {
        (Some(r), _) => format!("role:{}", r.role_arn),
        (None, Some(r)) => {
            let ns = edd.namespace().unwrap_or_default();
            let s = super::read_secret(ctx, &ns, &r.name).await.ok()?;
            format!("key:{}", super::secret_key(&s, &ns, &r.name, "AWS_ACCESS_KEY_ID").ok()?)
        }
        (None, None) => "default".into(),
    };
    Some(Scope {
        region: edd.spec.region.clone(),
        endpoint: endpoint(aws.endpoint_url.as_deref(), ctx.config.aws_endpoint_url.as_deref()),
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crd::OwnedResources, fixtures::sample};

    fn scope(identity: &str) -> Scope {
        Scope { region: "us-east-1".into(), endpoint: String::new(), identity: identity.into() }
    }

    /// A resource named `name` in `ns` using cluster `cluster`, created at second `at`.
    fn claim(ns: &str, name: &str, cluster: &str, at: i64) -> Claim {
        let mut edd = sample(name);
        edd.spec.cluster.name = Some(cluster.into());
        Claim {
            namespace: ns.into(),
            uid: format!("uid-{ns}-{name}"),
            created: Some(Timestamp::from_second(at).unwrap()),
            scope: scope("key:AKIA1"),
            ..claim_of(&edd)
        }
    }

    fn loses_to(v: Verdict) -> Option<String> {
        match v {
            Verdict::Owner => None,
            Verdict::Conflict { winner, .. } => Some(format!("{}/{}", winner.namespace, winner.name)),
        }
    }

    #[test]
    fn the_oldest_of_two_new_resources_wins() {
        let a = claim("default", "a", "shared", 100);
        let b = claim("default", "b", "shared", 101);
        assert_eq!(judge(&a, std::slice::from_ref(&b)), Verdict::Owner);
        assert_eq!(loses_to(judge(&b, &[a])).as_deref(), Some("default/a"));
    }

    #[test]
    fn a_holder_wins_over_an_older_resource() {
        let old = claim("team-a", "old", "shared", 100);
        let holder = Claim { holds: true, ..claim("team-b", "holder", "shared", 200) };
        assert_eq!(loses_to(judge(&old, std::slice::from_ref(&holder))).as_deref(), Some("team-b/holder"));
        assert_eq!(judge(&holder, &[old]), Verdict::Owner);
    }

    #[test]
    fn ties_go_by_namespace_and_name_then_uid() {
        let a = claim("ns-b", "a", "shared", 100);
        let b = claim("ns-a", "z", "shared", 100);
        assert_eq!(loses_to(judge(&a, std::slice::from_ref(&b))).as_deref(), Some("ns-a/z"));
        assert_eq!(judge(&b, &[a]), Verdict::Owner);
        let x = Claim { uid: "1".into(), ..claim("ns", "same", "shared", 100) };
        let y = Claim { uid: "2".into(), ..claim("ns", "same", "shared", 100) };
        assert_eq!(judge(&x, std::slice::from_ref(&y)), Verdict::Owner);
        assert!(loses_to(judge(&y, &[x])).is_some());
    }

    #[test]
    fn another_identity_region_or_endpoint_is_another_place() {
        let a = claim("default", "a", "shared", 100);
        let other_key = Claim { scope: scope("key:AKIA2"), ..claim("default", "b", "shared", 50) };
        let other_region = Claim {
            scope: Scope { region: "eu-west-1".into(), ..scope("key:AKIA1") },
            ..claim("default", "c", "shared", 50)
        };
        let other_endpoint = Claim {
            scope: Scope { endpoint: "http://localhost:4566".into(), ..scope("key:AKIA1") },
            ..claim("default", "d", "shared", 50)
        };
        assert_eq!(judge(&a, &[other_key, other_region, other_endpoint]), Verdict::Owner);
    }

    #[test]
    fn any_shared_name_conflicts_and_is_named() {
        let a = claim("default", "a", "one", 100);
        let mut b = claim("default", "b", "two", 101);
        assert_eq!(judge(&b, std::slice::from_ref(&a)), Verdict::Owner, "different clusters, derived names differ");
        b.names.auto_scaling_groups.insert("one-workers".into());
        let Verdict::Conflict { shared, .. } = judge(&b, std::slice::from_ref(&a)) else { panic!("no conflict") };
        assert_eq!(shared, "Auto Scaling group one-workers");
        let mut c = claim("default", "c", "three", 101);
        c.names.task_families.insert("one-defender".into());
        let Verdict::Conflict { shared, .. } = judge(&c, std::slice::from_ref(&a)) else { panic!("no conflict") };
        assert_eq!(shared, "task definition family one-defender");
    }

    #[test]
    fn a_deleting_holder_still_holds_and_a_deleting_newcomer_claims_nothing() {
        let holder = Claim { holds: true, deleting: true, ..claim("default", "holder", "shared", 200) };
        let me = claim("default", "me", "shared", 100);
        let Verdict::Conflict { winner, .. } = judge(&me, std::slice::from_ref(&holder)) else { panic!() };
        let message = conflict_message(&me, &winner, "ECS cluster shared");
        assert!(message.contains("takes over once it is gone"), "{message}");
        assert!(message.contains("EcsDefenderDeployment default/holder"), "{message}");
        let leaving = Claim { deleting: true, ..claim("default", "leaving", "shared", 50) };
        assert_eq!(judge(&me, &[leaving]), Verdict::Owner);
    }

    #[test]
    fn a_loser_does_not_block_a_third_resource() {
        // a and b share cluster x; b and c share task family f. a wins x, so b loses and c (which
        // shares nothing with a) owns f, though b is older than c.
        let a = claim("default", "a", "x", 100);
        let mut b = claim("default", "b", "x", 101);
        b.names.task_families.insert("f".into());
        let mut c = claim("default", "c", "y", 102);
        c.names.task_families.insert("f".into());
        assert_eq!(judge(&c, &[a.clone(), b.clone()]), Verdict::Owner);
        assert_eq!(loses_to(judge(&b, &[a, c])).as_deref(), Some("default/a"));
    }

    #[test]
    fn names_come_from_the_spec_and_from_what_status_records() {
        let mut edd = sample("demo");
        let n = Names::of(&edd);
        assert_eq!(n.clusters, BTreeSet::from(["demo".to_string()]));
        assert_eq!(n.auto_scaling_groups, BTreeSet::from(["demo-workers".to_string()]));
        assert_eq!(n.launch_templates, BTreeSet::from(["demo-workers".to_string()]));
        assert_eq!(n.task_families, BTreeSet::from(["demo-defender".to_string()]));
        assert_eq!(n.services, BTreeSet::from([("demo".to_string(), "demo-defender".to_string())]));
        // After a rename, the old service is held until it is removed.
        edd.spec.service.name = Some("renamed".into());
        edd.status = Some(crate::crd::EcsDefenderDeploymentStatus {
            cluster_name: Some("demo".into()),
            owned: OwnedResources { services: vec!["demo-defender".into()], ..Default::default() },
            ..Default::default()
        });
        let n = Names::of(&edd);
        assert!(n.services.contains(&("demo".to_string(), "demo-defender".to_string())));
        assert!(n.services.contains(&("demo".to_string(), "renamed".to_string())));
        assert!(holds_by_status(&edd));
        // Launch configurations carry the owner's UID: never shared.
        edd.spec.workers.as_mut().unwrap().kind = WorkerKind::LaunchConfiguration;
        assert!(Names::of(&edd).launch_templates.is_empty());
    }

    #[test]
    fn scope_comes_from_the_role_else_the_key_else_the_default_chain() {
        let mut t = AwsTarget {
            region: "us-east-1".into(),
            endpoint_url: Some("HTTP://127.0.0.1:4566/".into()),
            credentials: Some(crate::aws::StaticCredentials {
                access_key_id: "AKIA1".into(),
                secret_access_key: "s".into(),
                session_token: None,
            }),
            role_arn: None,
            external_id: None,
        };
        assert_eq!(Scope::of(&t, None), Scope { endpoint: "http://127.0.0.1:4566".into(), ..scope("key:AKIA1") });
        t.role_arn = Some("arn:aws:iam::1:role/r".into());
        assert_eq!(Scope::of(&t, None).identity, "role:arn:aws:iam::1:role/r");
        t.role_arn = None;
        t.credentials = None;
        t.endpoint_url = None;
        assert_eq!(Scope::of(&t, Some("http://gate/")), Scope { endpoint: "http://gate".into(), ..scope("default") });
    }
}
