//! Tenancy and security (issue 10): credentials go only where their owner sent them, the operator's
//! own AWS identity only where the installer allows, and nothing is spent in AWS before what can be
//! checked is checked. Every refusal here is shown by what did *not* happen: no request at the
//! listener, the Console simulator or the AWS gate.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{Harness, eventually};
use ecs_defender_operator::{
    access::AccessRules,
    crd::{AssumeRole, AwsSpec, EcsDefenderDeployment},
};
use kube::api::{DeleteParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Makes one input of a sample wrong.
type Breaks = fn(&mut EcsDefenderDeployment);

/// A listener on another loopback port that counts the connections it gets (and answers none).
async fn listener() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://{addr}"), hits)
}

async fn stalled(h: &Harness, name: &str) -> (String, String) {
    let edd = h.wait_condition(name, "Stalled", "True", TIMEOUT).await;
    let c = edd.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap();
    (c.reason, c.message)
}

fn no_aws_calls(h: &Harness) {
    let calls: Vec<String> = h.sandbox.gate().calls().iter().map(|c| c.key()).collect();
    assert!(calls.is_empty(), "AWS was called: {calls:?}");
}

fn no_aws_mutations(h: &Harness) {
    let calls: Vec<String> = h.sandbox.gate().calls().iter().filter(|c| c.mutating).map(|c| c.key()).collect();
    assert!(calls.is_empty(), "AWS was changed: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_credentials_go_only_to_the_console_their_secret_names() {
    let h = Harness::start().await.unwrap();
    let (elsewhere, hits) = listener().await;

    // A resource pointed at another server, with the Secret that names the simulator.
    let mut edd = h.sample("stolen");
    edd.spec.defender.console.url = elsewhere.clone();
    h.create(&edd).await.unwrap();
    let (reason, message) = stalled(&h, "stolen").await;
    assert_eq!(reason, "ConsoleNotAllowed");
    assert!(message.contains(&elsewhere) && message.contains("pc-console"), "{message}");

    // A Secret that names no Console is not used for any (the safe migration default).
    let console = h.sandbox.console().clone();
    h.put_secret("unbound", &[("username", console.username()), ("password", console.password())]).await.unwrap();
    let mut edd = h.sample("unbound");
    edd.spec.defender.console.credentials_secret_ref.name = "unbound".into();
    h.create(&edd).await.unwrap();
    let (reason, message) = stalled(&h, "unbound").await;
    assert_eq!(reason, "ConsoleNotAllowed");
    assert!(message.contains("add the key url"), "{message}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the other server was contacted");
    assert!(console.requests().is_empty(), "the Console was called: {:?}", console.requests());
    no_aws_calls(&h);

    // Naming the Console in the Secret (one of several) lets the same resource through.
    let url = console.url();
    let allowed = format!("https://other.example.com\n{url}");
    h.put_secret("unbound", &[("allowedUrls", &allowed)]).await.unwrap();
    h.wait_condition("unbound", "Ready", "True", Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_custom_endpoints_user_info_and_metadata_addresses_are_refused() {
    // The installer's defaults: https Consoles and AWS's own endpoints only.
    let h = Harness::start_full(Default::default(), |c| c.access = AccessRules::default()).await.unwrap();
    let (elsewhere, hits) = listener().await;

    // The simulator speaks http: refused before its Secret is even read.
    h.create(&h.sample("plain")).await.unwrap();
    let (reason, message) = stalled(&h, "plain").await;
    assert_eq!(reason, "InsecureConsoleUrl");
    assert!(message.contains("https"), "{message}");

    // An endpoint of the resource's own choosing would receive signed requests.
    let mut edd = h.sample("endpoint");
    edd.spec.defender.console.url = "https://console.example.com".into();
    edd.spec.aws.as_mut().unwrap().endpoint_url = Some(elsewhere.clone());
    h.create(&edd).await.unwrap();
    let (reason, _) = stalled(&h, "endpoint").await;
    assert_eq!(reason, "EndpointNotAllowed");

    // User info and the instance metadata address: refused by validation, whatever the installer allows.
    let user_info = elsewhere.replace("http://", "https://admin:secret@");
    for (name, url) in [("userinfo", user_info.as_str()), ("metadata", "http://169.254.169.254/latest/meta-data")] {
        let mut edd = h.sample(name);
        edd.spec.defender.console.url = url.into();
        h.create(&edd).await.unwrap();
        let (reason, message) = stalled(&h, name).await;
        assert_eq!(reason, "InvalidSpec", "{name}: {message}");
        assert!(!message.contains("secret@"), "the URL's password is repeated: {message}");
    }
    let mut edd = h.sample("metaendpoint");
    edd.spec.aws.as_mut().unwrap().endpoint_url = Some("http://[fd00:ec2::254]/".into());
    h.create(&edd).await.unwrap();
    assert_eq!(stalled(&h, "metaendpoint").await.0, "InvalidSpec");

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the listener was contacted");
    assert!(h.sandbox.console().requests().is_empty());
    no_aws_calls(&h);

    // A resource whose AWS endpoint or identity the rules refuse is deleted at once, without a
    // request: it could create nothing. (The others' teardown looks, read-only, through the
    // installer's endpoint, for what an earlier valid generation may have created.)
    h.api.delete("endpoint", &DeleteParams::default()).await.unwrap();
    h.wait_gone("endpoint", TIMEOUT).await;
    no_aws_calls(&h);
    for name in ["plain", "userinfo"] {
        h.api.delete(name, &DeleteParams::default()).await.unwrap();
        h.wait_gone(name, TIMEOUT).await;
    }
    no_aws_mutations(&h);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the listener was contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_aws_identity_is_only_for_the_installers_namespaces_and_roles() {
    let h = Harness::start_full(Default::default(), |c| {
        c.access.default_credentials_namespaces = vec!["platform".into()];
        c.access.allowed_role_arns = vec!["arn:aws:iam::123456789012:role/defenders-*".into()];
    })
    .await
    .unwrap();
    let without = |name: &str, role: Option<&str>| -> EcsDefenderDeployment {
        let mut edd = h.sample(name);
        edd.spec.aws = role.map(|r| AwsSpec {
            assume_role: Some(AssumeRole { role_arn: r.into(), external_id: None }),
            ..Default::default()
        });
        edd
    };
    h.create(&without("nocreds", None)).await.unwrap();
    let (reason, message) = stalled(&h, "nocreds").await;
    assert_eq!(reason, "CredentialsNotAllowed");
    assert!(message.contains("namespace default"), "{message}");
    h.create(&without("otherrole", Some("arn:aws:iam::999999999999:role/admin"))).await.unwrap();
    let (reason, message) = stalled(&h, "otherrole").await;
    assert_eq!(reason, "CredentialsNotAllowed");
    assert!(message.contains("arn:aws:iam::999999999999:role/admin"), "{message}");
    no_aws_calls(&h);

    // A role the installer allows passes the rule (the test process has no default credentials
    // to assume it with, so it goes no further; the refusal above is the rule's, not that).
    h.create(&without("allowedrole", Some("arn:aws:iam::123456789012:role/defenders-team-a"))).await.unwrap();
    let reason = eventually(TIMEOUT, || async {
        let st = h.api.get("allowedrole").await.ok()?.status?;
        st.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.clone())
    })
    .await
    .expect("no status");
    assert_ne!(reason, "CredentialsNotAllowed");
    // The resource's own credentials (the sample's Secret) work from any namespace.
    h.create(&h.sample("owncreds")).await.unwrap();
    h.wait_condition("owncreds", "Ready", "True", Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_can_be_checked_is_checked_before_the_first_aws_change() {
    let h = Harness::start().await.unwrap();
    // Someone else's launch template already has the name a resource would use.
    let aws = h.aws().await;
    aws.ec2
        .create_launch_template()
        .launch_template_name("taken-workers")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder().instance_type("t2.micro".into()).build(),
        )
        .send()
        .await
        .unwrap();
    h.sandbox.gate().clear_calls();
    let cases: [(&str, &str, Breaks); 6] = [
        ("taken", "NameTaken", |_| {}),
        ("badtype", "InstanceTypeNotFound", |e| e.spec.workers.as_mut().unwrap().instance_type = "t9.enormous".into()),
        ("badami", "ImageNotFound", |e| {
            let w = e.spec.workers.as_mut().unwrap();
            w.image.ssm_parameter = None;
            w.image.id = Some("ami-0000000000000dead".into());
        }),
        ("badsubnet", "SubnetNotFound", |e| {
            e.spec.workers.as_mut().unwrap().auto_scaling_group.subnet_ids = vec!["subnet-0000000000000dead".into()]
        }),
        ("badprofile", "InstanceProfileNotFound", |e| {
            e.spec.workers.as_mut().unwrap().instance_profile = "missing-profile".into()
        }),
        ("badkey", "KeyPairNotFound", |e| e.spec.workers.as_mut().unwrap().key_name = Some("missing-key".into())),
    ];
    for (name, reason, break_it) in cases {
        let mut edd = h.sample(name);
        break_it(&mut edd);
        h.create(&edd).await.unwrap();
        assert_eq!(stalled(&h, name).await.0, reason, "{name}");
    }
    // A wrong Console password: found before anything is created.
    h.put_secret("wrongpass", &[("username", "admin"), ("password", "wrong"), ("url", &h.sandbox.console().url())])
        .await
        .unwrap();
    let mut edd = h.sample("wrongpass");
    edd.spec.defender.console.credentials_secret_ref.name = "wrongpass".into();
    h.api.create(&PostParams::default(), &edd).await.unwrap();
    assert_eq!(stalled(&h, "wrongpass").await.0, "ConsoleUnauthorized");
    no_aws_mutations(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_iam_policy_is_enough_and_a_missing_action_is_reported() {
    // Two identities for the operator, each held to a policy by the gate (actions only: moto and
    // the gate do not evaluate resources or tag conditions): the documented one, and the same
    // without ecs:CreateService.
    let h = Harness::start().await.unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(include_str!("../charts/ecs-defender-operator/files/iam-policy.json")).unwrap();
    let mut less = policy.clone();
    for s in less["Statement"].as_array_mut().unwrap() {
        if let Some(list) = s["Action"].as_array_mut() {
            list.retain(|a| a != "ecs:CreateService");
        }
    }
    let gate = h.sandbox.gate();
    for (secret, key, p) in [("aws-full", "AKIAPOLICYFULL000001", &policy), ("aws-less", "AKIAPOLICYLESS000001", &less)]
    {
        gate.add_credentials(key, "policy-test-secret");
        gate.enforce_policy(key, p);
        h.put_secret(secret, &[("AWS_ACCESS_KEY_ID", key), ("AWS_SECRET_ACCESS_KEY", "policy-test-secret")])
            .await
            .unwrap();
    }
    let with_identity = |name: &str, secret: &str| {
        let mut edd = h.sample(name);
        edd.spec.aws.as_mut().unwrap().credentials_secret_ref =
            Some(ecs_defender_operator::crd::SecretRef { name: secret.into() });
        edd
    };
    h.create(&with_identity("full", "aws-full")).await.unwrap();
    h.create(&with_identity("less", "aws-less")).await.unwrap();

    let (reason, message) = stalled(&h, "less").await;
    assert_eq!(reason, "AwsAccessDenied");
    assert!(message.contains("ecs:CreateService"), "{message}");
    h.wait_condition("full", "Ready", "True", Duration::from_secs(180)).await;
    let denied = || -> std::collections::BTreeSet<String> {
        gate.calls()
            .iter()
            .filter(|c| {
                c.error_code.as_deref().is_some_and(|e| e.contains("AccessDenied") || e == "UnauthorizedOperation")
            })
            .map(|c| c.key())
            .collect()
    };
    assert_eq!(denied(), ["ecs:CreateService".to_string()].into(), "only the removed action was refused");

    // Under the documented policy, deletion leaves nothing and needs nothing more.
    h.api.delete("full", &DeleteParams::default()).await.unwrap();
    h.wait_gone("full", Duration::from_secs(180)).await;
    assert_eq!(denied(), ["ecs:CreateService".to_string()].into(), "the teardown needed an action the policy lacks");
    let aws = h.aws().await;
    let described = aws.ecs.describe_clusters().clusters("full").send().await.unwrap();
    assert!(described.clusters().iter().all(|c| c.status() != Some("ACTIVE")), "{described:?}");
}
