//! What the gate saw change ([`crate::gate::Change`]), collected per region until the world's
//! next round takes it. With hints the world reads a cluster when something happened to it and
//! only sweeps the rest slowly; without (a world whose gate was never wired to it) it reads
//! everything every round, as AWS gives no such signal and moto changes behind its back would
//! otherwise go unseen.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::gate::{Change, ChangeListener};

/// The changes of one region since the last round.
#[derive(Debug, Default)]
pub(crate) struct RegionHints {
    pub clusters: BTreeSet<String>,
    pub instances: BTreeSet<String>,
    /// Some other EC2 or Auto Scaling change.
    pub ec2: bool,
}

/// Shared between the gate (writing) and the world's loop (taking); a cheap clone.
#[derive(Clone, Default)]
pub(crate) struct Hints {
    attached: Arc<AtomicBool>,
    inner: Arc<Mutex<HashMap<String, RegionHints>>>,
}

impl Hints {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, RegionHints>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The listener to give the gate; from then on the world trusts the hints.
    pub(crate) fn listener(&self) -> Arc<dyn ChangeListener> {
        self.attached.store(true, Ordering::Relaxed);
        Arc::new(self.clone())
    }

    /// Whether a gate tells this world what changes.
    pub(crate) fn attached(&self) -> bool {
        self.attached.load(Ordering::Relaxed)
    }

    pub(crate) fn take(&self, region: &str) -> RegionHints {
        self.lock().remove(region).unwrap_or_default()
    }
}

impl ChangeListener for Hints {
    fn changed(&self, change: Change) {
        let mut all = self.lock();
        match change {
            Change::EcsCluster { region, cluster } => {
                all.entry(region).or_default().clusters.insert(cluster);
            }
            Change::Instances { region, ids } => all.entry(region).or_default().instances.extend(ids),
            Change::Ec2 { region } => all.entry(region).or_default().ec2 = true,
        }
    }
}
