//! Faults injected on demand, and AWS's request-rate limits emulated with token buckets.
//! Pure state machines (the caller passes the time and the random draw), so they test without I/O.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// One fault rule: what to do to matching calls, how often and how many times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Service signing name (`ecs`, `autoscaling`, `ec2`, `ssm`, `iam`, `sts`) or `*` for all.
    pub service: String,
    /// Operation (`CreateService`); `None` matches every operation of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub kind: FaultKind,
    /// How many calls it hits before it disappears; `None`: until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Probability that a matching call is hit (0..=1); `None`: every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// How many matching calls pass untouched before the fault starts (to hit the n-th call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<u32>,
}

/// What a fault does. JSON: `"throttle"`, `"drop"`, `"dropResponse"`, `"hang"`, `"hangAfterDone"`,
/// `{"status": 503}`, `{"latencyMs": 800}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// The service's throttling error (ECS `ThrottlingException` 400, Auto Scaling `Throttling` 400,
    /// EC2 `RequestLimitExceeded` 503).
    Throttle,
    /// An error with this HTTP status (500, 503, ...) in the service's format.
    Status(u16),
    /// The call is delayed, then served normally.
    #[serde(rename = "latencyMs", with = "millis")]
    Latency(Duration),
    /// The connection is closed without a response (the call never reaches moto).
    Drop,
    /// The call is carried out (moto does the work), then the connection is closed without the
    /// answer: AWS did it, the caller does not know.
    DropResponse,
    /// The call never reaches moto and never gets an answer (a network black hole); logged as it
    /// arrives, so a test can act (kill the caller) at exactly this point.
    Hang,
    /// The call is carried out, then the answer is held back forever; logged as soon as moto is
    /// done, so a test can kill the caller after AWS did the work and before it learnt so.
    HangAfterDone,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Fault {
    /// A fault on every call of `service` (`operation` narrows it with [`Fault::on`]).
    pub fn new(service: &str, kind: FaultKind) -> Fault {
        Fault { service: service.to_string(), operation: None, kind, count: None, rate: None, skip: None }
    }

    pub fn on(mut self, operation: &str) -> Fault {
        self.operation = Some(operation.to_string());
        self
    }

    pub fn times(mut self, count: u32) -> Fault {
        self.count = Some(count);
        self
    }

    /// The first `n` matching calls pass; the fault starts with the next one.
    pub fn after(mut self, n: u32) -> Fault {
        self.skip = Some(n);
        self
    }

    pub fn with_rate(mut self, rate: f64) -> Fault {
        self.rate = Some(rate);
        self
    }

    fn matches(&self, service: &str, operation: &str) -> bool {
        (self.service == "*" || self.service == service) && self.operation.as_deref().is_none_or(|o| o == operation)
    }
}

/// What the faults decided for one call.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Total injected latency before anything else happens.
    pub latency: Duration,
    /// An error or a dropped connection instead of the real answer.
    pub action: Option<FaultKind>,
}

/// The active faults, in the order they were added.
#[derive(Debug, Default)]
pub struct FaultSet {
    faults: Vec<Fault>,
}

impl FaultSet {
    pub fn add(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    pub fn clear(&mut self) {
        self.faults.clear();
    }

    pub fn list(&self) -> Vec<Fault> {
        self.faults.clone()
    }

    /// Decides for one call. `draw` yields uniform numbers in [0, 1) for rate-limited faults.
    /// Latency faults add up; the first other fault that fires wins. Counted faults are used up.
    pub fn decide(&mut self, service: &str, operation: &str, mut draw: impl FnMut() -> f64) -> Decision {
        let mut decision = Decision::default();
        for fault in self.faults.iter_mut() {
            if !fault.matches(service, operation) || fault.count == Some(0) {
                continue;
            }
            if let Some(skip) = fault.skip.as_mut()
                && *skip > 0
            {
                *skip -= 1;
                continue;
            }
            if matches!(fault.kind, FaultKind::Latency(_)) || decision.action.is_none() {
                if let Some(rate) = fault.rate
                    && draw() >= rate
                {
                    continue;
                }
                if let Some(c) = fault.count.as_mut() {
                    *c -= 1;
                }
                match &fault.kind {
                    FaultKind::Latency(d) => decision.latency += *d,
                    other => decision.action = Some(other.clone()),
                }
            }
        }
        self.faults.retain(|f| f.count != Some(0));
        decision
    }
}

/// A request-rate limit: a token bucket refilled at `per_second`, holding at most `burst` tokens
/// (AWS documents its API limits this way, per account and region).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// Token buckets per (service, region), for the services that have a limit.
#[derive(Debug, Default)]
pub struct RateLimiter {
    limits: BTreeMap<String, RateLimit>,
    buckets: BTreeMap<(String, String), (f64, Instant)>,
}

impl RateLimiter {
    pub fn set(&mut self, service: &str, limit: Option<RateLimit>) {
        match limit {
            Some(l) => {
                self.limits.insert(service.to_string(), l);
            }
            None => {
                self.limits.remove(service);
            }
        }
        self.buckets.retain(|(s, _), _| s != service);
    }

    pub fn limits(&self) -> BTreeMap<String, RateLimit> {
        self.limits.clone()
    }

    /// Takes a token for a call; `false` means the call exceeds the limit and is throttled.
    pub fn admit(&mut self, service: &str, region: &str, now: Instant) -> bool {
        let Some(limit) = self.limits.get(service) else { return true };
        let (tokens, last) =
            self.buckets.entry((service.to_string(), region.to_string())).or_insert((limit.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * limit.per_second).min(limit.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_fault_is_used_up() {
        let mut set = FaultSet::default();
        set.add(Fault::new("ecs", FaultKind::Throttle).on("CreateService").times(2));
        assert_eq!(set.decide("ecs", "DescribeServices", || 0.0).action, None);
        assert_eq!(set.decide("autoscaling", "CreateService", || 0.0).action, None);
        assert_eq!(set.decide("ecs", "CreateService", || 0.0).action, Some(FaultKind::Throttle));
        assert_eq!(set.decide("ecs", "CreateService", || 0.0).action, Some(FaultKind::Throttle));
        assert_eq!(set.decide("ecs", "CreateService", || 0.0).action, None);
        assert!(set.list().is_empty());
    }

    #[test]
    fn a_skipping_fault_hits_exactly_the_nth_call() {
        let mut set = FaultSet::default();
        set.add(Fault::new("ecs", FaultKind::Hang).on("CreateService").after(2).times(1));
        assert_eq!(set.decide("ecs", "CreateService", || 0.0).action, None);
        assert_eq!(set.decide("ecs", "DescribeServices", || 0.0).action, None);
        assert_eq!(set.decide("ecs", "CreateService", || 0.0).action, None);
        assert_eq!(set.decide("ecs", "CreateService", || 0.0).action, Some(FaultKind::Hang));
        assert_eq!(set.decide("ecs", "CreateService", || 0.0).action, None);
        assert!(set.list().is_empty());
    }

    #[test]
    fn rate_draws_decide_and_latency_adds_up() {
        let mut set = FaultSet::default();
        set.add(Fault::new("*", FaultKind::Latency(Duration::from_millis(100))));
        set.add(Fault::new("ec2", FaultKind::Latency(Duration::from_millis(50))));
        set.add(Fault::new("ec2", FaultKind::Status(503)).with_rate(0.5));
        set.add(Fault::new("ec2", FaultKind::Drop));
        let d = set.decide("ec2", "DescribeInstances", || 0.7);
        assert_eq!(d, Decision { latency: Duration::from_millis(150), action: Some(FaultKind::Drop) });
        let d = set.decide("ec2", "DescribeInstances", || 0.2);
        assert_eq!(d.action, Some(FaultKind::Status(503)));
        assert_eq!(set.decide("ecs", "ListTasks", || 0.0).latency, Duration::from_millis(100));
    }

    #[test]
    fn fault_json_shape() {
        let f: Fault =
            serde_json::from_str(r#"{"service":"ecs","operation":"ListTasks","kind":{"latencyMs":250},"count":1}"#)
                .unwrap();
        assert_eq!(f, Fault::new("ecs", FaultKind::Latency(Duration::from_millis(250))).on("ListTasks").times(1));
        let f: Fault = serde_json::from_str(r#"{"service":"ec2","kind":"throttle","rate":0.5}"#).unwrap();
        assert_eq!(f, Fault::new("ec2", FaultKind::Throttle).with_rate(0.5));
        assert_eq!(serde_json::to_string(&FaultKind::Status(503)).unwrap(), r#"{"status":503}"#);
        assert_eq!(serde_json::to_string(&FaultKind::Drop).unwrap(), r#""drop""#);
        assert_eq!(serde_json::to_string(&FaultKind::DropResponse).unwrap(), r#""dropResponse""#);
    }

    #[test]
    fn token_bucket_throttles_bursts_and_refills() {
        let mut limiter = RateLimiter::default();
        limiter.set("ecs", Some(RateLimit { per_second: 2.0, burst: 3.0 }));
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.admit("ecs", "us-east-1", t0)));
        assert!(!limiter.admit("ecs", "us-east-1", t0));
        assert!(limiter.admit("ecs", "eu-west-1", t0), "buckets are per region");
        assert!(limiter.admit("autoscaling", "us-east-1", t0), "no limit, no bucket");
        assert!(limiter.admit("ecs", "us-east-1", t0 + Duration::from_millis(500)));
        assert!(!limiter.admit("ecs", "us-east-1", t0 + Duration::from_millis(500)));
    }
}
