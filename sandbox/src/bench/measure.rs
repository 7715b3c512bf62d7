//! (pure) From what a case recorded (the gate's call log, creation and Ready times, the Console's
//! Defenders) to the numbers of the table. Nothing here does I/O or reads a clock.
//!
//! **Attribution.** A call belongs to the resources whose cluster name (every default name derives
//! from it: `<cluster>-workers`, `<cluster>-defender`, `ecs-defender/<cluster>-<hash>/...`) or
//! recorded id (launch template id) appears in its logged parameters; a call naming several
//! resources (a batched describe) counts 1/k for each of its k resources. Calls naming none (the
//! AMI, subnets, security groups, STS) are shared evenly: every per-resource figure is "calls
//! naming it, plus an even share of the rest", so the figures add up to the total.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime},
};

use crate::gate::Call;

/// Maps the names and ids a call log mentions back to resources (by index).
pub struct Attribution {
    names: HashMap<String, usize>,
    ids: HashMap<String, usize>,
}

impl Attribution {
    /// `names[i]` is resource i's cluster name (the stem of every name derived from it).
    pub fn new(names: &[String]) -> Attribution {
        let names = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Attribution { names, ids: HashMap::new() }
    }

    /// An id that does not carry the name (a launch template id `lt-...`) also means resource `i`.
    pub fn add_id(&mut self, id: &str, i: usize) {
        if !id.is_empty() {
            self.ids.insert(id.to_string(), i);
        }
    }

    /// The resources a call names, each once.
    pub fn resources_of(&self, call: &Call) -> Vec<usize> {
        let mut out = Vec::new();
        let mut add = |i: usize| {
            if !out.contains(&i) {
                out.push(i)
            }
        };
        for value in call.params.values() {
            for token in value.split([',', '/', ':', ' ', '|', '"']).filter(|t| !t.is_empty()) {
                if let Some(&i) = self.ids.get(token) {
                    add(i);
                }
                // The name itself, or the name followed by `-suffix` (whole words only, so
                // `w-1` is not found in `w-10-workers`).
                if let Some(&i) = self.names.get(token) {
                    add(i);
                }
                for (at, _) in token.match_indices('-') {
                    if let Some(&i) = self.names.get(&token[..at]) {
                        add(i);
                    }
                }
            }
        }
        out
    }
}

/// Per-resource AWS calls (mutating, read-only) within each resource's own time range, plus an
/// even share of the calls in `[from, to]` that name no resource. `ranges[i]` is resource i's
/// `(from, to)`; `None` leaves it out (its calls go nowhere, and it takes no share).
/// `skip` drops calls that were not the operator's (the bench's own).
pub fn per_resource_calls(
    calls: &[Call],
    attr: &Attribution,
    ranges: &[Option<(SystemTime, SystemTime)>],
    shared: (SystemTime, SystemTime),
    skip: &dyn Fn(&Call) -> bool,
) -> Vec<Option<(f64, f64)>> {
    let mut per: Vec<(f64, f64)> = vec![(0.0, 0.0); ranges.len()];
    let (mut shared_mut, mut shared_read) = (0.0, 0.0);
    for call in calls.iter().filter(|c| !skip(c)) {
        let owners = attr.resources_of(call);
        let add = |slot: &mut (f64, f64), w: f64| {
            if call.mutating { slot.0 += w } else { slot.1 += w }
        };
        if owners.is_empty() {
            if call.at >= shared.0 && call.at <= shared.1 {
                if call.mutating { shared_mut += 1.0 } else { shared_read += 1.0 }
            }
            continue;
        }
        let w = 1.0 / owners.len() as f64;
        for i in owners {
            if let Some((from, to)) = ranges[i]
                && call.at >= from
                && call.at <= to
            {
                add(&mut per[i], w);
            }
        }
    }
    let included = ranges.iter().filter(|r| r.is_some()).count().max(1) as f64;
    ranges
        .iter()
        .zip(per)
        .map(|(r, (m, rd))| r.map(|_| (m + shared_mut / included, rd + shared_read / included)))
        .collect()
}

/// Calls per `service:Operation` among the mutating calls naming resource `i` or none (for the
/// list of what converging one resource changes).
pub fn mutating_operations(calls: &[Call], attr: &Attribution, i: usize) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in calls.iter().filter(|c| c.mutating) {
        let owners = attr.resources_of(c);
        if !owners.is_empty() && !owners.contains(&i) {
            continue;
        }
        *out.entry(c.key()).or_insert(0) += 1;
    }
    out
}

/// Calls per `service:Operation` in `[from, to]`.
pub fn operations_in(calls: &[Call], from: SystemTime, to: SystemTime) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in calls.iter().filter(|c| c.at >= from && c.at <= to) {
        *out.entry(c.key()).or_insert(0) += 1;
    }
    out
}

/// Median, 95th percentile (nearest rank) and maximum of a sample.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dist {
    pub median: f64,
    pub p95: f64,
    pub max: f64,
    pub n: usize,
}

impl Dist {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Dist> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
        Some(Dist { median, p95: v[rank - 1], max: v[n - 1], n })
    }
}

/// Seconds from `a` to `b` (negative when `b` is earlier).
pub fn seconds(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Console requests that are further pages of a list (`offset` > 0): "beyond paging" in the
/// Console target does not count them.
pub fn is_later_page(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.split_once('=').is_some_and(|(k, v)| k == "offset" && v.parse::<u64>().is_ok_and(|n| n > 0)))
    })
}

/// Scales a count over `window` to a rate per hour.
pub fn per_hour(count: f64, window: Duration) -> f64 {
    count * 3600.0 / window.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: &str, params: &[(&str, &str)], secs: u64) -> Call {
        Call {
            service: "ecs".into(),
            operation: op.into(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            status: 200,
            error_code: None,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            mutating: crate::gate::protocol::is_mutating(op),
            region: "us-east-1".into(),
            answer_lost: false,
        }
    }

    #[test]
    fn attribution_finds_names_by_whole_words_and_ids() {
        let mut a = Attribution::new(&["w-1".into(), "w-10".into()]);
        a.add_id("lt-0abc", 0);
        assert_eq!(
            a.resources_of(&call("DescribeServices", &[("cluster", "w-10"), ("services", "w-10-defender")], 0)),
            vec![1]
        );
        assert_eq!(a.resources_of(&call("DescribeClusters", &[("clusters", "w-1,w-10")], 0)), vec![0, 1]);
        assert_eq!(
            a.resources_of(&call("DescribeTasks", &[("tasks", "arn:aws:ecs:us-east-1:1:task/w-1/abc")], 0)),
            vec![0]
        );
        assert_eq!(
            a.resources_of(&call("CreateSecret", &[("Name", "ecs-defender/w-10-0011aabb/install-bundle")], 0)),
            vec![1]
        );
        assert_eq!(a.resources_of(&call("DescribeLaunchTemplates", &[("LaunchTemplateId", "lt-0abc")], 0)), vec![0]);
        assert!(a.resources_of(&call("DescribeSubnets", &[], 0)).is_empty());
        assert!(a.resources_of(&call("DescribeServices", &[("cluster", "w-100")], 0)).is_empty());
    }

    #[test]
    fn per_resource_calls_split_batches_and_share_the_unnamed() {
        let a = Attribution::new(&["a".into(), "b".into()]);
        let calls = vec![
            call("CreateCluster", &[("clusterName", "a")], 1),
            call("DescribeClusters", &[("clusters", "a,b")], 2),
            call("DescribeSubnets", &[], 3),
            call("DescribeServices", &[("cluster", "b")], 50),
        ];
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let r = per_resource_calls(&calls, &a, &[Some((t(0), t(10))), Some((t(0), t(10)))], (t(0), t(10)), &|_| false);
        assert_eq!(r, vec![Some((1.0, 1.0)), Some((0.0, 1.0))]);
        // Out of range calls and excluded resources count nowhere.
        let r = per_resource_calls(&calls, &a, &[None, Some((t(0), t(100)))], (t(0), t(100)), &|_| false);
        assert_eq!(r, vec![None, Some((0.0, 2.5))]);
    }

    #[test]
    fn dist_and_pages() {
        let d = Dist::of([3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((d.median, d.p95, d.max, d.n), (2.5, 10.0, 10.0, 4));
        assert!(Dist::of([]).is_none());
        assert!(is_later_page(Some("limit=50&offset=50")));
        assert!(!is_later_page(Some("limit=50&offset=0")));
        assert!(!is_later_page(None));
    }
}
