//! Faults on demand: rules that make the next N (or every) matching call fail the way a real
//! Console or the network in front of it can fail.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::lock;

/// One way a call can fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `429 {"err": ...}`, with `Retry-After: <seconds>` when set.
    TooManyRequests { retry_after: Option<u64> },
    /// `500 {"err": ...}`.
    ServerError,
    /// Wait this long, then answer normally (or with the next fault that matches).
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

/// A fault, where it applies and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// Applies to calls whose endpoint (the path after `/api/<version>/`) equals this or ends
    /// with `/` + this: `"defenders"` matches `GET /defenders` but not `/defenders/names`,
    /// `"ecs-task.json"` matches `/defenders/ecs-task.json`. `None`: every API call.
    pub endpoint: Option<String>,
    pub fault: Fault,
    /// How many more calls it applies to; `None`: always.
    pub remaining: Option<u32>,
}

impl FaultRule {
    /// `fault` on every call to `endpoint`, until [`FaultRule::times`] limits it or it is cleared.
    pub fn on(endpoint: &str, fault: Fault) -> FaultRule {
        FaultRule { endpoint: Some(endpoint.trim_matches('/').to_string()), fault, remaining: None }
    }

    /// `fault` on every API call.
    pub fn everywhere(fault: Fault) -> FaultRule {
        FaultRule { endpoint: None, fault, remaining: None }
    }

    /// Only the next `n` matching calls.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.remaining = Some(n);
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
        let mut rules = lock(&self.rules);
        let mut fired = Vec::new();
        let mut terminal = false;
        for rule in rules.iter_mut() {
            if !rule.matches(endpoint) || (terminal && rule.fault.is_terminal()) {
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
}
