//! (pure) An identity policy's verdict on an action, as IAM gives it for `Action`/`NotAction` and
//! `Effect`: an explicit Deny wins, then any Allow, else denied. `Resource` and `Condition` are not
//! evaluated (moto does not either); the gate enforces a policy per access key so an end-to-end
//! run shows the documented policy names every action the operator needs.

use serde_json::Value;

#[derive(Clone, Debug, Default)]
pub struct IdentityPolicy {
    statements: Vec<Statement>,
}

#[derive(Clone, Debug)]
struct Statement {
    allow: bool,
    /// `true`: `actions` is a `NotAction` list.
    not: bool,
    actions: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => vec![],
    }
}

/// IAM action patterns: case-insensitive, `*` and `?` wildcards.
fn matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &a[1..]),
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => go(&p[1..], &a[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

impl IdentityPolicy {
    pub fn from_json(doc: &Value) -> IdentityPolicy {
        let list = match &doc["Statement"] {
            Value::Array(a) => a.clone(),
            s @ Value::Object(_) => vec![s.clone()],
            _ => vec![],
        };
        IdentityPolicy {
            statements: list
                .iter()
                .map(|s| {
                    let not = s.get("NotAction").is_some();
                    Statement {
                        allow: s["Effect"] == "Allow",
                        not,
                        actions: strings(if not { &s["NotAction"] } else { &s["Action"] }),
                    }
                })
                .collect(),
        }
    }

    /// Whether `action` (`service:Operation`) is allowed.
    pub fn allows(&self, action: &str) -> bool {
        let applies = |s: &Statement| s.actions.iter().any(|p| matches(p, action)) != s.not;
        let denied = self.statements.iter().any(|s| !s.allow && applies(s));
        !denied && self.statements.iter().any(|s| s.allow && applies(s))
    }
}

/// AWS's refusal of an action the caller's policies do not allow: per service, its code and HTTP
/// status.
pub fn access_denied(service: &str, action: &str) -> (u16, &'static str, String) {
    let message = format!(
        "User: arn:aws:iam::123456789012:user/ecs-defender-operator is not authorized to perform: {action} because no identity-based policy allows the {action} action"
    );
    match service {
        "ec2" => (403, "UnauthorizedOperation", format!("You are not authorized to perform this operation. {message}")),
        "ecs" | "ssm" | "secretsmanager" => (400, "AccessDeniedException", message),
        _ => (403, "AccessDenied", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_deny_and_wildcards() {
        let p = IdentityPolicy::from_json(&serde_json::json!({"Statement": [
            {"Effect": "Allow", "Action": ["ecs:Describe*", "ecs:CreateCluster"], "Resource": "*"},
            {"Effect": "Allow", "Action": "ec2:*"},
            {"Effect": "Deny", "Action": "ec2:DeleteLaunchTemplate"},
        ]}));
        assert!(p.allows("ecs:DescribeClusters"));
        assert!(p.allows("ecs:createcluster"));
        assert!(!p.allows("ecs:DeleteCluster"));
        assert!(p.allows("ec2:CreateLaunchTemplate"));
        assert!(!p.allows("ec2:DeleteLaunchTemplate"), "an explicit Deny wins");
        assert!(!p.allows("autoscaling:CreateAutoScalingGroup"), "nothing allows it");
        let not =
            IdentityPolicy::from_json(&serde_json::json!({"Statement": {"Effect": "Allow", "NotAction": "iam:*"}}));
        assert!(not.allows("ecs:CreateService") && !not.allows("iam:PassRole"));
    }
}
