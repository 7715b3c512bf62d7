//! No secret shows anywhere a person or a log pipeline reads. Canary values (distinctive random
//! strings) stand in for the Console password, the AWS access key id, secret key and session token
//! (an AWS credentials Secret the resource names), and the sandbox's own secrets are known to the
//! test: the Console's bearer tokens and the Defender install bundle. The operator runs as a real
//! process at `RUST_LOG=trace`, then at `debug`, each bringing a resource to Ready and deleting
//! it; then no canary may appear in the operator's log (stdout and stderr), the namespace's
//! Events, the resource (status included), the operator's `/metrics`, the AWS gate's call log or
//! the Console simulator's request log. A self-check shows the search finds a canary where it
//! belongs (the install bundle in its Secrets Manager secret), so the test can fail.

mod common;

use std::time::Duration;

use common::{eventually, process::Operator, process::World};
use ecs_defender_operator::crd::SecretRef;
use k8s_openapi::api::{core::v1 as core, events::v1 as events};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use rand::{Rng, distr::Alphanumeric};
use sandbox::{
    console::{CENTRAL_CONSOLE, ConsoleConfig},
    world::SandboxOptions,
};

const TIMEOUT: Duration = Duration::from_secs(180);

fn random(n: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(n).map(char::from).collect()
}

/// A secret value and the strings that betray it: the value, and for long values a window from
/// its middle too (a log may cut or wrap a long value; a JWT's header is the same in every token).
struct Canary {
    what: String,
    needles: Vec<String>,
}

impl Canary {
    fn new(what: impl Into<String>, value: &str) -> Canary {
        let mut needles = vec![value.to_string()];
        if value.len() > 64 {
            let mid = value.len() / 2;
            needles.push(value[mid - 20..mid + 20].to_string());
        }
        Canary { what: what.into(), needles }
    }

    fn found_in(&self, haystack: &str) -> bool {
        self.needles.iter().any(|n| haystack.contains(n.as_str()))
    }
}

/// The places a secret must never reach, by name.
#[derive(Default)]
struct Places(Vec<(String, String)>);

impl Places {
    fn add(&mut self, name: impl Into<String>, text: impl Into<String>) {
        self.0.push((name.into(), text.into()));
    }

    /// `"<canary> in <place>: <lines>"` for every canary found.
    fn leaks(&self, canaries: &[Canary]) -> Vec<String> {
        let mut out = vec![];
        for (place, text) in &self.0 {
            for c in canaries.iter().filter(|c| c.found_in(text)) {
                out.push(format!("{} in {place}: {:?}", c.what, show(text, c)));
            }
        }
        out
    }
}

/// Where `canary` shows in `text`: up to three excerpts around it, for the failure message.
fn show(text: &str, canary: &Canary) -> Vec<String> {
    let mut out = vec![];
    for needle in &canary.needles {
        for (at, _) in text.match_indices(needle.as_str()).take(3 - out.len().min(3)) {
            let from = text.floor_char_boundary(at.saturating_sub(200));
            let to = text.ceil_char_boundary((at + needle.len() + 60).min(text.len()));
            out.push(text[from..to].to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_events_status_metrics_or_call_logs() {
    let password = format!("CanaryConsolePassword{}", random(20));
    let world = World::start_with(SandboxOptions {
        console: Some(ConsoleConfig { password: password.clone(), ..Default::default() }),
        ..Default::default()
    })
    .await;
    let key_id = format!("AKIACANARY{}", random(10).to_uppercase());
    let secret_key = format!("CanarySecretKey{}", random(25));
    let session_token = format!("CanarySessionToken{}", random(40));
    world.sandbox.gate().add_credentials(&key_id, &secret_key);
    let secrets: Api<core::Secret> = Api::namespaced(world.client.clone(), "default");
    let aws_secret: core::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "aws-canary"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_SESSION_TOKEN": session_token,
        },
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &aws_secret).await.unwrap();

    let console = world.sandbox.console().clone();
    let bundle = console.install_bundle(CENTRAL_CONSOLE);
    let mut places = Places::default();
    let mut self_checked = false;
    for level in ["trace", "debug"] {
        let name = format!("canary-{level}");
        let op = Operator::start(&name, &world, &[("RUST_LOG", level), ("LEADER_ELECT", "false")]).await;
        let mut edd = world.sample(&name);
        edd.spec.aws.as_mut().unwrap().credentials_secret_ref = Some(SecretRef { name: "aws-canary".into() });
        world.api.create(&PostParams::default(), &edd).await.unwrap();
        let ready = eventually(TIMEOUT, || async { world.ready(&name).await.then_some(()) }).await;
        assert!(ready.is_some(), "{name} not Ready; log:\n{}", op.log());
        let edd = world.api.get(&name).await.unwrap();
        places.add(format!("{name} (the resource)"), serde_json::to_string(&edd).unwrap());

        // Self-check: the search finds the bundle where it belongs, in its Secrets Manager secret.
        let arn = edd.status.as_ref().and_then(|s| s.defender_secret.as_ref()).map(|s| s.arn.clone()).unwrap();
        let aws = sandbox::world::AwsClientsForTests::new(&world.sandbox.aws_config().await);
        let stored = aws.secretsmanager.get_secret_value().secret_id(arn).send().await.unwrap();
        let stored = stored.secret_string().unwrap_or_default();
        assert!(Canary::new("the install bundle", &bundle).found_in(stored), "the canary search misses the bundle");
        self_checked = true;

        world.api.delete(&name, &DeleteParams::default()).await.unwrap();
        if let Ok(deleting) = world.api.get(&name).await {
            places.add(format!("{name} (the resource, deleting)"), serde_json::to_string(&deleting).unwrap());
        }
        let gone =
            eventually(TIMEOUT, || async { matches!(world.api.get_opt(&name).await, Ok(None)).then_some(()) }).await;
        assert!(gone.is_some(), "{name} not deleted; log:\n{}", op.log());
        let metrics = reqwest::get(format!("{}/metrics", op.url)).await.unwrap().text().await.unwrap();
        assert!(metrics.contains("ecs_defender_operator_aws_calls_total"), "{metrics}");
        places.add(format!("/metrics of the operator at {level}"), metrics);
        let mut op = op;
        op.kill().await;
        places.add(format!("the operator's log at {level}"), op.log());
    }
    assert!(self_checked);

    let core_events: Api<core::Event> = Api::namespaced(world.client.clone(), "default");
    let list = core_events.list(&ListParams::default()).await.unwrap();
    places.add("Events (core/v1)", serde_json::to_string(&list.items).unwrap());
    let new_events: Api<events::Event> = Api::namespaced(world.client.clone(), "default");
    let list = new_events.list(&ListParams::default()).await.unwrap();
    assert!(!list.items.is_empty(), "the operator published no Event");
    places.add("Events (events.k8s.io/v1)", serde_json::to_string(&list.items).unwrap());
    places.add("the AWS gate's call log", serde_json::to_string(&world.sandbox.gate().calls()).unwrap());
    places.add("the Console's request log", format!("{:?}", console.requests()));

    let tokens = console.issued_tokens();
    assert!(!tokens.is_empty(), "the Console issued no token");
    let mut canaries = vec![
        Canary::new("the Console password", &password),
        Canary::new("the AWS access key id", &key_id),
        Canary::new("the AWS secret access key", &secret_key),
        Canary::new("the AWS session token", &session_token),
        Canary::new("the install bundle", &bundle),
    ];
    for (i, t) in tokens.iter().enumerate() {
        // A JWT's header is the same in every token: its payload and signature are the secret.
        let tail = t.split_once('.').map(|(_, rest)| rest).unwrap_or(t);
        canaries.push(Canary::new(format!("Console token {i}"), tail));
    }
    let leaks = places.leaks(&canaries);
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    let bytes: usize = places.0.iter().map(|(_, t)| t.len()).sum();
    println!(
        "secret canaries: {} values ({} Console tokens) absent from {} places ({} KiB searched), operator at trace and debug",
        canaries.len(),
        tokens.len(),
        places.0.len(),
        bytes / 1024
    );
}
