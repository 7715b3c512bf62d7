//! Rate budgets: token buckets that every AWS and Console request passes before it is sent, so one
//! operator never spends an account's (or a Console's) whole request quota, however many resources
//! it reconciles and however they retry.
//!
//! - AWS: one bucket per target (region, endpoint, credentials, role: as close to "account and
//!   region" as the operator can tell without asking STS) and per service; the SDK clients of a
//!   target share an HTTP client that waits on the bucket of the request's service (read from its
//!   SigV4 signature), so SDK retries and credential calls (STS) pass too. See [`crate::aws::budget`].
//! - Console: one bucket per Console URL, waited on before every request ([`crate::prisma`]).
//!
//! Waiting is first come, first served (a fair queue in front of the bucket), and shows in the
//! metrics as `..._rate_limit_waits_total` and `..._rate_limit_wait_seconds_total`.

use std::{
    collections::BTreeMap,
    fmt,
    num::NonZeroU32,
    str::FromStr,
    time::{Duration, Instant},
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
};

/// The AWS services the operator calls, by SigV4 signing name.
pub const AWS_SERVICES: [&str; 7] = ["ecs", "autoscaling", "ec2", "ssm", "secretsmanager", "iam", "sts"];

/// A sustained rate and a burst: `per_second` tokens refill each second into a bucket holding at
/// most `burst`. In any window of `t` seconds at most `burst + per_second * t` requests pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    fn quota(&self) -> Quota {
        // Both are checked when parsed; the fallbacks only keep a hand-built value from panicking.
        let period = Duration::from_secs_f64(1.0 / self.per_second.max(1e-6));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.per_second, self.burst)
    }
}

impl FromStr for RateLimit {
    type Err = String;

    /// `RATE/BURST` (`20/40`, `0.5/5`), or `RATE` alone with a burst of one second's worth.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (rate, burst) = match s.split_once('/') {
            Some((r, b)) => (r.trim(), Some(b.trim())),
            None => (s, None),
        };
        let per_second: f64 =
            rate.parse().ok().filter(|r: &f64| r.is_finite() && *r > 0.0).ok_or_else(|| {
                format!("{s:?}: the rate must be a positive number of requests per second (RATE/BURST)")
            })?;
        let burst = match burst {
            Some(b) => b
                .parse::<u32>()
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| format!("{s:?}: the burst must be a whole number of requests, at least 1"))?,
            None => (per_second.ceil() as u32).max(1),
        };
        Ok(Self { per_second, burst })
    }
}

/// Per-service AWS rate limits; a service without one (`SERVICE=off`) is not limited.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsRateLimits(BTreeMap<&'static str, RateLimit>);

impl Default for AwsRateLimits {
    /// Below what AWS documents per account and region, leaving room for the account's other
    /// tools. AWS counts per action category; one bucket per service here caps the sum of our
    /// categories, so each default is below the *lowest* read category the operator uses.
    fn default() -> Self {
        Self(BTreeMap::from([
            // ECS API reference, "Request throttling for the Amazon ECS API": cluster, task
            // definition, service and cluster-resource read actions sustain 20/s with bursts of
            // 50-100. Mutations are a few per resource (their categories allow 1-5/s, bursts 20-50,
            // and a throttled one is retried by the SDK).
            ("ecs", RateLimit::new(18.0, 45)),
            // EC2 Auto Scaling: one shared bucket for every Auto Scaling API call per account and
            // region, its size not published (AWS re:Post knowledge center, "autoscaling API calls
            // throttled"): kept low.
            ("autoscaling", RateLimit::new(5.0, 20)),
            // EC2 API reference, "Request throttling for the Amazon EC2 API": non-mutating actions
            // 20/s (bucket 100), unfiltered and unpaginated ones 10/s (50), mutating 5/s (50).
            ("ec2", RateLimit::new(8.0, 40)),
            // Systems Manager quotas: GetParameter(s) 40 transactions/s at standard throughput.
            ("ssm", RateLimit::new(10.0, 20)),
            // Secrets Manager quotas: CreateSecret, PutSecretValue, DeleteSecret, TagResource 50/s
            // each; DescribeSecret and GetSecretValue far more.
            ("secretsmanager", RateLimit::new(10.0, 20)),
            // IAM publishes no request rate and throttles its control plane low: kept low (at 2/s
            // a fleet of 100 converging resources queued IAM reads past the SDK's 20 s attempt
            // timeout in `make bench`).
            ("iam", RateLimit::new(5.0, 20)),
            // STS quotas: AssumeRole and friends 600 requests/s per account and region; only
            // credential refreshes go there.
            ("sts", RateLimit::new(5.0, 10)),
        ]))
    }
}

impl AwsRateLimits {
    /// No limit on any service.
    pub fn unlimited() -> Self {
        Self(BTreeMap::new())
    }

    /// The limit of `service`, if it has one.
    pub fn get(&self, service: &str) -> Option<RateLimit> {
        self.0.get(service).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, RateLimit)> + '_ {
        self.0.iter().map(|(s, l)| (*s, *l))
    }

    /// Sets (or with `None` removes) the limit of `service`.
    pub fn set(&mut self, service: &str, limit: Option<RateLimit>) -> Result<(), String> {
        let Some(name) = AWS_SERVICES.iter().find(|s| **s == service) else {
            return Err(format!("unknown AWS service {service:?} (known: {})", AWS_SERVICES.join(", ")));
        };
        match limit {
            Some(l) => self.0.insert(name, l),
            None => self.0.remove(name),
        };
        Ok(())
    }
}

impl FromStr for AwsRateLimits {
    type Err = String;

    /// The defaults, changed by `SERVICE=RATE/BURST` or `SERVICE=off` entries, comma-separated:
    /// `ecs=20/40,autoscaling=10/20,iam=off`. Empty: the defaults.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut limits = Self::default();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (service, limit) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?}: expected SERVICE=RATE/BURST or SERVICE=off"))?;
            let limit = match limit.trim() {
                "off" => None,
                l => Some(l.parse::<RateLimit>().map_err(|e| format!("{}: {e}", service.trim()))?),
            };
            limits.set(service.trim(), limit)?;
        }
        Ok(limits)
    }
}

impl fmt::Display for AwsRateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = AWS_SERVICES
            .iter()
            .map(|s| match self.get(s) {
                Some(l) => format!("{s}={l}"),
                None => format!("{s}=off"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The Console's default: 2 requests/s sustained, bursts of 20. The Compute API documents a 429
/// with per-endpoint limits but publishes no number for the endpoints the operator calls
/// (/authenticate, /version, /defenders, /defenders/ecs-task.json; see
/// reference/prisma-console-api.md section 4); this stays well below the limits Prisma Cloud's
/// other APIs publish and below what one resource's convergence needs per second.
pub const DEFAULT_CONSOLE_RATE_LIMIT: RateLimit = RateLimit::new(2.0, 20);

/// Parses `RATE/BURST` or `off` (no limit): the Console flag's value.
pub fn parse_optional_limit(s: &str) -> Result<Option<RateLimit>, String> {
    match s.trim() {
        "off" => Ok(None),
        l => l.parse().map(Some),
    }
}

/// One token bucket with a first-come-first-served queue in front of it.
pub struct Bucket {
    limit: RateLimit,
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    /// Held while waiting for a token: requests leave in the order they came, and only the head
    /// of the queue polls the bucket (no thundering herd when a token frees up).
    queue: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket").field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl Bucket {
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, limiter: RateLimiter::direct(limit.quota()), queue: Default::default() }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token, waiting for one (and for the requests queued before) if need be. `None`:
    /// passed at once; `Some(d)`: waited `d`. Dropping the future gives up its place in the
    /// queue without spending a token.
    pub async fn acquire(&self) -> Option<Duration> {
        if let Ok(_turn) = self.queue.try_lock()
            && self.limiter.check().is_ok()
        {
            return None;
        }
        let start = Instant::now();
        let _turn = self.queue.lock().await;
        loop {
            match self.limiter.check() {
                Ok(()) => return Some(start.elapsed()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.limiter.clock().now());
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_rate_slash_burst_or_a_rate_alone() {
        assert_eq!("20/40".parse::<RateLimit>(), Ok(RateLimit::new(20.0, 40)));
        assert_eq!(" 0.5 / 5 ".parse::<RateLimit>(), Ok(RateLimit::new(0.5, 5)));
        assert_eq!("2.5".parse::<RateLimit>(), Ok(RateLimit::new(2.5, 3)), "a second's worth of burst");
        assert_eq!("0.2".parse::<RateLimit>(), Ok(RateLimit::new(0.2, 1)));
        for bad in ["", "0/5", "-1/5", "x/5", "5/0", "5/1.5", "5/x", "inf/5", "NaN/5"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_optional_limit("off"), Ok(None));
        assert_eq!(parse_optional_limit("3/9"), Ok(Some(RateLimit::new(3.0, 9))));
    }

    #[test]
    fn aws_limits_override_the_defaults_per_service() {
        let limits: AwsRateLimits = "ecs=20/40, autoscaling=1/2,iam=off".parse().unwrap();
        assert_eq!(limits.get("ecs"), Some(RateLimit::new(20.0, 40)));
        assert_eq!(limits.get("autoscaling"), Some(RateLimit::new(1.0, 2)));
        assert_eq!(limits.get("iam"), None, "off: unlimited");
        assert_eq!(limits.get("ec2"), AwsRateLimits::default().get("ec2"), "the rest keep their defaults");
        assert_eq!("".parse::<AwsRateLimits>().unwrap(), AwsRateLimits::default());
        // The rendering parses back to the same limits.
        assert_eq!(limits.to_string().parse::<AwsRateLimits>().unwrap(), limits);

        let err = "lambda=1/1".parse::<AwsRateLimits>().unwrap_err();
        assert!(err.contains("unknown AWS service \"lambda\"") && err.contains("ecs, autoscaling"), "{err}");
        assert!("ecs".parse::<AwsRateLimits>().unwrap_err().contains("SERVICE=RATE/BURST"));
        assert!("ecs=fast".parse::<AwsRateLimits>().unwrap_err().starts_with("ecs: "));
    }

    #[test]
    fn every_service_has_a_default_below_the_documented_aws_limits() {
        let d = AwsRateLimits::default();
        for s in AWS_SERVICES {
            assert!(d.get(s).is_some(), "{s} has no default");
        }
        // The lowest read category the operator uses: ECS 20/s (bucket 50), EC2 unfiltered
        // describes 10/s (bucket 50).
        let ecs = d.get("ecs").unwrap();
        assert!(ecs.per_second < 20.0 && ecs.burst < 50, "{ecs}");
        let ec2 = d.get("ec2").unwrap();
        assert!(ec2.per_second < 10.0 && ec2.burst < 50, "{ec2}");
    }

    #[tokio::test]
    async fn the_bucket_lets_a_burst_through_then_the_rate() {
        let bucket = Bucket::new(RateLimit::new(20.0, 3));
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(bucket.acquire().await, None, "request {i} is within the burst");
        }
        let mut waited = Duration::ZERO;
        for _ in 0..4 {
            waited += bucket.acquire().await.expect("the burst is spent: wait");
        }
        let elapsed = start.elapsed();
        // 4 more at 20/s: at least ~200 ms in all (governor's GCRA spaces them 50 ms apart).
        assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
    }

    #[tokio::test]
    async fn waiters_are_served_in_order_and_never_beyond_burst_plus_rate() {
        let bucket = std::sync::Arc::new(Bucket::new(RateLimit::new(50.0, 2)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..12u32 {
            let b = bucket.clone();
            tasks.push(tokio::spawn(async move {
                // Staggered arrivals, so the order of arrival is known.
                tokio::time::sleep(Duration::from_millis(u64::from(i))).await;
                b.acquire().await;
                (i, start.elapsed())
            }));
        }
        let mut passed = Vec::new();
        for t in tasks {
            passed.push(t.await.unwrap());
        }
        passed.sort_by_key(|(_, at)| *at);
        let order: Vec<u32> = passed.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..12).collect::<Vec<_>>(), "first come, first served");
        // In every window from the first pass, at most burst + rate x window passed.
        let t0 = passed[0].1;
        for (n, (_, at)) in passed.iter().enumerate() {
            let allowed = 2.0 + 50.0 * (*at - t0).as_secs_f64();
            assert!((n + 1) as f64 <= allowed + 1.0, "{} passed by {:?}, allowed {allowed}", n + 1, *at - t0);
        }
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_spends_no_token() {
        let bucket = Bucket::new(RateLimit::new(1.0, 1));
        assert_eq!(bucket.acquire().await, None);
        // The next token is a second away: give up after 100 ms.
        assert!(tokio::time::timeout(Duration::from_millis(100), bucket.acquire()).await.is_err());
        let waited = bucket.acquire().await.expect("still a wait for the same token");
        assert!(waited <= Duration::from_millis(950), "the abandoned wait took no token: {waited:?}");
    }
}
