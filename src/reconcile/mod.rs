//! The reconcile pipeline (DESIGN.md section 3), the only place that sequences I/O:
//!
//! ```text
//! validate (pure) -> ownership (IO: the cache; pure judgement) -> dereference (IO: Secrets)
//!   -> observe (IO: AWS) -> plan (pure)
//!   [-> observe what the plan needs (IO: Console, AWS) -> plan (pure)]
//!   -> apply (IO: AWS) -> status (pure) -> one status patch (IO)
//! ```
//! and, on deletion, [`teardown`].

pub mod apply;
pub mod glance;
pub mod install_bundle;
pub mod observe;
pub mod observed;
pub mod ownership;
pub mod plan;
pub mod status;
pub mod teardown;
pub mod wake;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
};
use tracing::{info, warn};

use crate::{
    access,
    aws::{AwsClients, AwsTarget, StaticCredentials},
    context::Context,
    crd::{EcsDefenderDeployment, EcsDefenderDeploymentStatus, FIELD_MANAGER, OwnedResources, reasons},
    error::{Error, Result},
    prisma::{ConsoleClient, ConsoleTarget},
    validate::{Desired, validate},
};
use observed::{Need, Observed};
use plan::Plan;
use status::{Outcome, build_status};

/// How a reconcile left things, for the requeue decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Work under way: look again soon.
    Converging,
    /// Waiting, and nothing changed since the last look: look again after this long.
    Waiting(Duration),
    /// Everything holds: look again at the resync interval.
    Steady,
    /// A human must act; look again now and then, in case the world fixed itself.
    Stalled,
    /// Only the Console is missing (it does not answer): look again when its backoff ends.
    ConsoleBackoff(Duration),
}

/// (IO) Brings one resource one step closer to its spec and reports it. Every error ends the
/// same way: a status that says it (Stalled or Retrying), then the error for the requeue policy.
pub async fn reconcile_apply(
    edd: &EcsDefenderDeployment,
    ctx: &Arc<Context>,
    pre: Option<Glanced>,
) -> Result<Progress> {
    match run_pipeline(edd, ctx, pre).await {
        // The pipeline's own status says how it ended (a failed AWS change included): patching
        // again from the error would flip the reason back and forth between reconciles.
        Ok(result) => result,
        Err(err) => {
            let cluster_name = validate(edd).ok().map(|d| d.cluster_name);
            let status = build_status(
                edd.status.as_ref(),
                edd.metadata.generation.unwrap_or_default(),
                cluster_name.as_deref(),
                outcome_of(&err),
                Timestamp::now(),
            );
            patch_status(edd, ctx, status).await?;
            Err(err)
        }
    }
}

/// `Err`: stopped before its status patch; `Ok(Err)`: an AWS change failed, and the status patched
/// says so already.
async fn run_pipeline(
    edd: &EcsDefenderDeployment,
    ctx: &Arc<Context>,
    pre: Option<Glanced>,
) -> Result<Result<Progress>> {
    let ns = edd.namespace().unwrap_or_default();
    let prev = edd.status.as_ref();
    let mut desired = validate(edd)?; // (pure)
    check_access(edd, ctx)?; // (pure): the installer's rules, before any request
    ctx.config.access.check_console_url(&desired.console.url).map_err(refused)?;
    let memo = ctx.memos.get(&desired.uid).filter(|m| m.generation == desired.generation);
    // A Secret that changes after this forgets the memo: the clients below are not remembered then.
    let epoch = ctx.memos.epoch(&desired.uid);
    let remembered = remembered(ctx, memo.as_ref());
    let target = match &remembered {
        Some(d) => d.target.clone(),
        None => aws_target(edd, ctx).await?, // (IO): the AWS Secret
    };
    // One owner per AWS name, decided before anything is looked at in AWS: a loser stops here.
    ownership::claim(ctx, edd, &target).await?; // (IO: the cache) + (pure) judgement
    let (aws, console) = match &remembered {
        Some(d) => (d.aws.clone(), d.console.clone()),
        None => dereference(&desired, &target, ctx).await?, // (IO): Secrets; no AWS call yet
    };
    match &remembered {
        Some(d) => desired = d.desired.clone(),
        None => {
            if let Some(name) = desired.proxy_credentials_secret.clone() {
                let s = read_secret(ctx, &ns, &name).await?;
                let (user, password) =
                    (secret_key(&s, &ns, &name, "username")?, secret_key(&s, &ns, &name, "password")?);
                desired = desired.with_proxy_credentials(&user, &password);
            }
        }
    }
    // (IO) A glance; unchanged since a full pass that changed nothing: nothing to do (glance.rs).
    let inputs = glance::inputs_key(&desired, &target, &console);
    let glanced = match pre.filter(|g| g.generation == desired.generation) {
        Some(g) => g,
        None => take_glance(ctx, &desired, memo.as_ref(), &aws, &console).await?,
    };
    match quiet(ctx, &desired, memo.as_ref(), inputs, &glanced) {
        Ok(progress) => return Ok(Ok(progress)),
        Err(why) => tracing::debug!(resource = %edd.name_any(), namespace = %ns, why, "full pass"),
    }
    let Glanced { now, not_before, glance, .. } = glanced;
    let fingerprint = glance.fingerprint;
    let looks = glanced_looks(&desired, memo.as_ref());
    // A full pass takes the glance's answers, and what the pass before read of what only this
    // resource changes; a deep one (the first, then once per deep resync) reads everything anew.
    let deep = memo.as_ref().is_none_or(|m| m.inputs != inputs || now >= m.last_deep + ctx.config.deep_resync);
    let reads = if deep {
        // The Console's version too is asked anew (its login is checked with it).
        observe::Reads { service: glance.service, ..observe::Reads::deep(now) }
    } else {
        observe::Reads {
            not_before,
            unwatched_since: since(now, ctx.config.steady_requeue / 2, memo.as_ref()),
            looks,
            recall: memo.as_ref().map(|m| m.recall.clone()),
            service: glance.service,
            // The shared view's version stands in for asking only while it is as fresh as a wait's
            // look (a mass convergence shares it; a Console that stopped answering is asked).
            console_version: glance
                .console_version
                .filter(|(_, asked)| now.saturating_duration_since(*asked) <= ctx.config.converging_requeue)
                .map(|(v, _)| v),
        }
    };
    let (observed, plan) = observe_and_plan(&aws, &console, &desired, prev, &reads).await?; // (IO) + (pure)

    // apply (IO), unless suspended.
    let suspended = desired.suspend;
    if !suspended && prev.map(|s| &s.owned) != Some(&plan.owned) && plan.actions.iter().any(plan::Action::creates) {
        // Write ahead: status names what is about to be created before it is, so a crash or a
        // delete in between never leaves something teardown does not know of (a launch
        // configuration's name depends on its content, for instance).
        write_ahead(edd, ctx, &plan.owned).await?;
    }
    let applied = if suspended { apply::Applied::default() } else { apply::apply(&aws, &plan.actions).await };
    if !suspended {
        for (action, drift) in &plan.drift {
            warn!(resource = %edd.name_any(), namespace = %ns, action, "{drift}");
            publish_action(ctx, edd, EventType::Warning, reasons::DRIFT_REPAIRED, action, drift.clone()).await;
        }
    }
    for (reason, note) in &applied.done {
        info!(resource = %edd.name_any(), namespace = %ns, action = reason, "{note}");
        publish(ctx, edd, EventType::Normal, reason, note.clone()).await;
    }

    // status (pure) -> one patch (IO)
    let deadline = desired
        .progress_deadline_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(ctx.config.progress_deadline);
    let status = build_status(
        prev,
        desired.generation,
        Some(&desired.cluster_name),
        Outcome::Planned {
            uid: &desired.uid,
            observed: &observed,
            plan: &plan,
            applied: &applied,
            suspended,
            progress_deadline: deadline,
        },
        Timestamp::now(),
    );
    let stalled = status::is_stalled(&status);
    let last_progress = status.last_progress_time.clone();
    // The same wait as before, with nothing changed: the next look backs off further.
    let no_progress = !applied.changed()
        && last_progress.is_some()
        && prev.and_then(|p| p.last_progress_time.as_ref()) == last_progress.as_ref();
    let newly_stalled = stalled && !prev.is_some_and(status::is_stalled);
    let stalled_message = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::crd::conditions::STALLED)
        .map(|c| (c.reason.clone(), c.message.clone()));
    patch_status(edd, ctx, status).await?;

    let all_ready = plan.steps.all().iter().all(|(_, s)| s.state == plan::StepState::Ready) && plan.removing.is_none();
    if applied.failed.is_some() || stalled || observed.console_unavailable.is_some() {
        ctx.memos.forget(&desired.uid); // the next pass looks at everything
    } else {
        let waiting = !all_ready && !suspended;
        let deadline_at = last_progress.filter(|_| waiting).map(|t| {
            let waited = Timestamp::now().duration_since(t.0).unsigned_abs();
            now + deadline.saturating_sub(waited)
        });
        let next = if waiting { glance::Looks::waiting(&desired, &plan) } else { glance::Looks::steady(&desired) };
        // The baseline for the next glance: what this pass saw of the same parts when it saw them
        // all (a resource that just became Ready then compares its first resync's glance with
        // that), else this reconcile's own glance.
        let (looked, fingerprint) = match glance::View::observed(&desired, &observed, next) {
            Some(seen) => (next, seen),
            None => (looks, fingerprint),
        };
        ctx.memos.put(
            &desired.uid,
            glance::Memo {
                generation: desired.generation,
                inputs,
                looked,
                looks: next,
                fingerprint,
                // What is being removed is not in the glance: such waits look fully each time.
                settled: suspended
                    || (plan.actions.is_empty()
                        && plan.drift.is_empty()
                        && !applied.changed()
                        && plan.removing.is_none()),
                waiting,
                quiet: if no_progress { memo.as_ref().map_or(0, |m| m.quiet.saturating_add(1)) } else { 0 },
                last_full: now,
                deadline_at,
                meta: 0,
                due: None,
                changed_at: if applied.changed() {
                    Some(std::time::Instant::now())
                } else {
                    memo.as_ref().and_then(|m| m.changed_at)
                },
                last_deep: if deep { now } else { memo.as_ref().map_or(now, |m| m.last_deep) },
                recall: Arc::new(glance::Recall::of(&desired, &observed, &plan.actions)),
                dereferenced: Some(Arc::new(glance::Dereferenced {
                    target: target.clone(),
                    aws: aws.clone(),
                    console: console.clone(),
                    desired: desired.clone(),
                })),
            },
            epoch,
        );
    }
    // Waiting for Defenders: woken as soon as the Console lists a change in them (wake.rs).
    let defenders_awaited = !suspended && plan.steps.defenders.state == plan::StepState::Progressing;
    match (defenders_awaited, observed.defenders.as_deref()) {
        (true, Some(defenders)) => {
            let cluster = glance::defender_cluster(&desired);
            ctx.wakeups.wait_for(
                &ctx.console_glances,
                &console,
                &desired.uid,
                kube::runtime::reflector::ObjectRef::from_obj(edd),
                cluster,
                glance::connected_hosts_of(cluster, defenders),
            );
        }
        _ => ctx.wakeups.done(&desired.uid),
    }
    if let Some((_, err)) = applied.failed {
        return Ok(Err(Error::Aws(err)));
    }
    if stalled {
        // Reported as Stalled already; an Event tells whoever watches, once.
        if newly_stalled && let Some((reason, message)) = stalled_message {
            publish(ctx, edd, EventType::Warning, &reason, message).await;
        }
        return Ok(Ok(Progress::Stalled));
    }
    if let Some(outage) = &observed.console_unavailable
        && !suspended
        && !applied.changed()
        && aws_settled(&plan)
    {
        return Ok(Ok(Progress::ConsoleBackoff(outage.retry_in)));
    }
    // Suspended resources are only observed: no need to look often.
    Ok(Ok(if (all_ready && !applied.changed()) || suspended {
        Progress::Steady
    } else if applied.changed() {
        Progress::Converging
    } else {
        // Waiting: the next look backs off while nothing changes (a glance when it can be).
        let delay =
            ctx.memos.get(&desired.uid).map(|m| m.wait_delay(ctx.config.converging_requeue, ctx.config.max_wait, now));
        Progress::Waiting(delay.unwrap_or(ctx.config.converging_requeue))
    }))
}

/// The glance of a reconcile, and the times it was taken with.
pub struct Glanced {
    generation: i64,
    now: Instant,
    /// Batched answers asked for before this do not do (glance.rs).
    not_before: Instant,
    glance: glance::Glance,
}

/// The clients and spec of the memo's pass, when they may stand in for reading the Secrets again:
/// the Secret watch is on (a changed Secret forgets the memo) and no deep resync is due (which
/// reads them anew in any case).
fn remembered(ctx: &Context, memo: Option<&glance::Memo>) -> Option<Arc<glance::Dereferenced>> {
    let m = memo?;
    (ctx.config.watch_secrets && Instant::now() < m.last_deep + ctx.config.deep_resync)
        .then(|| m.dereferenced.clone())
        .flatten()
}

/// The looks of this reconcile's glance: the memo's, or everything a Ready resource guards.
fn glanced_looks(desired: &Desired, memo: Option<&glance::Memo>) -> glance::Looks {
    memo.map(|m| m.looks).unwrap_or_else(|| glance::Looks::steady(desired))
}

/// (IO) The glance. Waits see progress within a look; resyncs may share answers up to half a
/// resync old; none may be older than this resource's last change.
async fn take_glance(
    ctx: &Context,
    desired: &Desired,
    memo: Option<&glance::Memo>,
    aws: &AwsClients,
    console: &Arc<ConsoleClient>,
) -> Result<Glanced> {
    let now = Instant::now();
    let fresh =
        if memo.is_some_and(|m| m.waiting) { ctx.config.converging_requeue } else { ctx.config.steady_requeue / 2 };
    let not_before = since(now, fresh, memo);
    let looks = glanced_looks(desired, memo);
    let glance = glance::take(aws, &ctx.console_glances, console, desired, looks, not_before).await?;
    Ok(Glanced { generation: desired.generation, now, not_before, glance })
}

/// Answers asked for before this do not do: older than `fresh`, or from before the resource's
/// last change.
fn since(now: Instant, fresh: Duration, memo: Option<&glance::Memo>) -> Instant {
    let oldest = now.checked_sub(fresh).unwrap_or(now);
    match memo.and_then(|m| m.changed_at) {
        Some(changed) => oldest.max(changed),
        None => oldest,
    }
}

/// (pure, and counts a quiet look) `Ok` when the glance is that of the memo's pass and that
/// pass changed nothing: the reconcile ends here. A full look comes at least every deep resync
/// when Ready, every resync while waiting. `Err`: why not (logged at debug).
fn quiet(
    ctx: &Context,
    desired: &Desired,
    memo: Option<&glance::Memo>,
    inputs: u64,
    g: &Glanced,
) -> std::result::Result<Progress, &'static str> {
    let m = memo.ok_or("nothing is remembered of a last pass")?;
    let full_every = if m.waiting { ctx.config.steady_requeue } else { ctx.config.deep_resync };
    if let Some(why) = m.why_full(desired.generation, inputs, g.glance.fingerprint, g.now, full_every) {
        return Err(why);
    }
    let m = ctx.memos.quiet(&desired.uid).ok_or("the memo was forgotten")?;
    Ok(if m.waiting {
        Progress::Waiting(m.wait_delay(ctx.config.converging_requeue, ctx.config.max_wait, g.now))
    } else {
        Progress::Steady
    })
}

/// (IO) The quiet path before anything is read from the API server: the spec as the watch cache
/// has it, the clients of the memo's pass (its Secrets unchanged since), and a glance. `None`:
/// no memo to go on (the full reconcile decides everything); `Some(Ok)`: quiet, nothing to do;
/// `Some(Err(glance))`: the glance changed, and the full reconcile takes it rather than another.
/// A resource that passed its ownership claim keeps it while its spec is unchanged, so no claim.
pub async fn glance_first(cached: &EcsDefenderDeployment, ctx: &Arc<Context>) -> Option<Result<Progress, Glanced>> {
    if cached.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let desired = validate(cached).ok()?;
    let memo = ctx.memos.get(&desired.uid).filter(|m| m.generation == desired.generation)?;
    let d = remembered(ctx, Some(&memo))?;
    check_access(cached, ctx).ok()?;
    let g = take_glance(ctx, &d.desired, Some(&memo), &d.aws, &d.console).await.ok()?;
    let inputs = glance::inputs_key(&d.desired, &d.target, &d.console);
    Some(quiet(ctx, &d.desired, Some(&memo), inputs, &g).map_err(|_| g))
}

/// Nothing on the AWS side is under way (no step but the Console's is progressing, nothing is
/// being removed): what is left waits for the Console.
fn aws_settled(plan: &Plan) -> bool {
    let s = &plan.steps;
    [&s.cluster, &s.workers, &s.service].iter().all(|st| st.state != plan::StepState::Progressing)
        && plan.removing.is_none()
}

/// (IO) observe -> (pure) plan, repeated while the plan needs more observations.
async fn observe_and_plan(
    aws: &AwsClients,
    console: &ConsoleClient,
    desired: &Desired,
    prev: Option<&EcsDefenderDeploymentStatus>,
    reads: &observe::Reads,
) -> Result<(Observed, Plan)> {
    let mut observed = observe::describe_world(aws, desired, prev, reads).await?;
    let mut fetched: Vec<Need> = vec![];
    loop {
        let plan = plan::plan(desired, &observed);
        let needs: Vec<Need> = plan.needs.iter().copied().filter(|n| !fetched.contains(n)).collect();
        if needs.is_empty() {
            return Ok((observed, plan));
        }
        observe::fetch_needs(&needs, aws, console, desired, reads, &mut observed).await.map_err(|e| match e {
            observe::ObserveError::Aws(e) => Error::Aws(e),
            observe::ObserveError::Console(e) => Error::Console(e),
        })?;
        fetched.extend(needs);
    }
}

/// (IO) Teardown on deletion; `Ok(true)` when everything is gone and the finalizer may go. When
/// teardown cannot proceed, the status says why and how to let go.
pub async fn reconcile_cleanup(edd: &EcsDefenderDeployment, ctx: &Arc<Context>) -> Result<bool> {
    let result = teardown_step(edd, ctx).await;
    if let Err(err) = &result {
        // The finalizer stays either way: what was created is deleted, or the user says to keep it.
        let outcome = if err.is_transient() {
            let message = format!(
                "teardown interrupted: {err}; retrying with backoff (or set spec.deletionPolicy: Orphan to let go without deleting the AWS resources)"
            );
            Outcome::Retrying { reason: err.category(), message }
        } else {
            let message = format!(
                "teardown blocked: {err}; fix this, or set spec.deletionPolicy: Orphan to leave the AWS resources in place"
            );
            Outcome::Stalled { reason: err.category(), message }
        };
        let generation = edd.metadata.generation.unwrap_or_default();
        patch_status(edd, ctx, build_status(edd.status.as_ref(), generation, None, outcome, Timestamp::now())).await?;
    }
    result
}

async fn teardown_step(edd: &EcsDefenderDeployment, ctx: &Arc<Context>) -> Result<bool> {
    if edd.spec.deletion_policy == crate::crd::DeletionPolicy::Orphan {
        publish(
            ctx,
            edd,
            EventType::Normal,
            "Orphaned",
            "deletionPolicy is Orphan: AWS resources are left in place".into(),
        )
        .await;
        return Ok(true);
    }
    // Every create is written ahead into status (run_pipeline), so a status that records
    // nothing means nothing was ever created: let go at once, even when the spec cannot reach AWS.
    if nothing_recorded(edd) {
        publish(ctx, edd, EventType::Normal, "NothingToDelete", "this resource created nothing in AWS".into()).await;
        return Ok(true);
    }
    check_access(edd, ctx)?;
    let target = aws_target(edd, ctx).await?;
    let aws = ctx.aws.clients(&target).await;
    let targets = teardown::TeardownTargets::of(edd);
    let observed = teardown::describe_owned(&aws, &targets, edd).await?; // (IO)
    let plan = teardown::plan_teardown(&targets, &observed); // (pure)
    let done = teardown::execute(&aws, &plan.actions).await; // (IO)
    let done = match done {
        Ok(done) => done,
        Err((_, e)) => return Err(Error::Aws(e)),
    };
    for (reason, note) in &done {
        info!(resource = %edd.name_any(), action = reason, "{note}");
        publish(ctx, edd, EventType::Normal, reason, note.clone()).await;
    }
    if plan.done() {
        return Ok(true);
    }
    let message = format!("deleting: waiting for {}", plan.waiting.clone().unwrap_or_default());
    let status = build_status(
        edd.status.as_ref(),
        edd.metadata.generation.unwrap_or_default(),
        None,
        Outcome::Deleting { message },
        Timestamp::now(),
    );
    patch_status(edd, ctx, status).await?;
    Ok(false)
}

pub(crate) fn outcome_of(err: &Error) -> Outcome<'static> {
    if err.is_transient() {
        Outcome::Retrying { reason: err.category(), message: err.to_string() }
    } else {
        Outcome::Stalled { reason: err.category(), message: err.to_string() }
    }
}

/// (IO) Reads the Secrets the spec names and returns the clients to use.
async fn dereference(
    desired: &Desired,
    target: &AwsTarget,
    ctx: &Arc<Context>,
) -> Result<(AwsClients, Arc<ConsoleClient>)> {
    let aws = ctx.aws.clients(target).await;
    let ns = &desired.namespace;
    let creds = read_secret(ctx, ns, &desired.console.credentials_secret).await?;
    // The Secret names the Console its credentials are for; nothing is sent anywhere else.
    let bound = access::bound_urls(
        secret_key(&creds, ns, &desired.console.credentials_secret, "url").ok().as_deref(),
        secret_key(&creds, ns, &desired.console.credentials_secret, "allowedUrls").ok().as_deref(),
    );
    ctx.config
        .access
        .check_console_binding(&desired.console.credentials_secret, &desired.console.url, bound.as_deref())
        .map_err(refused)?;
    let username = secret_key(&creds, ns, &desired.console.credentials_secret, "username")?;
    let password = secret_key(&creds, ns, &desired.console.credentials_secret, "password")?;
    let ca_pem = match &desired.console.ca_bundle_secret {
        Some(name) => Some(secret_key(&read_secret(ctx, ns, name).await?, ns, name, "ca.crt")?),
        None => None,
    };
    let console = ctx.consoles.client(&ConsoleTarget {
        url: desired.console.url.clone(),
        username,
        password,
        ca_pem,
        insecure_skip_tls_verify: desired.console.insecure_skip_tls_verify,
        project: desired.console.project.clone(),
    })?;
    Ok((aws, console))
}

/// (pure) The installer's rules on the resource's AWS endpoint and identity (src/access.rs).
fn check_access(edd: &EcsDefenderDeployment, ctx: &Context) -> Result<()> {
    let aws = edd.spec.aws.clone().unwrap_or_default();
    let rules = &ctx.config.access;
    rules.check_endpoint(aws.endpoint_url.as_deref()).map_err(refused)?;
    rules
        .check_identity(
            &edd.namespace().unwrap_or_default(),
            aws.credentials_secret_ref.is_some(),
            aws.assume_role.as_ref().map(|r| r.role_arn.as_str()),
        )
        .map_err(refused)
}

/// Status records nothing this resource created (no cluster of ours, nothing owned).
fn nothing_recorded(edd: &EcsDefenderDeployment) -> bool {
    edd.status.as_ref().is_none_or(|s| {
        s.cluster_created != Some(true)
            && s.owned == Default::default()
            && s.launch_template_id.is_none()
            && s.launch_configuration_name.is_none()
            && s.task_definition_arn.is_none()
    })
}

fn refused(r: access::Refusal) -> Error {
    Error::Stalled { step: r.reason, message: r.message }
}

async fn aws_target(edd: &EcsDefenderDeployment, ctx: &Arc<Context>) -> Result<AwsTarget> {
    let ns = edd.namespace().unwrap_or_default();
    let aws = edd.spec.aws.clone().unwrap_or_default();
    let credentials = match &aws.credentials_secret_ref {
        Some(r) => {
            let s = read_secret(ctx, &ns, &r.name).await?;
            Some(StaticCredentials {
                access_key_id: secret_key(&s, &ns, &r.name, "AWS_ACCESS_KEY_ID")?,
                secret_access_key: secret_key(&s, &ns, &r.name, "AWS_SECRET_ACCESS_KEY")?,
                session_token: secret_key(&s, &ns, &r.name, "AWS_SESSION_TOKEN").ok(),
            })
        }
        None => None,
    };
    Ok(AwsTarget {
        region: edd.spec.region.clone(),
        endpoint_url: aws.endpoint_url.clone(),
        credentials,
        role_arn: aws.assume_role.as_ref().map(|r| r.role_arn.clone()),
        external_id: aws.assume_role.as_ref().and_then(|r| r.external_id.clone()),
    })
}

async fn read_secret(ctx: &Arc<Context>, ns: &str, name: &str) -> Result<Secret> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    api.get_opt(name).await?.ok_or_else(|| Error::SecretNotFound { namespace: ns.to_string(), name: name.to_string() })
}

fn secret_key(secret: &Secret, ns: &str, name: &str, key: &'static str) -> Result<String> {
    let missing = || Error::SecretKeyMissing { namespace: ns.to_string(), name: name.to_string(), key };
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).map(|s| s.trim_end_matches('\n').to_string()).map_err(|_| missing());
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).cloned().ok_or_else(missing)
}

/// (IO) Records `owned` in status before the creates that add to it: the last status with the new
/// `owned`, applied by the same field manager as every status (a merge patch by another manager
/// would co-own the lists, and later applies could never empty them).
async fn write_ahead(edd: &EcsDefenderDeployment, ctx: &Arc<Context>, owned: &OwnedResources) -> Result<()> {
    let mut status = edd.status.clone().unwrap_or_default();
    status.owned = owned.clone();
    patch_status(edd, ctx, status).await
}

/// (IO) One server-side apply of the status, skipped when nothing but time would change.
pub async fn patch_status(
    edd: &EcsDefenderDeployment,
    ctx: &Arc<Context>,
    status: EcsDefenderDeploymentStatus,
) -> Result<()> {
    if edd.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<EcsDefenderDeployment> = Api::namespaced(ctx.client.clone(), &edd.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "ecsdefender.io/v1alpha1",
        "kind": "EcsDefenderDeployment",
        "status": status,
    });
    api.patch_status(&edd.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// (IO) An Event on the resource; failures to publish are logged, never fatal.
pub async fn publish(ctx: &Arc<Context>, edd: &EcsDefenderDeployment, type_: EventType, reason: &str, note: String) {
    publish_action(ctx, edd, type_, reason, reason, note).await
}

/// (IO) An Event whose action differs from its reason: Events with the same reason and action are
/// one series (a repeat only counts), so different actions keep different notes apart.
pub async fn publish_action(
    ctx: &Arc<Context>,
    edd: &EcsDefenderDeployment,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let note: String = note.chars().take(1024).collect();
    let ev = Event { type_, reason: reason.to_string(), note: Some(note), action: action.to_string(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &edd.object_ref(&())).await {
        warn!(error = %e, "publishing an Event failed");
    }
}
