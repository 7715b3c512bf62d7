//! (pure) Keeping the Defender's install bundle out of the task definition: the Console's
//! container definitions rewritten to take `INSTALL_BUNDLE` from Secrets Manager, the secret
//! version that holds a bundle, and the execution role's policies. No I/O here.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::observed::GeneratedTaskDefinition;
use crate::aws::{
    ecs::INSTALL_BUNDLE,
    secretsmanager::{Secret, SecretValue},
};

/// The Console's task definition with `INSTALL_BUNDLE` moved from every container's `environment`
/// to its `secrets` (`valueFrom`: the secret's ARN) and `executionRoleArn` set, its digest over
/// that (so it covers where the bundle is, not the bundle), and the bundle itself.
pub fn rewrite_for_secrets_manager(
    generated: &GeneratedTaskDefinition,
    secret_arn: &str,
    execution_role_arn: &str,
) -> Result<(GeneratedTaskDefinition, SecretValue), String> {
    let mut definition = generated.definition.clone();
    let Some(containers) = definition.get_mut("containerDefinitions").and_then(Value::as_array_mut) else {
        return Err("the Console's task definition has no containerDefinitions".into());
    };
    let mut bundle: Option<String> = None;
    for container in containers.iter_mut() {
        let Some(c) = container.as_object_mut() else { continue };
        let mut found = None;
        if let Some(env) = c.get_mut("environment").and_then(Value::as_array_mut) {
            env.retain(|e| {
                if e.get("name").and_then(Value::as_str) == Some(INSTALL_BUNDLE) {
                    found = Some(e.get("value").and_then(Value::as_str).unwrap_or_default().to_string());
                    false
                } else {
                    true
                }
            });
        }
        let Some(value) = found else { continue };
        match &bundle {
            Some(b) if *b != value => {
                return Err("the Console's task definition carries different install bundles in its containers".into());
            }
            _ => bundle = Some(value),
        }
        let secrets = c.entry("secrets").or_insert_with(|| json!([]));
        if let Some(list) = secrets.as_array_mut() {
            list.retain(|s| s.get("name").and_then(Value::as_str) != Some(INSTALL_BUNDLE));
            list.push(json!({"name": INSTALL_BUNDLE, "valueFrom": secret_arn}));
        }
    }
    let Some(bundle) = bundle.filter(|b| !b.is_empty()) else {
        return Err(format!("the Console's task definition carries no {INSTALL_BUNDLE} to store"));
    };
    if let Some(obj) = definition.as_object_mut() {
        obj.insert("executionRoleArn".into(), execution_role_arn.into());
    }
    // serde_json's map is ordered by key, so this serialization is canonical.
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&definition).expect("JSON value serializes")));
    Ok((GeneratedTaskDefinition { definition, digest, ..generated.clone() }, SecretValue(bundle)))
}

/// The secret version that holds `value`: a token derived from the owner and the bundle, so "is
/// this bundle stored?" needs no `GetSecretValue`, and a repeated `PutSecretValue` (after a crash)
/// is a no-op. Should the token be in use by an older version (the secret was changed outside the
/// operator in between), the next candidate is taken, so putting it makes it current again.
/// The token is a salted hash of a high-entropy bundle: it reveals nothing of it.
pub fn secret_version_id(uid: &str, value: &SecretValue, secret: &Secret) -> String {
    (0u32..)
        .map(|n| {
            let mut h = Sha256::new();
            for part in [uid.as_bytes(), b"install-bundle", value.0.as_bytes(), n.to_string().as_bytes()] {
                h.update(part);
                h.update([0]);
            }
            let x = hex::encode(h.finalize());
            format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
        })
        .find(|id| secret.current_version.as_deref() == Some(id.as_str()) || !secret.versions.contains(id))
        .expect("an unused version id exists")
}

/// The trust policy of the execution role we create: ECS tasks may assume it.
pub fn execution_role_trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }],
    })
}

/// The execution role's one permission: read this secret.
pub fn execution_role_policy(secret_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": secret_arn,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::observe::build_generated;

    const ARN: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecs-defender/demo-1a2b3c4d/install-bundle-AbCdEf";
    const ROLE: &str = "arn:aws:iam::123456789012:role/ecs-defender/demo-1a2b3c4d-defender-exec";

    fn console_output(bundle: &str) -> GeneratedTaskDefinition {
        build_generated(
            json!({
                "family": "pc-defender",
                "containerDefinitions": [{
                    "name": "twistlock_defender",
                    "image": "defender:34_03_138",
                    "environment": [
                        {"name": "DEFENDER_TYPE", "value": "ecs"},
                        {"name": "INSTALL_BUNDLE", "value": bundle},
                        {"name": "WS_ADDRESS", "value": "wss://console:8084"},
                    ],
                }],
            }),
            "demo-defender",
            "34.03.138".into(),
        )
    }

    fn secret(current: Option<&str>, versions: &[&str]) -> Secret {
        Secret {
            arn: ARN.into(),
            name: "ecs-defender/demo-1a2b3c4d/install-bundle".into(),
            current_version: current.map(String::from),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            deleted: false,
            tags: Default::default(),
        }
    }

    #[test]
    fn the_bundle_moves_from_environment_to_secrets() {
        let (td, value) = rewrite_for_secrets_manager(&console_output("QlVORExF"), ARN, ROLE).unwrap();
        assert_eq!(value, SecretValue("QlVORExF".into()));
        let json = serde_json::to_string(&td.definition).unwrap();
        assert!(!json.contains("QlVORExF"), "the bundle is still in the definition: {json}");
        let c = &td.definition["containerDefinitions"][0];
        let env: Vec<&str> = c["environment"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(env, ["DEFENDER_TYPE", "WS_ADDRESS"], "the other variables stay, in order");
        assert_eq!(c["secrets"], json!([{"name": "INSTALL_BUNDLE", "valueFrom": ARN}]));
        assert_eq!(td.definition["executionRoleArn"], ROLE);
        assert_eq!(td.definition["family"], "demo-defender");
        assert_eq!((td.console_version.as_str(), td.image.as_deref()), ("34.03.138", Some("defender:34_03_138")));
        assert_ne!(td.digest, console_output("QlVORExF").digest, "the digest is of the rewritten definition");
        // Its Debug shows no value.
        assert!(!format!("{value:?}").contains("QlVORExF"));
    }

    #[test]
    fn the_digest_covers_where_the_bundle_is_not_the_bundle() {
        let (a, _) = rewrite_for_secrets_manager(&console_output("b1"), ARN, ROLE).unwrap();
        let (b, _) = rewrite_for_secrets_manager(&console_output("b2"), ARN, ROLE).unwrap();
        assert_eq!(a.digest, b.digest, "a new bundle alone is no new revision");
        assert_eq!(a.definition, b.definition);
        let (c, _) = rewrite_for_secrets_manager(&console_output("b1"), &format!("{ARN}x"), ROLE).unwrap();
        assert_ne!(a.digest, c.digest, "another secret is another revision");
        let (d, _) =
            rewrite_for_secrets_manager(&console_output("b1"), ARN, "arn:aws:iam::123456789012:role/x").unwrap();
        assert_ne!(a.digest, d.digest, "another execution role is another revision");
        // Rewriting is stable: the same input, the same digest.
        assert_eq!(rewrite_for_secrets_manager(&console_output("b1"), ARN, ROLE).unwrap().0.digest, a.digest);
    }

    #[test]
    fn an_existing_secrets_list_is_kept_and_a_stale_entry_replaced() {
        let mut g = console_output("b1");
        g.definition["containerDefinitions"][0]["secrets"] =
            json!([{"name": "OTHER", "valueFrom": "arn:x"}, {"name": "INSTALL_BUNDLE", "valueFrom": "arn:old"}]);
        let (td, _) = rewrite_for_secrets_manager(&g, ARN, ROLE).unwrap();
        assert_eq!(
            td.definition["containerDefinitions"][0]["secrets"],
            json!([{"name": "OTHER", "valueFrom": "arn:x"}, {"name": "INSTALL_BUNDLE", "valueFrom": ARN}])
        );
    }

    #[test]
    fn a_definition_without_a_bundle_is_refused() {
        let g = build_generated(json!({"containerDefinitions": [{"name": "x", "environment": []}]}), "f", "1".into());
        let err = rewrite_for_secrets_manager(&g, ARN, ROLE).unwrap_err();
        assert!(err.contains("no INSTALL_BUNDLE"), "{err}");
        let g = build_generated(json!({"family": "f"}), "f", "1".into());
        assert!(rewrite_for_secrets_manager(&g, ARN, ROLE).is_err());
    }

    #[test]
    fn version_ids_name_the_bundle_and_skip_ones_used_before() {
        let v = SecretValue("b1".into());
        let first = secret_version_id("uid", &v, &secret(None, &[]));
        assert_eq!(first.len(), 36, "{first}");
        assert_eq!(first, secret_version_id("uid", &v, &secret(None, &[])), "deterministic");
        assert_ne!(first, secret_version_id("other-uid", &v, &secret(None, &[])));
        assert_ne!(first, secret_version_id("uid", &SecretValue("b2".into()), &secret(None, &[])));
        // Current already: nothing to put.
        assert_eq!(secret_version_id("uid", &v, &secret(Some(&first), &[&first])), first);
        // Used by an older version (someone put another value since): the next one.
        let next = secret_version_id("uid", &v, &secret(Some("someone-elses"), &[&first, "someone-elses"]));
        assert_ne!(next, first);
        assert!(next.len() == 36);
    }

    #[test]
    fn the_role_may_read_exactly_the_secret() {
        let p = execution_role_policy(ARN);
        assert_eq!(p["Statement"][0]["Action"], "secretsmanager:GetSecretValue");
        assert_eq!(p["Statement"][0]["Resource"], ARN);
        assert_eq!(p["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(execution_role_trust_policy()["Statement"][0]["Principal"]["Service"], "ecs-tasks.amazonaws.com");
    }
}
