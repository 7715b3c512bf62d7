//! What the ECS world can be told to get wrong, per cluster, and what it tells back: the service
//! events ECS would show (`DescribeServices` `events`). Shared between the world's loop, the Rust
//! API ([`super::EcsWorld::faults`], [`super::EcsWorld::service_events`]) and the control API
//! ([`super::control`]).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Faults switched on for one cluster (by name, in every region).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterFaults {
    /// Every task's image fails to pull: the task stops with `CannotPullContainerError`.
    pub cannot_pull_image: bool,
    /// Every agent in the cluster is disconnected: nothing new is placed (`encountered error
    /// "AGENT"`), running tasks keep running.
    pub agent_disconnected: bool,
}

/// One service event, as `DescribeServices` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub message: String,
}

/// ECS keeps the 100 most recent events per service.
const MAX_EVENTS: usize = 100;

/// (region, cluster, service).
pub type ServiceKey = (String, String, String);

#[derive(Default)]
struct State {
    faults: BTreeMap<String, ClusterFaults>,
    events: BTreeMap<ServiceKey, Vec<ServiceEvent>>,
}

/// Faults and events of one world (a cheap clone sharing them).
#[derive(Clone, Default)]
pub struct WorldState {
    inner: Arc<Mutex<State>>,
}

impl WorldState {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the faults of `cluster` (all off: [`ClusterFaults::default`]).
    pub fn set_faults(&self, cluster: &str, faults: ClusterFaults) {
        let mut s = self.lock();
        if faults == ClusterFaults::default() {
            s.faults.remove(cluster);
        } else {
            s.faults.insert(cluster.to_string(), faults);
        }
    }

    pub fn faults(&self, cluster: &str) -> ClusterFaults {
        self.lock().faults.get(cluster).cloned().unwrap_or_default()
    }

    pub fn all_faults(&self) -> BTreeMap<String, ClusterFaults> {
        self.lock().faults.clone()
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Records an event unless it repeats the newest one: ECS omits duplicate messages until the
    /// cause is resolved.
    pub fn add_event(&self, key: ServiceKey, message: String) {
        let mut s = self.lock();
        let events = s.events.entry(key).or_default();
        if events.first().is_some_and(|e| e.message == message) {
            return;
        }
        // Newest first, as ECS lists them.
        events.insert(0, ServiceEvent { id: uuid::Uuid::new_v4().to_string(), created_at: Utc::now(), message });
        events.truncate(MAX_EVENTS);
    }

    /// The events of one service, newest first.
    pub fn events(&self, region: &str, cluster: &str, service: &str) -> Vec<ServiceEvent> {
        self.lock()
            .events
            .get(&(region.to_string(), cluster.to_string(), service.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Every service's events.
    pub fn all_events(&self) -> BTreeMap<ServiceKey, Vec<ServiceEvent>> {
        self.lock().events.clone()
    }
}

/// The `stoppedReason` of a task whose image cannot be pulled, in the agent's wording.
pub fn cannot_pull(image: &str) -> String {
    format!(
        "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref {image}: not found"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_events_are_omitted_and_faults_clear() {
        let s = WorldState::default();
        let key = ("r".to_string(), "c".to_string(), "svc".to_string());
        s.add_event(key.clone(), "a".into());
        s.add_event(key.clone(), "a".into());
        s.add_event(key.clone(), "b".into());
        let msgs: Vec<String> = s.events("r", "c", "svc").into_iter().map(|e| e.message).collect();
        assert_eq!(msgs, ["b", "a"]);
        s.set_faults("c", ClusterFaults { cannot_pull_image: true, ..Default::default() });
        assert!(s.faults("c").cannot_pull_image);
        s.set_faults("c", ClusterFaults::default());
        assert!(s.all_faults().is_empty());
        assert!(cannot_pull("x:1").starts_with("CannotPullContainerError: "));
    }
}
