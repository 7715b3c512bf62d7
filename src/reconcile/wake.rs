//! Wakes a resource that waits for its Defenders as soon as the Console lists a change in them,
//! rather than at its next backed-off look (those grow to `max_wait`). One poll per Console serves
//! every resource waiting on it: the shared Console view (glance.rs), so no AWS call and one paged
//! list per poll. Polls run only while some resource waits, at most every `interval`, and at least
//! twice as long apart as the last one took: a slow or rate-limited Console is asked less often,
//! and the polls never take more than a third of its time.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

use super::glance::{ConsoleGlances, Memos, connected_hosts_of};
use crate::{crd::EcsDefenderDeployment, prisma::ConsoleClient};

/// A resource waiting for its Defenders: the cluster they report and the connected hosts its last
/// look saw.
struct Waiter {
    object: ObjectRef<EcsDefenderDeployment>,
    cluster: String,
    seen: BTreeSet<String>,
}

/// The waiters of one Console.
#[derive(Default)]
struct Watch {
    waiters: HashMap<String, Waiter>,
}

/// Which resources wait for Defenders, by Console; each Console with waiters has one poll task.
pub struct Wakeups {
    watches: Mutex<HashMap<usize, Watch>>,
    trigger: UnboundedSender<ObjectRef<EcsDefenderDeployment>>,
    memos: Memos,
    interval: Duration,
}

impl Wakeups {
    /// `trigger` feeds `Controller::reconcile_on`; `interval`: the shortest time between polls.
    pub fn new(
        trigger: UnboundedSender<ObjectRef<EcsDefenderDeployment>>,
        memos: Memos,
        interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Self { watches: Default::default(), trigger, memos, interval })
    }

    /// (IO: may start the Console's poll) `uid` waits for the Defenders reporting `cluster` on
    /// `console`, `seen` connected at its last look: a different list wakes it.
    pub fn wait_for(
        self: &Arc<Self>,
        glances: &Arc<ConsoleGlances>,
        console: &Arc<ConsoleClient>,
        uid: &str,
        object: ObjectRef<EcsDefenderDeployment>,
        cluster: &str,
        seen: BTreeSet<String>,
    ) {
        let key = Arc::as_ptr(console) as usize;
        let mut watches = self.watches.lock().unwrap();
        // A resource waits on one Console at a time (its Secret may have moved it).
        for (k, w) in watches.iter_mut() {
            if *k != key {
                w.waiters.remove(uid);
            }
        }
        let start = !watches.contains_key(&key);
        let watch = watches.entry(key).or_default();
        watch.waiters.insert(uid.to_string(), Waiter { object, cluster: cluster.to_string(), seen });
        if start {
            tokio::spawn(self.clone().poll(key, glances.clone(), console.clone()));
        }
    }

    /// `uid` waits for its Defenders no longer (Ready, another wait, gone).
    pub fn done(&self, uid: &str) {
        for w in self.watches.lock().unwrap().values_mut() {
            w.waiters.remove(uid);
        }
    }

    /// (IO) Polls one Console while anyone waits on it; ends when no one does.
    async fn poll(self: Arc<Self>, key: usize, glances: Arc<ConsoleGlances>, console: Arc<ConsoleClient>) {
        let mut pause = self.interval;
        loop {
            tokio::time::sleep(pause).await;
            {
                let mut watches = self.watches.lock().unwrap();
                if watches.get(&key).is_none_or(|w| w.waiters.is_empty()) {
                    watches.remove(&key);
                    return;
                }
            }
            let started = Instant::now();
            let (_, view) = glances.get(&console, started).await;
            pause = self.interval.max(started.elapsed() * 2);
            let Some((_, defenders)) = view else { continue }; // not answering: the waits' own looks go on
            let woken: Vec<(String, ObjectRef<EcsDefenderDeployment>)> = {
                let mut watches = self.watches.lock().unwrap();
                let Some(watch) = watches.get_mut(&key) else { return };
                watch
                    .waiters
                    .iter_mut()
                    .filter_map(|(uid, w)| {
                        let now = connected_hosts_of(&w.cluster, &defenders);
                        (now != w.seen).then(|| {
                            w.seen = now;
                            (uid.clone(), w.object.clone())
                        })
                    })
                    .collect()
            };
            for (uid, object) in woken {
                tracing::debug!(resource = %object.name, "the Console lists a change in the Defenders it waits for");
                // Not an echo of our own status patch: the look is due now.
                self.memos.wake(&uid);
                let _ = self.trigger.unbounded_send(object);
            }
        }
    }
}
