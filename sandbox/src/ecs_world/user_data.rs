//! What the ECS agent reads from an instance's user data: the `ECS_CLUSTER` the script writes to
//! `/etc/ecs/ecs.config`. Pure functions.

use base64::Engine;

/// The user data as text: AWS returns it base64-encoded, and moto sometimes encodes it once more.
pub fn decode(raw: &str) -> String {
    let mut text = raw.to_string();
    for _ in 0..3 {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(decoded) if !compact.is_empty() => text = decoded,
            _ => break,
        }
    }
    text
}

const CONFIG_FILE: &str = "/etc/ecs/ecs.config";

/// The cluster a user data script configures the ECS agent for: the last `ECS_CLUSTER=` written to
/// `/etc/ecs/ecs.config` (by `echo ... >> /etc/ecs/ecs.config` or a heredoc into it).
pub fn ecs_cluster(script: &str) -> Option<String> {
    let mut found = None;
    let mut heredoc_end: Option<String> = None;
    for line in script.lines() {
        if let Some(end) = &heredoc_end {
            if line.trim() == end {
                heredoc_end = None;
            } else if let Some(rest) = line.trim().strip_prefix("ECS_CLUSTER=") {
                found = Some(value(rest));
            }
            continue;
        }
        if !line.contains(CONFIG_FILE) {
            continue;
        }
        if let Some((_, after)) = line.split_once("<<") {
            let delimiter: String = after
                .trim_start_matches('-')
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !delimiter.is_empty() {
                heredoc_end = Some(delimiter);
            }
            continue;
        }
        if let Some((_, rest)) = line.rsplit_once("ECS_CLUSTER=") {
            found = Some(value(rest));
        }
    }
    found.filter(|v| !v.is_empty())
}

/// The value at the start of `rest`: quoted, or up to whitespace or a shell operator.
fn value(rest: &str) -> String {
    let rest = rest.trim_start();
    match rest.chars().next() {
        Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or_default().to_string(),
        _ => rest
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '>' | ';' | '|' | '&' | '<'))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_lines() {
        assert_eq!(
            ecs_cluster("#!/bin/bash\necho ECS_CLUSTER=pc-ecs-cluster >> /etc/ecs/ecs.config\n").as_deref(),
            Some("pc-ecs-cluster")
        );
        assert_eq!(ecs_cluster("echo \"ECS_CLUSTER=a_b\" >> /etc/ecs/ecs.config").as_deref(), Some("a_b"));
        assert_eq!(ecs_cluster("echo 'ECS_CLUSTER=c' > /etc/ecs/ecs.config").as_deref(), Some("c"));
        assert_eq!(ecs_cluster("echo ECS_CLUSTER=d>>/etc/ecs/ecs.config").as_deref(), Some("d"));
        let script = "#!/bin/bash\nset -e\nyum update -y\necho ECS_CLUSTER=first >> /etc/ecs/ecs.config\necho ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config\necho ECS_CLUSTER=second >> /etc/ecs/ecs.config\n";
        assert_eq!(ecs_cluster(script).as_deref(), Some("second"), "the last write wins");
    }

    #[test]
    fn heredoc() {
        let script =
            "#!/bin/bash\ncat <<'EOF' >> /etc/ecs/ecs.config\nECS_CLUSTER=pc\nECS_LOGLEVEL=debug\nEOF\necho done\n";
        assert_eq!(ecs_cluster(script).as_deref(), Some("pc"));
    }

    #[test]
    fn wrong_or_missing_config_names_no_cluster() {
        assert_eq!(ecs_cluster("#!/bin/bash\necho hello\n"), None);
        assert_eq!(ecs_cluster("echo ECS_CLUSTER=x >> /tmp/other.config"), None, "not the agent's config file");
        assert_eq!(ecs_cluster("export ECS_CLUSTER=x"), None);
        assert_eq!(ecs_cluster(""), None);
    }

    #[test]
    fn decodes_once_or_twice_encoded() {
        let script = "#!/bin/bash\necho ECS_CLUSTER=pc >> /etc/ecs/ecs.config\n";
        let once = base64::engine::general_purpose::STANDARD.encode(script);
        let twice = base64::engine::general_purpose::STANDARD.encode(&once);
        assert_eq!(decode(&once), script);
        assert_eq!(decode(&twice), script);
        assert_eq!(decode(script), script, "plain text stays as it is");
    }
}
