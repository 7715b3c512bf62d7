//! (pure) What the ECS agent checks before a task with `secrets[].valueFrom` starts: the task's
//! execution role can be assumed by ECS tasks and may `secretsmanager:GetSecretValue` the secret
//! (IAM policy evaluation, simplified: Allow/Deny statements, `Action`/`NotAction`,
//! `Resource`/`NotResource` with `*` and `?` wildcards, conditions ignored), and the words the task
//! stops with when it cannot (`ResourceInitializationError: unable to pull secrets or registry
//! auth: ...`, as the agent reports it).

use serde_json::Value;

/// The agent's prefix for every failure to fetch a task's secrets.
pub const RESOURCE_INITIALIZATION_ERROR: &str = "ResourceInitializationError: unable to pull secrets or registry auth: \
     execution resource retrieval failed: unable to retrieve secret from asm: service call has been retried 1 time(s): ";

/// The action the execution role needs on every secret a task names.
pub const GET_SECRET_VALUE: &str = "secretsmanager:GetSecretValue";
/// The service principal that assumes execution roles.
pub const ECS_TASKS: &str = "ecs-tasks.amazonaws.com";

/// The secret a `valueFrom` names: `arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6>`
/// without the optional `:<json-key>:<version-stage>:<version-id>` that may follow.
pub fn secret_id(value_from: &str) -> &str {
    if !value_from.starts_with("arn:") {
        return value_from;
    }
    let mut colons = value_from.match_indices(':').map(|(i, _)| i);
    match colons.nth(6) {
        Some(i) => &value_from[..i],
        None => value_from,
    }
}

/// `*` matches any run of characters, `?` one character.
fn glob(pattern: &str, s: &str, case_insensitive: bool) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = if case_insensitive {
        (pattern.to_lowercase().chars().collect(), s.to_lowercase().chars().collect())
    } else {
        (pattern.chars().collect(), s.chars().collect())
    };
    // Iterative matching with backtracking to the last `*`.
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A string or a list of strings.
fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

fn statements(policy: &Value) -> Vec<&Value> {
    match policy.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => vec![],
    }
}

fn statement_matches(st: &Value, action: &str, resource: &str) -> bool {
    let action_ok = match (st.get("Action"), st.get("NotAction")) {
        (Some(a), _) => strings(Some(a)).iter().any(|p| glob(p, action, true)),
        (None, Some(na)) => !strings(Some(na)).iter().any(|p| glob(p, action, true)),
        (None, None) => false,
    };
    let resource_ok = match (st.get("Resource"), st.get("NotResource")) {
        (Some(r), _) => strings(Some(r)).iter().any(|p| glob(p, resource, false)),
        (None, Some(nr)) => !strings(Some(nr)).iter().any(|p| glob(p, resource, false)),
        (None, None) => false,
    };
    action_ok && resource_ok
}

/// Whether identity policies `policies` allow `action` on `resource`: an explicit Deny wins, else
/// an Allow is needed.
pub fn allows(policies: &[Value], action: &str, resource: &str) -> bool {
    let matching = || policies.iter().flat_map(statements).filter(|st| statement_matches(st, action, resource));
    let effect = |st: &&Value| st.get("Effect").and_then(Value::as_str).unwrap_or_default().to_string();
    !matching().any(|st| effect(&st) == "Deny") && matching().any(|st| effect(&st) == "Allow")
}

/// Whether a trust policy lets `service` assume the role.
pub fn trusts(trust: &Value, service: &str) -> bool {
    statements(trust).into_iter().any(|st| {
        st.get("Effect").and_then(Value::as_str) == Some("Allow")
            && strings(st.get("Action")).iter().any(|a| glob(a, "sts:AssumeRole", true))
            && strings(st.get("Principal").and_then(|p| p.get("Service"))).contains(&service)
    })
}

/// Why the task stops when ECS cannot assume its execution role.
pub fn cannot_assume(role_arn: &str) -> String {
    format!(
        "{RESOURCE_INITIALIZATION_ERROR}ECS was unable to assume the role '{role_arn}' that was provided for this task. \
         Please verify that the role being passed has the proper trust relationship and permissions and that your \
         IAM user has permissions to pass this role."
    )
}

/// Why the task stops when the execution role may not read the secret.
pub fn access_denied(account: &str, role_arn: &str, value_from: &str) -> String {
    let role_name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    format!(
        "{RESOURCE_INITIALIZATION_ERROR}failed to fetch secret {value_from} from secrets manager: AccessDeniedException: \
         User: arn:aws:sts::{account}:assumed-role/{role_name}/ecs-task is not authorized to perform: \
         {GET_SECRET_VALUE} on resource: {} because no identity-based policy allows the {GET_SECRET_VALUE} action \
         status code: 400, request id: {}",
        secret_id(value_from),
        uuid::Uuid::new_v4()
    )
}

/// Why the task stops when Secrets Manager refuses (no such secret, marked for deletion, ...).
pub fn fetch_failed(value_from: &str, code: &str, message: &str) -> String {
    format!(
        "{RESOURCE_INITIALIZATION_ERROR}failed to fetch secret {value_from} from secrets manager: {code}: {message} \
         status code: 400, request id: {}",
        uuid::Uuid::new_v4()
    )
}

/// Why the task stops when it names secrets and no execution role (AWS refuses to register such a
/// definition; moto does not).
pub fn no_execution_role(value_from: &str) -> String {
    format!(
        "{RESOURCE_INITIALIZATION_ERROR}failed to fetch secret {value_from} from secrets manager: the task definition \
         names no execution role"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecs-defender/c-1/install-bundle-AbCdEf";

    #[test]
    fn value_from_names_the_secret_before_its_json_key() {
        assert_eq!(secret_id(ARN), ARN);
        assert_eq!(secret_id(&format!("{ARN}:password::")), ARN);
        assert_eq!(secret_id("plain-name"), "plain-name");
    }

    #[test]
    fn globs() {
        assert!(glob("secretsmanager:Get*", "secretsmanager:GetSecretValue", true));
        assert!(glob("SecretsManager:getsecretvalue", "secretsmanager:GetSecretValue", true));
        assert!(glob("*", "anything", false));
        assert!(glob("arn:aws:secretsmanager:*:*:secret:ecs-defender/*", ARN, false));
        assert!(!glob("arn:aws:secretsmanager:*:*:secret:other/*", ARN, false));
        assert!(glob("a?c", "abc", false) && !glob("a?c", "ac", false));
        assert!(!glob("ARN:*", "arn:x", false), "resources are case-sensitive");
    }

    #[test]
    fn allow_needed_deny_wins() {
        let allow = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": ARN}]});
        assert!(allows(std::slice::from_ref(&allow), GET_SECRET_VALUE, ARN));
        assert!(!allows(std::slice::from_ref(&allow), GET_SECRET_VALUE, &format!("{ARN}x")), "another secret");
        assert!(!allows(std::slice::from_ref(&allow), "secretsmanager:PutSecretValue", ARN), "another action");
        assert!(!allows(&[], GET_SECRET_VALUE, ARN), "no policy, no access");
        let wide = json!({"Statement": {"Effect": "Allow", "Action": ["secretsmanager:*"], "Resource": "*"}});
        assert!(allows(std::slice::from_ref(&wide), GET_SECRET_VALUE, ARN), "a single statement object");
        let deny = json!({"Statement": [{"Effect": "Deny", "NotAction": "ecs:*", "Resource": "*"}]});
        assert!(!allows(&[wide, deny], GET_SECRET_VALUE, ARN), "an explicit deny wins");
    }

    #[test]
    fn trust_names_the_service() {
        let trust = json!({"Statement": [{"Effect": "Allow", "Principal": {"Service": ["ec2.amazonaws.com", ECS_TASKS]}, "Action": "sts:AssumeRole"}]});
        assert!(trusts(&trust, ECS_TASKS));
        let ec2_only = json!({"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
        assert!(!trusts(&ec2_only, ECS_TASKS));
    }

    #[test]
    fn reasons_read_like_the_agents() {
        for reason in [
            cannot_assume("arn:aws:iam::123456789012:role/x"),
            access_denied("123456789012", "arn:aws:iam::123456789012:role/p/x", ARN),
            fetch_failed(ARN, "ResourceNotFoundException", "Secrets Manager can't find the specified secret."),
            no_execution_role(ARN),
        ] {
            assert!(
                reason.starts_with("ResourceInitializationError: unable to pull secrets or registry auth: "),
                "{reason}"
            );
        }
        assert!(access_denied("1", "arn:aws:iam::1:role/p/x", ARN).contains("assumed-role/x/"));
    }
}
