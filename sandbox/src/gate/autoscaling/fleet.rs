//! What the gate knows about each Auto Scaling group beyond moto: the sizes the caller asked for,
//! which launch data each instance came from, scaling activities, instance refreshes and groups
//! being deleted. Pure state and rules; the I/O lives in [`super::launch`].
//!
//! Why the gate launches the instances itself: moto launches at once from the group's launch
//! template and fails (HTTP 500) on a version >= 2 with user data, never checks the instance
//! profile or the AMI's architecture, and keeps no scaling activities. So moto's copy of a group the
//! gate created holds `MinSize 0` and exactly the instances the gate attached; the gate keeps the
//! real sizes and presents them.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant, SystemTime},
};

use super::super::xml::Node;

/// Where a group lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupKey {
    pub account: String,
    pub region: String,
    pub name: String,
}

/// Which launch data an instance came from (a template version is resolved to its number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Template { id: String, name: String, version: i64 },
    Configuration(String),
}

/// Which kind of launch data a group was last given. moto keeps both a launch template and a launch
/// configuration when an update switches from one to the other; AWS keeps only the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LaunchKind {
    Template,
    Configuration,
}

impl LaunchKind {
    /// The kind a Create/UpdateAutoScalingGroup form sets, if it sets one.
    pub fn of_form<'a>(mut keys: impl Iterator<Item = &'a str>) -> Option<LaunchKind> {
        keys.find_map(|k| {
            if k == "LaunchConfigurationName" {
                Some(LaunchKind::Configuration)
            } else if k.starts_with("LaunchTemplate.") {
                Some(LaunchKind::Template)
            } else {
                None
            }
        })
    }

    /// Removes the other kind's launch data from a group as moto describes it.
    pub fn correct(self, group: &mut super::super::xml::Node) {
        match self {
            LaunchKind::Template => group.remove("LaunchConfigurationName"),
            LaunchKind::Configuration => group.remove("LaunchTemplate"),
        }
    }
}

/// An instance the gate launched into a group.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub source: Source,
    pub launched: Instant,
}

/// One scaling activity, as DescribeScalingActivities shows it.
#[derive(Clone, Debug)]
pub(crate) struct Activity {
    pub id: String,
    pub description: String,
    pub cause: String,
    pub start: SystemTime,
    pub end: SystemTime,
    /// `Successful` or `Failed`.
    pub status: &'static str,
    pub message: Option<String>,
    pub details: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshStatus {
    Pending,
    InProgress,
    Successful,
    Cancelled,
    Failed,
}

impl RefreshStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshStatus::Pending => "Pending",
            RefreshStatus::InProgress => "InProgress",
            RefreshStatus::Successful => "Successful",
            RefreshStatus::Cancelled => "Cancelled",
            RefreshStatus::Failed => "Failed",
        }
    }

    pub fn active(self) -> bool {
        matches!(self, RefreshStatus::Pending | RefreshStatus::InProgress)
    }
}

/// One instance refresh.
#[derive(Clone, Debug)]
pub(crate) struct Refresh {
    pub id: String,
    pub status: RefreshStatus,
    pub reason: Option<String>,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub min_healthy: i64,
    pub warmup: Duration,
    pub skip_matching: bool,
    /// Instances still to replace (decided when the refresh starts).
    pub to_replace: BTreeSet<String>,
    pub total: usize,
}

impl Refresh {
    pub fn percentage(&self) -> i64 {
        if self.total == 0 {
            return 100;
        }
        ((self.total - self.to_replace.len()) * 100 / self.total) as i64
    }

    pub fn finish(&mut self, status: RefreshStatus, reason: Option<String>) {
        self.status = status;
        self.reason = reason;
        self.end = Some(SystemTime::now());
    }
}

/// A force-deleted group: shown `Delete in progress` (as moto last described it) until `until`.
#[derive(Clone, Debug)]
pub(crate) struct Deleting {
    pub until: Instant,
    pub snapshot: Node,
}

/// The gate's state of one group.
#[derive(Clone, Debug)]
pub(crate) struct GroupState {
    pub min: i64,
    pub max: i64,
    pub desired: i64,
    /// The launch data's kind as last set (`None`: as moto says).
    pub launch: Option<LaunchKind>,
    pub members: HashMap<String, Member>,
    /// Oldest first.
    pub activities: Vec<Activity>,
    /// Oldest first.
    pub refreshes: Vec<Refresh>,
    pub deleting: Option<Deleting>,
    /// After a failed launch, when to try again (AWS retries with a back-off).
    pub retry_at: Option<Instant>,
    /// Something changed that the background loop should look at (an instance terminated through EC2).
    pub dirty: bool,
}

/// At most this many activities are kept per group (AWS keeps six weeks' worth).
const MAX_ACTIVITIES: usize = 200;

impl GroupState {
    pub fn new(min: i64, max: i64, desired: i64) -> GroupState {
        GroupState {
            min,
            max,
            desired,
            launch: None,
            members: HashMap::new(),
            activities: Vec::new(),
            refreshes: Vec::new(),
            deleting: None,
            retry_at: None,
            dirty: false,
        }
    }

    pub fn record(&mut self, activity: Activity) {
        self.activities.push(activity);
        if self.activities.len() > MAX_ACTIVITIES {
            self.activities.remove(0);
        }
    }

    pub fn active_refresh(&mut self) -> Option<&mut Refresh> {
        self.refreshes.iter_mut().rev().find(|r| r.status.active())
    }

    /// Whether the background loop has work here.
    pub fn needs_tick(&self) -> bool {
        self.dirty
            || self.deleting.is_some()
            || self.retry_at.is_some()
            || self.refreshes.iter().any(|r| r.status.active())
            || self.members.len() as i64 != self.desired
    }
}

/// The sizes after an UpdateAutoScalingGroup: without a desired capacity AWS moves the current one
/// into the new bounds.
pub(crate) fn updated_sizes(
    old: (i64, i64, i64),
    min: Option<i64>,
    max: Option<i64>,
    desired: Option<i64>,
) -> (i64, i64, i64) {
    let min = min.unwrap_or(old.0);
    let max = max.unwrap_or(old.1);
    let desired = desired.unwrap_or_else(|| old.2.clamp(min, max.max(min)));
    (min, max, desired)
}

/// How many instances one refresh batch may take out of service: the desired capacity less the
/// healthy share to keep (`MinHealthyPercentage`, rounded up), at least one.
pub(crate) fn refresh_batch(desired: i64, min_healthy_percent: i64) -> usize {
    let keep = (desired * min_healthy_percent + 99) / 100;
    (desired - keep).max(1) as usize
}

/// The architecture of an instance type: Graviton families carry a `g` after their generation
/// (`t4g`, `m6g`, `c7gn`, `r8g`, `x2gd`, `g5g`), and `a1` is the first Graviton.
pub(crate) fn instance_type_architecture(instance_type: &str) -> &'static str {
    let family = instance_type.split('.').next().unwrap_or(instance_type);
    if family == "a1" {
        return "arm64";
    }
    let after_generation = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let attributes = after_generation.trim_start_matches(|c: char| c.is_ascii_digit());
    let attributes = attributes.split('-').next().unwrap_or("");
    if attributes.contains('g') { "arm64" } else { "x86_64" }
}

/// AWS's reason for a launch whose AMI does not fit the instance type.
pub(crate) fn architecture_mismatch(type_arch: &str, image_arch: &str) -> String {
    format!(
        "The architecture '{type_arch}' of the specified instance type does not match the architecture '{image_arch}' of the specified AMI. Specify an instance type and an AMI that have matching architectures, and try again. You can use 'describe-instance-types' or 'describe-images' to discover the architecture of the instance type or AMI. Launching EC2 instance failed."
    )
}

pub(crate) const INVALID_PROFILE: &str = "Invalid IAM Instance Profile name. Launching EC2 instance failed.";

pub(crate) fn timestamp(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn at(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Why instances are launched: the difference between desired and actual capacity.
pub(crate) fn launch_cause(from: i64, to: i64) -> String {
    format!(
        "At {} an instance was started in response to a difference between desired and actual capacity, increasing the capacity from {from} to {to}.",
        at(SystemTime::now())
    )
}

pub(crate) fn launched(instance_id: &str, cause: String, subnet: Option<&str>, zone: &str) -> Activity {
    let now = SystemTime::now();
    Activity {
        id: new_id(),
        description: format!("Launching a new EC2 instance: {instance_id}"),
        cause,
        start: now,
        end: now,
        status: "Successful",
        message: None,
        details: details(subnet, zone),
    }
}

pub(crate) fn launch_failed(reason: &str, cause: String, subnet: Option<&str>, zone: &str) -> Activity {
    let now = SystemTime::now();
    Activity {
        id: new_id(),
        description: format!("Launching a new EC2 instance.  Status Reason: {reason}"),
        cause,
        start: now,
        end: now,
        status: "Failed",
        message: Some(reason.to_string()),
        details: details(subnet, zone),
    }
}

pub(crate) fn terminated(instance_id: &str, why: &str) -> Activity {
    let now = SystemTime::now();
    Activity {
        id: new_id(),
        description: format!("Terminating EC2 instance: {instance_id}"),
        cause: format!("At {} {why}", at(now)),
        start: now,
        end: now,
        status: "Successful",
        message: None,
        details: "{}".to_string(),
    }
}

fn details(subnet: Option<&str>, zone: &str) -> String {
    match subnet {
        Some(s) => serde_json::json!({"Subnet ID": s, "Availability Zone": zone}).to_string(),
        None => serde_json::json!({"Availability Zone": zone}).to_string(),
    }
}

impl Activity {
    pub fn to_node(&self, group: &str, arn: &str) -> Node {
        let mut children = vec![
            Node::leaf("ActivityId", &self.id),
            Node::leaf("AutoScalingGroupName", group),
            Node::leaf("Description", &self.description),
            Node::leaf("Cause", &self.cause),
            Node::leaf("StartTime", timestamp(self.start)),
            Node::leaf("EndTime", timestamp(self.end)),
            Node::leaf("StatusCode", self.status),
        ];
        if let Some(m) = &self.message {
            children.push(Node::leaf("StatusMessage", m));
        }
        children.push(Node::leaf("Progress", "100"));
        children.push(Node::leaf("Details", &self.details));
        if !arn.is_empty() {
            children.push(Node::leaf("AutoScalingGroupARN", arn));
        }
        Node::parent("member", children)
    }
}

impl Refresh {
    pub fn to_node(&self, group: &str) -> Node {
        let mut children = vec![
            Node::leaf("InstanceRefreshId", &self.id),
            Node::leaf("AutoScalingGroupName", group),
            Node::leaf("Status", self.status.as_str()),
        ];
        if let Some(r) = &self.reason {
            children.push(Node::leaf("StatusReason", r));
        }
        children.push(Node::leaf("StartTime", timestamp(self.start)));
        if let Some(end) = self.end {
            children.push(Node::leaf("EndTime", timestamp(end)));
        }
        children.push(Node::leaf("PercentageComplete", self.percentage().to_string()));
        children.push(Node::leaf("InstancesToUpdate", self.to_replace.len().to_string()));
        children.push(Node::parent(
            "Preferences",
            vec![
                Node::leaf("MinHealthyPercentage", self.min_healthy.to_string()),
                Node::leaf("InstanceWarmup", self.warmup.as_secs().to_string()),
                Node::leaf("SkipMatching", self.skip_matching.to_string()),
            ],
        ));
        children.push(Node::leaf("Strategy", "Rolling"));
        Node::parent("member", children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_of_instance_types() {
        for t in [
            "t4g.small",
            "m6g.large",
            "m6gd.xlarge",
            "c7g.large",
            "c7gn.medium",
            "r8g.large",
            "x2gd.large",
            "g5g.xlarge",
            "a1.medium",
            "im4gn.large",
        ] {
            assert_eq!(instance_type_architecture(t), "arm64", "{t}");
        }
        for t in [
            "t2.medium",
            "t3.large",
            "m5.large",
            "g4dn.xlarge",
            "g5.xlarge",
            "m7i-flex.large",
            "c6in.large",
            "p4d.24xlarge",
            "inf2.xlarge",
        ] {
            assert_eq!(instance_type_architecture(t), "x86_64", "{t}");
        }
    }

    #[test]
    fn refresh_batches_keep_the_healthy_share() {
        assert_eq!(refresh_batch(2, 50), 1);
        assert_eq!(refresh_batch(2, 100), 1, "at least one at a time");
        assert_eq!(refresh_batch(4, 50), 2);
        assert_eq!(refresh_batch(10, 90), 1);
        assert_eq!(refresh_batch(10, 0), 10);
        assert_eq!(refresh_batch(3, 50), 1, "keeps 2 of 3 (rounded up)");
    }

    #[test]
    fn update_moves_desired_into_new_bounds() {
        assert_eq!(updated_sizes((1, 2, 2), None, Some(1), None), (1, 1, 1));
        assert_eq!(updated_sizes((1, 2, 1), Some(2), Some(3), None), (2, 3, 2));
        assert_eq!(updated_sizes((1, 2, 2), None, None, Some(1)), (1, 2, 1));
    }

    #[test]
    fn refresh_percentage() {
        let mut r = Refresh {
            id: "r".into(),
            status: RefreshStatus::InProgress,
            reason: None,
            start: SystemTime::UNIX_EPOCH,
            end: None,
            min_healthy: 90,
            warmup: Duration::ZERO,
            skip_matching: true,
            to_replace: ["i-1".to_string(), "i-2".to_string()].into_iter().collect(),
            total: 2,
        };
        assert_eq!(r.percentage(), 0);
        r.to_replace.remove("i-1");
        assert_eq!(r.percentage(), 50);
        r.total = 0;
        assert_eq!(r.percentage(), 100);
    }
}
