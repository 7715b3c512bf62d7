//! Faults on demand: rules that make the next N (or every) matching call fail the way a real
//! Console or the network in front of it can fail.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::lock;

/// One way a call can fail. JSON (control API): `"serverError"`, `"dropConnection"`,
/// `"expireTokens"`, `{"tooManyRequests": {"retryAfter": 2}}`, `{"delayMs": 400}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// `429 {"err": ...}`, with `Retry-After: <seconds>` when set.
    #[serde(rename_all = "camelCase")]
    TooManyRequests {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// `500 {"err": ...}`.
    ServerError,
    /// Wait this long, then answer normally (or with the next fault that matches).
    #[serde(rename = "delayMs", with = "millis")]
    Delay(Duration),
    /// Close the TCP connection after reading the request, without any HTTP response.
    DropConnection,
    /// Make every token issued so far expired, then answer normally: a call with a bearer
    /// token gets 401, as when a token expires mid-session.
    ExpireTokens,
}

impl Fault {
    /// Whether this fault answers the call itself (the others only change what happens before).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Fault::TooManyRequests { .. } | Fault::ServerError | Fault::DropConnection)
    }
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

/// A fault, where it applies and how often. JSON (control API):
/// `{"endpoint": "defenders", "fault": "serverError", "remaining": 3, "rate": 0.5}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Applies to calls whose endpoint (the path after `/api/<version>/`) equals this or ends
    /// with `/` + this: `"defenders"` matches `GET /defenders` but not `/defenders/names`,
    /// `"ecs-task.json"` matches `/defenders/ecs-task.json`. `None`: every API call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub fault: Fault,
    /// How many more calls it applies to; `None`: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// The probability (0..=1) that a matching call is hit; `None`: every call. A call that is
    /// spared does not use up `remaining`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

impl FaultRule {
    /// `fault` on every call to `endpoint`, until [`FaultRule::times`] limits it or it is cleared.
    pub fn on(endpoint: &str, fault: Fault) -> FaultRule {
        FaultRule { endpoint: Some(endpoint.trim_matches('/').to_string()), fault, remaining: None, rate: None }
    }

    /// `fault` on every API call.
    pub fn everywhere(fault: Fault) -> FaultRule {
        FaultRule { endpoint: None, fault, remaining: None, rate: None }
    }

    /// Only the next `n` matching calls.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.remaining = Some(n);
        self
    }

    /// Each matching call is hit with probability `p` (0..=1).
    pub fn rate(mut self, p: f64) -> FaultRule {
        self.rate = Some(p.clamp(0.0, 1.0));
        self
    }

    pub fn matches(&self, endpoint: &str) -> bool {
        match &self.endpoint {
            None => true,
            Some(want) => endpoint == want || endpoint.strip_suffix(want.as_str()).is_some_and(|p| p.ends_with('/')),
        }
    }
}

/// The fault rules of one Console (a cheap clone sharing them).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<FaultRule>>>,
}

impl Faults {
    pub fn inject(&self, rule: FaultRule) {
        if rule.remaining != Some(0) {
            lock(&self.rules).push(rule);
        }
    }

    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// The rules still armed (a counted rule disappears once used up).
    pub fn pending(&self) -> Vec<FaultRule> {
        lock(&self.rules).clone()
    }

    /// Consumes the faults for one call to `endpoint`, in the order they were injected: every
    /// matching delay or token expiry, and at most one terminal fault (later terminal rules are
    /// left untouched for the next call).
    pub(crate) fn take(&self, endpoint: &str) -> Vec<Fault> {
        let mut rng = rand::rng();
        self.take_with(endpoint, || rng.random::<f64>())
    }

    /// [`Faults::take`] with the random draws given (one per rule that has a `rate`).
    pub(crate) fn take_with(&self, endpoint: &str, mut draw: impl FnMut() -> f64) -> Vec<Fault> {
        let mut rules = lock(&self.rules);
        let mut fired = Vec::new();
        let mut terminal = false;
        for rule in rules.iter_mut() {
            if !rule.matches(endpoint) || (terminal && rule.fault.is_terminal()) {
                continue;
            }
            if rule.rate.is_some_and(|p| draw() >= p) {
                continue;
            }
            terminal |= rule.fault.is_terminal();
            fired.push(rule.fault.clone());
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
        }
        rules.retain(|r| r.remaining != Some(0));
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_matching_is_by_path_suffix() {
        let r = FaultRule::on("defenders", Fault::ServerError);
        assert!(r.matches("defenders"));
        assert!(!r.matches("defenders/names"));
        assert!(!r.matches("xdefenders"));
        assert!(FaultRule::on("/ecs-task.json", Fault::ServerError).matches("defenders/ecs-task.json"));
        assert!(FaultRule::on("authenticate", Fault::ServerError).matches("authenticate"));
        assert!(!FaultRule::on("authenticate", Fault::ServerError).matches("authenticate/renew"));
        assert!(FaultRule::everywhere(Fault::ServerError).matches("_ping"));
    }

    #[test]
    fn counted_rules_run_out_and_one_terminal_fault_per_call() {
        let faults = Faults::default();
        faults.inject(FaultRule::on("defenders", Fault::Delay(Duration::from_millis(1))).times(1));
        faults.inject(FaultRule::on("defenders", Fault::ServerError).times(1));
        faults.inject(FaultRule::on("defenders", Fault::TooManyRequests { retry_after: Some(2) }).times(1));
        faults.inject(FaultRule::on("version", Fault::ServerError));
        faults.inject(FaultRule::on("version", Fault::ServerError).times(0));
        assert_eq!(faults.take("defenders"), vec![Fault::Delay(Duration::from_millis(1)), Fault::ServerError]);
        assert_eq!(faults.take("defenders"), vec![Fault::TooManyRequests { retry_after: Some(2) }]);
        assert_eq!(faults.take("defenders"), vec![]);
        assert_eq!(faults.take("version"), vec![Fault::ServerError]);
        assert_eq!(faults.take("version"), vec![Fault::ServerError], "uncounted rules stay");
        assert_eq!(faults.pending().len(), 1);
        faults.clear();
        assert_eq!(faults.take("version"), vec![]);
    }

    #[test]
    fn rated_rules_hit_by_the_draw_and_parse_from_json() {
        let faults = Faults::default();
        faults.inject(FaultRule::on("defenders", Fault::ServerError).rate(0.3).times(1));
        assert_eq!(faults.take_with("defenders", || 0.5), vec![], "0.5 >= 0.3: spared");
        assert_eq!(faults.pending().len(), 1, "a spared call does not use the rule up");
        assert_eq!(faults.take_with("defenders", || 0.1), vec![Fault::ServerError]);
        assert!(faults.pending().is_empty());
        let rule: FaultRule = serde_json::from_str(
            r#"{"endpoint":"defenders","fault":{"tooManyRequests":{"retryAfter":2}},"remaining":3,"rate":0.5}"#,
        )
        .unwrap();
        assert_eq!(
            rule,
            FaultRule::on("defenders", Fault::TooManyRequests { retry_after: Some(2) }).times(3).rate(0.5)
        );
        let rule: FaultRule = serde_json::from_str(r#"{"fault":{"delayMs":400}}"#).unwrap();
        assert_eq!(rule, FaultRule::everywhere(Fault::Delay(Duration::from_millis(400))));
        let rule: FaultRule = serde_json::from_str(r#"{"fault":"dropConnection"}"#).unwrap();
        assert_eq!(rule.fault, Fault::DropConnection);
    }
}
