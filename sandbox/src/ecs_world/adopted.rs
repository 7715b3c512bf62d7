//! Instances whose agent registered before the world saw them: clusters set up by hand before the
//! operator was installed ([`crate::seed`]). The world adopts such an instance as registered
//! instead of booting it and reading its user data.
//!
//! Whoever sets instances up holds the world off new instances ([`Adoptions::hold`]) from before
//! it launches them until it has told the world what it registered, so no agent boots on an
//! instance meanwhile (it would join `default`, or the cluster a second time).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// (region, EC2 instance id) -> (cluster, container instance ARN).
type Registered = HashMap<(String, String), (String, String)>;

#[derive(Default)]
struct State {
    holds: usize,
    registered: Registered,
}

/// Shared between the world's loop and the handle (a cheap clone).
#[derive(Clone, Default)]
pub(crate) struct Adoptions {
    inner: Arc<Mutex<State>>,
}

/// While alive, the world's agents leave instances they have not seen yet alone.
pub struct AdoptionHold {
    adoptions: Adoptions,
}

impl Drop for AdoptionHold {
    fn drop(&mut self) {
        let mut s = self.adoptions.lock();
        s.holds = s.holds.saturating_sub(1);
    }
}

impl Adoptions {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn hold(&self) -> AdoptionHold {
        self.lock().holds += 1;
        AdoptionHold { adoptions: self.clone() }
    }

    pub(crate) fn held(&self) -> bool {
        self.lock().holds > 0
    }

    pub(crate) fn adopt(&self, region: &str, instance_id: &str, cluster: &str, container_instance: &str) {
        self.lock().registered.insert(
            (region.to_string(), instance_id.to_string()),
            (cluster.to_string(), container_instance.to_string()),
        );
    }

    /// The registration of an instance, once (the agent keeps it from then on).
    pub(crate) fn take(&self, region: &str, instance_id: &str) -> Option<(String, String)> {
        let mut s = self.lock();
        if s.registered.is_empty() {
            return None;
        }
        s.registered.remove(&(region.to_string(), instance_id.to_string()))
    }
}
