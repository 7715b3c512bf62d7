//! Leader election on a Kubernetes Lease (`coordination.k8s.io/v1`): of all replicas, only the
//! Lease's holder runs the controller; the others wait as standbys, ready to take over.
//!
//! Two parts, with one job each:
//! - [kube-lease-manager](https://docs.rs/kube-lease-manager) acquires and renews the Lease. It
//!   renews `renew_grace` before expiry and takes over an expired Lease, using server-side apply so
//!   that two replicas cannot both acquire it.
//! - The *fence* here decides when this replica may act. The crate reports "acquired" and "lost"
//!   only when its own renewal loop notices, and a renewal that keeps failing (apiserver
//!   unreachable) is retried without reporting anything. So the fence watches the Lease itself and
//!   counts this replica as leader only while the Lease names it *and* its last renewal is fresh:
//!   it steps down the moment another holder appears, or `renew_grace / 2` before the Lease would
//!   expire without a renewal (the same idea as client-go's renew deadline). The remaining half of
//!   the grace absorbs clock skew between nodes.
//!
//! [`run`] drives the controller: it starts it on becoming leader and drops it (stopping every
//! in-flight reconcile at its next await) the moment leadership ends. A stopped reconcile is safe
//! to cut short: every AWS change is idempotent and found again by tags and deterministic names.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Leader-election settings (flags / environment, see `src/main.rs`).
#[derive(Clone, Debug)]
pub struct Config {
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace (the operator's own).
    pub namespace: String,
    /// This replica's identity in the Lease (`holderIdentity`); unique per replica.
    pub identity: String,
    /// How long a Lease stays valid after its last renewal: the longest a crashed leader blocks a
    /// takeover.
    pub lease_duration: Duration,
    /// How long before expiry the holder renews; also the clock skew the election tolerates.
    pub renew_grace: Duration,
}

/// What this replica may do right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Standby,
    /// Leader until `until` (monotonic clock) unless a renewal extends it.
    Leader {
        until: Instant,
    },
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

/// (pure) Until when the Lease, as last seen, lets `identity` act: `None` when it names another
/// holder or nobody, or when its renewal is no longer fresh. `now_wall`/`now` are the same
/// instant on the wall clock (the Lease's timestamps) and on the monotonic clock (timers).
pub fn leader_until(
    lease: Option<&LeaseSpec>,
    identity: &str,
    renew_grace: Duration,
    now_wall: SystemTime,
    now: Instant,
) -> Option<Instant> {
    let spec = lease?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed: SystemTime = spec.renew_time.as_ref()?.0.into();
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    // Step down half a grace early: the other half is the clock skew we tolerate.
    let deadline = renewed.checked_add(duration)?.checked_sub(renew_grace / 2)?;
    let left = deadline.duration_since(now_wall).ok().filter(|d| !d.is_zero())?;
    Some(now + left)
}

/// A running election: the Lease manager and the fence that publishes [`Role`].
pub struct Election {
    role: watch::Receiver<Role>,
    fence: tokio::task::JoinHandle<()>,
    manager: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Election {
    /// Creates the Lease if it is missing and starts campaigning. Fails when the Lease cannot be
    /// read or created (RBAC, namespace).
    pub async fn start(client: Client, config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Election> {
        let seconds = |d: Duration| d.as_secs().max(1);
        anyhow::ensure!(
            seconds(config.renew_grace) < seconds(config.lease_duration),
            "the renew grace ({:?}) must be shorter than the lease duration ({:?})",
            config.renew_grace,
            config.lease_duration
        );
        let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(seconds(config.lease_duration))
            .with_grace(seconds(config.renew_grace))
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .build()
            .await
            .map_err(|e| {
                anyhow::anyhow!("leader election: cannot use Lease {}/{}: {e}", config.namespace, config.lease_name)
            })?;
        let (held, manager) = manager.watch().await;
        let (tx, role) = watch::channel(Role::Standby);
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let fence = tokio::spawn(fence(api, config, held, tx, metrics));
        Ok(Election { role, fence, manager })
    }

    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Stops campaigning and releases the Lease if held, so a standby takes over at once instead
    /// of waiting for it to expire.
    pub async fn stop(self) {
        // Dropping the fence drops the last receiver of the manager's channel; the manager then
        // releases the Lease and returns.
        self.fence.abort();
        let _ = self.fence.await;
        match tokio::time::timeout(Duration::from_secs(5), self.manager).await {
            Ok(Ok(Ok(_))) => info!("leader election: Lease released"),
            Ok(Ok(Err(e))) => warn!(error = %e, "leader election: releasing the Lease failed; it expires by itself"),
            Ok(Err(e)) => warn!(error = %e, "leader election: the Lease manager task failed"),
            Err(_) => warn!("leader election: releasing the Lease timed out; it expires by itself"),
        }
    }
}

/// Publishes this replica's [`Role`] from the manager's view and the Lease as the apiserver has it.
async fn fence(
    api: Api<Lease>,
    config: Config,
    mut held: watch::Receiver<bool>,
    tx: watch::Sender<Role>,
    metrics: Arc<Metrics>,
) {
    let selector = format!("metadata.name={}", config.lease_name);
    let leases = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    tokio::pin!(leases);
    let mut lease_until: Option<Instant> = None;
    // The manager task ends only when told to stop; after that nothing is held.
    let mut manager_running = true;
    loop {
        let role = match (manager_running && *held.borrow_and_update(), lease_until) {
            (true, Some(until)) if until > Instant::now() => Role::Leader { until },
            _ => Role::Standby,
        };
        let was_leader = tx.borrow().is_leader();
        if role.is_leader() != was_leader {
            if role.is_leader() {
                info!(identity = %config.identity, lease = %config.lease_name, "leader election: this replica leads");
            } else {
                warn!(identity = %config.identity, lease = %config.lease_name, "leader election: this replica is a standby");
            }
            metrics.set_leader(role.is_leader());
        }
        tx.send_replace(role);
        let overdue = async move {
            match role {
                Role::Leader { until } => tokio::time::sleep_until(until).await,
                Role::Standby => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = held.changed(), if manager_running => manager_running = changed.is_ok(),
            event = leases.next() => match event {
                Some(Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease))) => {
                    lease_until =
                        leader_until(lease.spec.as_ref(), &config.identity, config.renew_grace, SystemTime::now(), Instant::now());
                }
                Some(Ok(watcher::Event::Delete(_))) => lease_until = None,
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => warn!(error = %e, "leader election: watching the Lease failed; retrying"),
                None => lease_until = None,
            },
            _ = overdue => {
                warn!("leader election: no renewal of the Lease in time; stepping down");
                lease_until = None;
            }
        }
    }
}

/// Resolves when `role` stops being leader: a standby role, or a leader deadline that passed
/// without a renewal.
async fn leadership_lost(role: &mut watch::Receiver<Role>) {
    loop {
        let current = *role.borrow_and_update();
        match current {
            Role::Standby => return,
            Role::Leader { until } => tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                changed = role.changed() => if changed.is_err() { return },
            },
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Campaigns for the Lease and runs `lead()` (the controller) only while this replica leads.
///
/// `ready` turns true once the election runs: a standby is ready too, because a rolling update
/// waits for the new (standby) pod to be Ready before it stops the old leader, and a
/// PodDisruptionBudget counts only Ready pods. `/readyz` and the `leader` metric tell which is which.
///
/// Returns when `lead()` returns (it stops on SIGINT/SIGTERM after in-flight reconciles finish),
/// or on a signal while standing by; the Lease is released either way.
pub async fn run<F, Fut>(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    mut lead: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    info!(
        identity = %config.identity,
        lease = %format!("{}/{}", config.namespace, config.lease_name),
        "leader election: campaigning"
    );
    metrics.set_leader(false);
    let election = Election::start(client, config, metrics.clone()).await?;
    ready.store(true, Ordering::SeqCst);
    let mut role = election.role();
    let result = loop {
        tokio::select! {
            // A Leader role whose deadline already passed is stale: the fence is about to say so.
            became = role.wait_for(|r| matches!(r, Role::Leader { until } if *until > Instant::now())) => if became.is_err() {
                break Err(anyhow::anyhow!("leader election stopped"));
            },
            _ = shutdown_signal() => break Ok(()),
        }
        info!("leader election: starting the controller");
        let controller = lead();
        tokio::pin!(controller);
        tokio::select! {
            // Checked first, so a lost Lease wins over any reconcile ready to make progress.
            biased;
            _ = leadership_lost(&mut role) => {
                warn!("leader election: lost the Lease; stopped reconciling");
                metrics.set_leader(false);
            }
            done = &mut controller => break done,
        }
    };
    metrics.set_leader(false);
    election.stop().await;
    ready.store(false, Ordering::SeqCst);
    result
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};

    use super::*;

    fn lease(holder: &str, renewed: SystemTime, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::try_from(renewed).unwrap())),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_lease_held_by_us_lets_us_lead_until_half_a_grace_before_expiry() {
        let (wall, now) = (SystemTime::now(), Instant::now());
        let spec = lease("me", wall - Duration::from_secs(3), 15);
        let until = leader_until(Some(&spec), "me", Duration::from_secs(4), wall, now).unwrap();
        // Renewed 3 s ago, valid for 15 s, minus 2 s: 10 s left.
        let left = until - now;
        assert!(left > Duration::from_millis(9_990) && left <= Duration::from_secs(10), "{left:?}");
    }

    #[test]
    fn another_holder_or_no_holder_means_standby() {
        let (wall, now) = (SystemTime::now(), Instant::now());
        let grace = Duration::from_secs(4);
        assert_eq!(leader_until(Some(&lease("other", wall, 15)), "me", grace, wall, now), None);
        assert_eq!(leader_until(Some(&LeaseSpec::default()), "me", grace, wall, now), None);
        assert_eq!(leader_until(None, "me", grace, wall, now), None);
    }

    #[test]
    fn a_stale_renewal_means_standby_before_others_may_take_over() {
        let (wall, now) = (SystemTime::now(), Instant::now());
        // Renewed 14 s ago for 15 s: others may take over in 1 s, so we stop now (grace 4 s).
        let spec = lease("me", wall - Duration::from_secs(14), 15);
        assert_eq!(leader_until(Some(&spec), "me", Duration::from_secs(4), wall, now), None);
    }
}
