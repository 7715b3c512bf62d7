//! The documented IAM policy (charts/ecs-defender-operator/files/iam-policy.json): it allows every
//! AWS call the operator makes, and every change only under a condition on the operator's owner
//! tag (or tag-on-create, or the service's own condition), except where the chart README says why
//! AWS offers none. The sandbox cannot evaluate IAM policies (moto does not enforce them).

use std::collections::BTreeSet;

use serde_json::Value;

const POLICY: &str = include_str!("../charts/ecs-defender-operator/files/iam-policy.json");
const README: &str = include_str!("../charts/ecs-defender-operator/README.md");
const OWNER_TAG: &str = "ecsdefender.io/owner";
/// Statements that change AWS without a condition, each explained in the chart README.
const UNCONDITIONED_CHANGES: &[&str] = &["LaunchConfigurationsCannotBeTagged"];
/// Statements whose tagging action AWS also checks for tag-on-create, with no condition key that
/// tells a create from a later re-tag: conditioned on the request's tag only, each explained in
/// the chart README (what it would allow, and what guards it instead).
const TAG_ON_CREATE_BY_REQUEST_TAG_ONLY: &[&str] = &[
    "AutoScalingGroupCreateOnlyWithOwnerTag",
    "DefenderInstallBundleSecretCreateOnlyWithOwnerTag",
    "DefenderExecutionRoleCreateOnlyWithOwnerTag",
];

fn statements() -> Vec<Value> {
    let policy: Value = serde_json::from_str(POLICY).expect("the policy is JSON");
    policy["Statement"].as_array().expect("a Statement list").clone()
}

fn actions(s: &Value) -> Vec<String> {
    match &s["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => vec![],
    }
}

fn is_read(action: &str) -> bool {
    let op = action.split(':').nth(1).unwrap_or_default();
    ["Describe", "List", "Get"].iter().any(|p| op.starts_with(p))
}

/// Every `"service:Operation"` the operator's AWS code names (its metrics labels).
fn operator_calls() -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/aws")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for piece in text.split('"').skip(1).step_by(2) {
            if let Some((svc, op)) = piece.split_once(':')
                && ["ecs", "ec2", "autoscaling", "ssm", "iam", "sts", "secretsmanager"].contains(&svc)
                && !op.is_empty()
                && op.chars().all(|c| c.is_ascii_alphanumeric())
                && op.starts_with(|c: char| c.is_ascii_uppercase())
            {
                calls.insert(piece.to_string());
            }
        }
    }
    calls
}

#[test]
fn every_call_the_operator_makes_is_allowed() {
    let allowed: BTreeSet<String> = statements().iter().filter(|s| s["Effect"] == "Allow").flat_map(actions).collect();
    let calls = operator_calls();
    assert!(calls.len() > 30, "found too few calls in src/aws: {calls:?}");
    let missing: Vec<_> = calls.iter().filter(|c| !allowed.contains(*c)).collect();
    assert!(missing.is_empty(), "the policy does not allow {missing:?}");
}

#[test]
fn every_change_is_conditioned_on_ownership_or_explained() {
    for s in statements() {
        let sid = s["Sid"].as_str().unwrap_or_default().to_string();
        let changes: Vec<String> = actions(&s).into_iter().filter(|a| !is_read(a)).collect();
        if changes.is_empty() {
            continue;
        }
        let condition = s.get("Condition").map(|c| c.to_string()).unwrap_or_default();
        let owner_tag = condition.contains(&format!("aws:ResourceTag/{OWNER_TAG}"))
            || condition.contains(&format!("aws:RequestTag/{OWNER_TAG}"));
        let on_create = condition.contains(":CreateAction");
        let service_guard = condition.contains("iam:PassedToService") || condition.contains("iam:AWSServiceName");
        let from_our_template = condition.contains("ec2:LaunchTemplate");
        if UNCONDITIONED_CHANGES.contains(&sid.as_str()) {
            assert!(README.contains(&format!("`{sid}`")), "the chart README does not explain {sid}");
            continue;
        }
        assert!(
            owner_tag || on_create || service_guard || from_our_template,
            "{sid} allows {changes:?} without a condition on the owner tag: {s}"
        );
    }
}

#[test]
fn deletes_and_updates_require_our_tag_on_the_resource() {
    for s in statements() {
        let condition = s.get("Condition").map(|c| c.to_string()).unwrap_or_default();
        for a in actions(&s) {
            let op = a.split(':').nth(1).unwrap_or_default();
            let destructive =
                ["Delete", "Update", "Deregister", "Modify", "StartInstanceRefresh"].iter().any(|p| op.starts_with(p))
                    && !a.contains("LaunchConfiguration");
            if destructive {
                assert!(
                    condition.contains(&format!("aws:ResourceTag/{OWNER_TAG}")),
                    "{a} is allowed on resources without our owner tag"
                );
            }
        }
    }
}

#[test]
fn tagging_is_only_on_create_or_on_our_own_resources_or_its_limit_is_explained() {
    let is_tagging = |a: &str| {
        let op = a.split(':').nth(1).unwrap_or_default();
        ["TagResource", "TagRole", "CreateTags", "CreateOrUpdateTags"].contains(&op)
    };
    let mut by_request_tag_only = vec![];
    for s in statements() {
        let sid = s["Sid"].as_str().unwrap_or_default().to_string();
        let tagging: Vec<String> = actions(&s).into_iter().filter(|a| is_tagging(a)).collect();
        if tagging.is_empty() {
            continue;
        }
        let condition = s.get("Condition").map(|c| c.to_string()).unwrap_or_default();
        let on_create = condition.contains(":CreateAction");
        let on_ours = condition.contains(&format!("aws:ResourceTag/{OWNER_TAG}"));
        if on_create || on_ours {
            continue;
        }
        // Re-tagging an existing resource with our owner tag would make it "ours" to every other
        // statement: only where AWS leaves no other way, and said so.
        assert!(
            TAG_ON_CREATE_BY_REQUEST_TAG_ONLY.contains(&sid.as_str()),
            "{sid} allows {tagging:?} on any resource: limit it to creates or to our own resources"
        );
        assert!(README.contains(&format!("`{sid}`")), "the chart README does not explain {sid}");
        by_request_tag_only.push(sid);
    }
    by_request_tag_only.sort();
    let mut expected: Vec<String> = TAG_ON_CREATE_BY_REQUEST_TAG_ONLY.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(by_request_tag_only, expected, "the list of explained statements is out of date");
}
