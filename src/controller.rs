//! The controller: shared [`Context`], startup checks, and `reconcile` (finalizer bookkeeping
//! around the pipeline in [`crate::reconcile`]) with its requeue and backoff policy.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectMeta, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher::{self, watcher},
    },
};
use tracing::{Instrument, error, info, info_span, warn};

use crate::{
    aws::AwsPool,
    crd::{EcsDefenderDeployment, FINALIZER},
    error::Error,
    metrics::Metrics,
    prisma::{Backoff as ConsoleBackoff, ConsolePool},
    reconcile::{self, Progress, ownership::Ownership},
};

pub use crate::context::{Config, Context};

/// Runs the controller until a shutdown signal; `ready` turns true once it watches.
pub async fn run(client: Client, config: Config, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
    let api: Api<EcsDefenderDeployment> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Fail fast with a hint when the CRD is missing (or the selector is not one).
    let mut list = ListParams::default().limit(1);
    let mut watch = watcher::Config::default().any_semantic();
    if let Some(selector) = &config.selector {
        list = list.labels(selector);
        watch = watch.labels(selector);
    }
    if let Err(e) = api.list(&list).await {
        if let (Some(selector), kube::Error::Api(ae)) = (&config.selector, &e)
            && ae.code == 400
        {
            anyhow::bail!("RESOURCE_SELECTOR {selector:?} is not a label selector: {}", ae.message);
        }
        anyhow::bail!(
            "cannot list EcsDefenderDeployments ({e}); is the CRD installed? \
             kubectl apply -f crds/ecsdefenderdeployments.ecsdefender.io.yaml"
        );
    }
    // Losers of an ownership conflict are re-queued through this channel when the owner goes, and
    // resources waiting for Defenders when their Console lists a change.
    let (requeue, requeued) = futures::channel::mpsc::unbounded();
    // Back on its feet within seconds of the API server's return (the default backoff, kind to a
    // struggling server with thousands of clients, waits up to 30 s; this operator is one client).
    // The cache keeps every resource for as long as it exists: without its managedFields (which
    // we never read, and which are most of a resource's size once status is written) it is a
    // fraction of the memory.
    let (reader, writer) = kube::runtime::reflector::store();
    let resources =
        kube::runtime::reflector(writer, watcher(api, watch).modify(strip_managed_fields)).applied_objects();
    let mut controller =
        Controller::for_stream(resources, reader).trigger_backoff(QuickBackoff::default()).reconcile_on(requeued);
    let memos = reconcile::glance::Memos::default();
    let ctx = Arc::new(Context {
        aws: AwsPool::new(config.aws_endpoint_url.clone(), metrics.clone())
            .with_rate_limits(config.aws_rate_limits.clone()),
        // One backoff per Console for all resources using it, paced like a resource's retries.
        consoles: ConsolePool::new(
            metrics.clone(),
            ConsoleBackoff { first: config.converging_requeue, max: config.max_backoff },
        )
        .with_rate_limit(config.console_rate_limit),
        recorder: Recorder::new(
            client.clone(),
            Reporter { controller: config.reporter.clone(), instance: std::env::var("POD_NAME").ok() },
        ),
        ownership: Ownership::new(controller.store(), requeue.clone()),
        wakeups: reconcile::wake::Wakeups::new(requeue, memos.clone(), config.converging_requeue),
        memos: memos.clone(),
        console_glances: Default::default(),
        full_passes: tokio::sync::Semaphore::new(match config.concurrency {
            0 => tokio::sync::Semaphore::MAX_PERMITS,
            n => n.into(),
        }),
        client,
        metrics,
        config,
        failures: Default::default(),
    });
    info!("watching EcsDefenderDeployments");
    ready.store(true, Ordering::SeqCst);
    if ctx.config.watch_secrets {
        // A Secret created or fixed after the resource takes effect in seconds. Only metadata is
        // watched: the operator never holds Secret values it was not asked to read.
        let secrets: Api<PartialObjectMeta<Secret>> = match &ctx.config.namespace {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        let store = controller.store();
        controller =
            controller.watches_stream(watcher(secrets, watcher::Config::default()).touched_objects(), move |secret| {
                let resources = referencing(&store.state(), &secret.metadata);
                // What a resource's Secrets say is not in its glance: its next pass is a full one.
                for r in &resources {
                    memos.forget(r.extra.uid.as_deref().unwrap_or_default());
                }
                resources
            });
    }
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                // Errors are reported on the resource already; this is the controller's own view.
                tracing::debug!(error = %e, "reconcile ended with an error");
            }
        })
        .await;
    ready.store(false, Ordering::SeqCst);
    info!("controller stopped");
    Ok(())
}

/// The resources that name the Secret `meta` (same namespace).
fn referencing(resources: &[Arc<EcsDefenderDeployment>], meta: &ObjectMeta) -> Vec<ObjectRef<EcsDefenderDeployment>> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else { return vec![] };
    resources
        .iter()
        .filter(|edd| edd.namespace().as_deref() == Some(ns) && secret_names(edd).contains(&name))
        .map(|edd| ObjectRef::from_obj(edd.as_ref()))
        .collect()
}

/// Every Secret a resource names.
pub fn secret_names(edd: &EcsDefenderDeployment) -> Vec<&str> {
    let spec = &edd.spec;
    let console = &spec.defender.console;
    let mut names = vec![console.credentials_secret_ref.name.as_str()];
    names.extend(console.ca_bundle_secret_ref.as_ref().map(|r| r.name.as_str()));
    names.extend(spec.aws.as_ref().and_then(|a| a.credentials_secret_ref.as_ref()).map(|r| r.name.as_str()));
    names.extend(
        spec.defender.options.proxy.as_ref().and_then(|p| p.credentials_secret_ref.as_ref()).map(|r| r.name.as_str()),
    );
    names
}

async fn reconcile(edd: Arc<EcsDefenderDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    // A watch event that changes nothing we act on (our own status patch): the next look stays
    // when it was due.
    let uid = edd.uid().unwrap_or_default();
    if let Some(wait) = ctx.memos.early(&uid, reconcile::glance::meta_key(&edd.metadata), std::time::Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    let span = info_span!("reconcile", namespace = %edd.namespace().unwrap_or_default(), name = %edd.name_any());
    async move {
        let _timer = ctx.metrics.reconcile_started();
        let result = reconcile_inner(&edd, &ctx).await;
        let key = key(&edd);
        match &result {
            Ok(_) => {
                ctx.failures.lock().unwrap().remove(&key);
            }
            Err(err) => {
                ctx.memos.forget(&uid);
                ctx.metrics.reconcile_failed(err.category());
                if err.is_transient() {
                    warn!(category = err.category(), error = %err, "reconcile failed; will retry");
                } else {
                    error!(category = err.category(), error = %err, "reconcile stalled; waiting for a change");
                }
                reconcile::publish(&ctx, &edd, EventType::Warning, err.category(), err.to_string()).await;
            }
        }
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_inner(cached: &EcsDefenderDeployment, ctx: &Arc<Context>) -> Result<Action, Error> {
    // A quiet look needs nothing from the API server (the object, its Secrets): the cached spec,
    // the last pass's clients and a glance do (reconcile::glance_first).
    let pre = match cached.finalizers().iter().any(|f| f == FINALIZER) {
        true => reconcile::glance_first(cached, ctx).await,
        false => None,
    };
    let pre = match pre {
        Some(Ok(progress)) => return Ok(requeue(cached, ctx, progress)),
        Some(Err(glanced)) => Some(glanced),
        None => None,
    };
    // Quiet looks run side by side (their batched reads are shared); a full pass holds what it
    // read and is about to write, so only so many run at once (MAX_CONCURRENT_RECONCILES).
    let _permit = ctx.full_passes.acquire().await.expect("the semaphore is never closed");
    let api: Api<EcsDefenderDeployment> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    // The watch cache can lag our own last status patch; status is built on the previous status
    // and written by server-side apply (which drops any field left out), so start from the
    // apiserver's current copy.
    let Some(mut edd) = api.get_opt(&cached.name_any()).await? else {
        // Gone (its finalizer removed elsewhere): whoever waited for its names goes on.
        ctx.memos.drop_resource(&cached.uid().unwrap_or_default());
        ctx.wakeups.done(&cached.uid().unwrap_or_default());
        ctx.ownership.release(&cached.uid().unwrap_or_default()).await;
        return Ok(Action::await_change());
    };
    strip_managed_fields(&mut edd);
    let edd = &edd;
    let has_finalizer = edd.finalizers().iter().any(|f| f == FINALIZER);
    if edd.metadata.deletion_timestamp.is_some() {
        ctx.memos.forget(&edd.uid().unwrap_or_default());
        ctx.wakeups.done(&edd.uid().unwrap_or_default());
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        if reconcile::reconcile_cleanup(edd, ctx).await? {
            let finalizers: Vec<String> = edd.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
            set_finalizers(&api, edd, finalizers).await?;
            // Whoever waited for this resource's AWS names takes over now, not at its next requeue.
            ctx.memos.drop_resource(&edd.uid().unwrap_or_default());
            ctx.ownership.release(&edd.uid().unwrap_or_default()).await;
            info!("teardown complete; finalizer removed");
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(ctx.config.converging_requeue));
    }
    if !has_finalizer {
        // Before any AWS change, so nothing we create can outlive the resource unnoticed.
        let mut finalizers = edd.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        set_finalizers(&api, edd, finalizers).await?;
    }
    let progress = reconcile::reconcile_apply(edd, ctx, pre).await?;
    Ok(requeue(edd, ctx, progress))
}

/// Drops what the operator never reads and is most of a resource's size in memory.
fn strip_managed_fields(edd: &mut EcsDefenderDeployment) {
    edd.managed_fields_mut().clear();
}

/// When to look again after `progress`.
fn requeue(edd: &EcsDefenderDeployment, ctx: &Context, progress: Progress) -> Action {
    let wait = match progress {
        Progress::Converging => ctx.config.converging_requeue,
        Progress::Waiting(wait) => wait,
        Progress::Steady => ctx.config.steady_requeue,
        Progress::Stalled => ctx.config.stalled_requeue,
        Progress::ConsoleBackoff(wait) => wait.max(ctx.config.converging_requeue),
    };
    // Our own status patch comes back as a watch event for this same metadata: not a reason to look.
    let meta = reconcile::glance::meta_key(&edd.metadata);
    ctx.memos.set_due(&edd.uid().unwrap_or_default(), meta, std::time::Instant::now() + wait);
    Action::requeue(wait)
}

/// A merge patch carrying `resourceVersion`, so it fails rather than overwrite a concurrent change.
async fn set_finalizers(
    api: &Api<EcsDefenderDeployment>,
    edd: &EcsDefenderDeployment,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": edd.resource_version()}
    });
    api.patch(&edd.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

fn error_policy(edd: Arc<EcsDefenderDeployment>, err: &Error, ctx: Arc<Context>) -> Action {
    if !err.is_transient() {
        return Action::requeue(ctx.config.stalled_requeue);
    }
    let n = {
        let mut failures = ctx.failures.lock().unwrap();
        let n = failures.entry(key(&edd)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n, ctx.config.converging_requeue, ctx.config.max_backoff, rand::random::<f64>());
    Action::requeue(delay.max(err.retry_after().unwrap_or_default()))
}

/// Exponential backoff with jitter: base * 2^(n-1), capped, then scaled into [50%, 100%].
pub fn backoff(n: u32, base: Duration, max: Duration, random: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(max);
    exp.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
}

fn key(edd: &EcsDefenderDeployment) -> String {
    format!("{}/{}", edd.namespace().unwrap_or_default(), edd.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, max, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(3, base, max, 0.0), Duration::from_secs(2), "jitter keeps at least half");
    }
}

/// Watch restarts after 0.5 s, doubling to at most 2 s; reset once a watch runs again.
#[derive(Clone, Debug)]
pub struct QuickBackoff {
    next: Duration,
}

impl QuickBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(2);
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}
