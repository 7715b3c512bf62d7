//! How the operator reaches the Console: a SaaS-style path prefix, TLS with the Console's own CA
//! from a Secret (or the explicit insecure flag), a Console project, expired tokens renewed on 401.
//! And that no secret value reaches logs, Events or status.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use common::{Harness, eventually};
use kube::api::{Api, ListParams, Patch, PatchParams};
use sandbox::{console::ConsoleConfig, world::SandboxOptions};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything the operator logs in this test binary, at debug level.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,h2=info,rustls=info,tower=info,kube_client=info,aws_smithy_runtime=info,aws_config=info")
            .with_writer(move || SharedWriter(writer.clone()))
            .init();
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn saas_console() -> SandboxOptions {
    SandboxOptions {
        console: Some(ConsoleConfig {
            tls: true,
            path_prefix: Some("/us-2-158256885".into()),
            projects: vec!["Team A".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saas_prefix_tls_ca_project_and_token_renewal() {
    let logs = logs();
    // Resyncs every 2 s: each Ready resource's glance asks the Console again within a second or so.
    let h = Harness::start_full(saas_console(), |c| c.steady_requeue = Duration::from_secs(2)).await.unwrap();
    let console = h.sandbox.console().clone();
    assert!(console.url().starts_with("https://") && console.url().ends_with("/us-2-158256885"));
    h.put_secret("console-ca", &[("ca.crt", &console.ca_pem().unwrap())]).await.unwrap();
    let mut edd = h.sample("saas");
    edd.spec.defender.console.ca_bundle_secret_ref =
        Some(ecs_defender_operator::crd::SecretRef { name: "console-ca".into() });
    edd.spec.defender.console.project = Some("Team A".into());
    h.create(&edd).await.unwrap();
    let ready = h.wait_condition("saas", "Ready", "True", READY_TIMEOUT).await;
    assert_eq!(ready.status.as_ref().unwrap().defenders_connected, Some(2));
    // The Defenders belong to the project (their bundle was issued for it).
    assert!(console.defenders().iter().all(|d| d.project == "Team A"), "{:?}", console.defenders());
    // Every call after authentication named the project.
    let requests = console.requests();
    assert!(
        requests.iter().filter(|r| r.endpoint.starts_with("defenders")).all(|r| r
            .query
            .as_deref()
            .unwrap_or("")
            .contains("project=Team"))
    );

    // Tokens expire mid-session: the operator logs in again on the 401 at its next Console call (a
    // resync's glance) and carries on.
    let logins =
        |c: &sandbox::console::ConsoleSim| c.requests().iter().filter(|r| r.endpoint == "authenticate").count();
    let before = logins(&console);
    console.expire_tokens();
    h.api
        .patch(
            "saas",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(30), || async { (logins(&console) > before).then_some(()) })
        .await
        .expect("no new login after the tokens expired");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = h.api.get("saas").await.unwrap();
    assert!(
        after.status.unwrap().conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
        "not Ready after token expiry"
    );

    // No secret value in status, Events or logs.
    let secrets = [
        console.password().to_string(),
        console.install_bundle("Team A"),
        sandbox::moto::SECRET_ACCESS_KEY.to_string(),
    ];
    let status = serde_json::to_string(&h.api.get("saas").await.unwrap().status).unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), "default");
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(logged.contains("created DAEMON service"), "the log capture caught nothing");
    for s in &secrets {
        assert!(!status.contains(s.as_str()), "a secret is in the status");
        assert!(!events.contains(s.as_str()), "a secret is in an Event");
        assert!(!logged.contains(s.as_str()), "a secret is in the logs");
    }
    // Nor the generated task definition's bundle in any form: the status holds only its digest.
    assert!(!status.contains("INSTALL_BUNDLE") && !logged.contains("INSTALL_BUNDLE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_ca_fails_clearly_and_the_insecure_flag_is_explicit() {
    let _ = logs();
    let h = Harness::start_with(SandboxOptions {
        console: Some(ConsoleConfig { tls: true, ..Default::default() }),
        ..Default::default()
    })
    .await
    .unwrap();
    h.create(&h.sample("untrusted")).await.unwrap();
    // The workers come up; the task definition step cannot reach the Console.
    let found = eventually(READY_TIMEOUT, || async {
        h.condition("untrusted", "Ready").await.filter(|c| c.reason == "ConsoleUnavailable")
    })
    .await
    .expect("no ConsoleUnavailable reason");
    assert!(found.message.to_lowercase().contains("certificate"), "{}", found.message);
    assert_eq!(h.sandbox.gate().counts().get("ecs:RegisterTaskDefinition"), None);

    h.api
        .patch(
            "untrusted",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"defender": {"console": {"insecureSkipTlsVerify": true}}}})),
        )
        .await
        .unwrap();
    h.wait_condition("untrusted", "Ready", "True", READY_TIMEOUT).await;
}
