//! What Argo CD and Flux make of our status, executed rather than read.
//!
//! - Argo CD: the chart's health check (`charts/.../files/argocd-health.lua`) runs in Lua 5.1 (Argo
//!   CD's interpreter, gopher-lua, implements 5.1) with only the libraries Argo CD opens when
//!   `useOpenLibs` is off (base and table), on `obj` converted as Argo CD converts it (JSON null ->
//!   nil).
//! - Flux: kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus`, the library behind kustomize-controller's
//!   `wait`/`healthChecks`) runs as the Go program `hack/kstatus`, built by
//!   `hack/install-test-tools.sh`.
//!
//! Both read the live object (`kubectl get -o json` on the sandbox's apiserver) at each phase of an
//! end-to-end run: converging, Ready, a spec change not yet observed, Stalled, suspended.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use common::{Harness, eventually};
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const HEALTH_LUA: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ecs-defender-operator/files/argocd-health.lua"));

/// A test tool's path, as `hack/install-test-tools.sh --print-env` names it (`KSTATUS`, ...).
fn tool(var: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/install-test-tools.sh"))
        .arg("--print-env")
        .output()
        .expect("hack/install-test-tools.sh --print-env");
    let env = String::from_utf8(out.stdout).unwrap();
    let path = env.lines().find_map(|l| l.strip_prefix(&format!("{var}="))).expect(var).to_string();
    assert!(std::path::Path::new(&path).is_file(), "{var} not found at {path}; run `make tools`");
    path
}

/// Argo CD's verdict: (status, message).
fn argocd_health(obj: &Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    // Base is always open; Argo CD adds table (and package, and a safe subset of os) unless
    // useOpenLibs is set, so a check that needs `string` would fail there: leave it out here too.
    let lua = mlua::Lua::new_with(mlua::StdLib::TABLE, mlua::LuaOptions::default()).unwrap();
    let options = mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    lua.globals().set("obj", lua.to_value_with(obj, options).unwrap()).unwrap();
    let hs: mlua::Table = lua.load(HEALTH_LUA).set_name("argocd-health.lua").eval().expect("the health check runs");
    let status: String = hs.get("status").unwrap();
    let message: Option<String> = hs.get("message").unwrap();
    // Argo CD accepts only its own health codes.
    assert!(
        ["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"].contains(&status.as_str()),
        "not an Argo CD health status: {status}"
    );
    (status, message.unwrap_or_default())
}

/// kstatus's verdict: (status, message).
fn kstatus(obj: &Value) -> (String, String) {
    let mut child = Command::new(tool("KSTATUS"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hack/kstatus");
    child.stdin.take().unwrap().write_all(obj.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kstatus failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["status"].as_str().unwrap().to_string(), v["message"].as_str().unwrap_or_default().to_string())
}

/// The live object as the apiserver serves it.
fn kubectl_json(h: &Harness, args: &[&str]) -> Value {
    let tools = sandbox::tools::Tools::locate().unwrap();
    let out = Command::new(tools.kubectl)
        .arg("--kubeconfig")
        .arg(h.sandbox.control_plane().kubeconfig())
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn live(h: &Harness, name: &str) -> Value {
    kubectl_json(h, &["get", "edd", name, "-n", "default"])
}

/// `kubectl patch --type=merge`, as a user editing the resource would; returns the answer.
fn merge_patch(h: &Harness, name: &str, patch: &str) -> Value {
    kubectl_json(h, &["patch", "edd", name, "-n", "default", "--type=merge", "-p", patch])
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

fn is(obj: &Value, kind: &str, status: &str) -> bool {
    condition(obj, kind).is_some_and(|c| c["status"] == status)
}

/// Both verdicts for one phase, printed so a failing run shows the whole table.
fn verdicts(phase: &str, obj: &Value) -> ((String, String), (String, String)) {
    let (argo, flux) = (argocd_health(obj), kstatus(obj));
    println!("{phase:<28} Argo CD {:<12} kstatus {:<11} ({})", argo.0, flux.0, argo.1);
    (argo, flux)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_and_kstatus_agree_with_our_conditions_at_every_phase() {
    let h = Harness::start().await.unwrap();
    h.create(&h.sample("phases")).await.unwrap();

    // Converging: Reconciling=True while the AWS steps run.
    let converging = eventually(Duration::from_secs(60), || async {
        let obj = live(&h, "phases");
        is(&obj, "Reconciling", "True").then_some(obj)
    })
    .await
    .expect("never seen converging");
    assert!(is(&converging, "Ready", "False"), "{converging:#}");
    let (argo, flux) = verdicts("converging", &converging);
    assert_eq!(argo.0, "Progressing");
    assert_eq!(flux.0, "InProgress");

    // Ready.
    h.wait_condition("phases", "Ready", "True", READY_TIMEOUT).await;
    let ready = live(&h, "phases");
    assert_eq!(ready["status"]["observedGeneration"], ready["metadata"]["generation"]);
    let (argo, flux) = verdicts("ready", &ready);
    assert_eq!(argo.0, "Healthy");
    assert_eq!(flux.0, "Current");

    // A spec change the operator has not observed yet: the patch's own answer, generation ahead of
    // status.observedGeneration, still Ready=True from the previous generation. The change (a
    // Console address that is not a host) is refused by validation next.
    let lagging = merge_patch(&h, "phases", r#"{"spec":{"defender":{"consoleAddress":"not a host/x"}}}"#);
    assert_ne!(lagging["status"]["observedGeneration"], lagging["metadata"]["generation"]);
    assert!(is(&lagging, "Ready", "True"), "{lagging:#}");
    let (argo, flux) = verdicts("observedGeneration lags", &lagging);
    assert_eq!(argo, ("Progressing".to_string(), "Spec change not yet observed".to_string()));
    assert_eq!(flux.0, "InProgress");

    // Stalled: a terminal fault until the user changes the spec.
    h.wait_condition("phases", "Stalled", "True", Duration::from_secs(30)).await;
    let stalled = live(&h, "phases");
    assert_eq!(stalled["status"]["observedGeneration"], stalled["metadata"]["generation"]);
    let (argo, flux) = verdicts("stalled", &stalled);
    assert_eq!(argo.0, "Degraded");
    assert!(argo.1.contains("consoleAddress"), "{}", argo.1);
    assert_eq!(flux.0, "Failed");

    // Suspended before it was ever Ready: Ready=False with reason Suspended, Reconciling and
    // Stalled False. Argo CD shows Suspended (see the chart README: it holds later sync waves);
    // kstatus has no notion of suspension and falls back to Ready=False: InProgress.
    let mut paused = h.sample("paused");
    paused.spec.suspend = true;
    h.create(&paused).await.unwrap();
    let suspended = eventually(Duration::from_secs(30), || async {
        let obj = live(&h, "paused");
        condition(&obj, "Ready").is_some_and(|c| c["reason"] == "Suspended").then_some(obj)
    })
    .await
    .expect("never seen suspended");
    assert!(is(&suspended, "Ready", "False") && is(&suspended, "Reconciling", "False"), "{suspended:#}");
    assert!(is(&suspended, "Stalled", "False"), "{suspended:#}");
    let (argo, flux) = verdicts("suspended, never Ready", &suspended);
    assert_eq!(argo.0, "Suspended");
    assert_eq!(flux.0, "InProgress");

    // Suspended after it was Ready, captured: the stalled resource above is fixed and suspended in
    // one change. Its AWS side is still whole, so Ready keeps the real health, True, with reason
    // Suspended; Reconciling and Stalled are False.
    merge_patch(&h, "phases", r#"{"spec":{"suspend":true,"defender":{"consoleAddress":null}}}"#);
    let suspended_ready = eventually(Duration::from_secs(60), || async {
        let obj = live(&h, "phases");
        let observed = obj["status"]["observedGeneration"] == obj["metadata"]["generation"];
        let suspended = condition(&obj, "Ready").is_some_and(|c| c["reason"] == "Suspended");
        (observed && suspended).then_some(obj)
    })
    .await
    .expect("never seen suspended after Ready");
    assert!(
        is(&suspended_ready, "Ready", "True") && is(&suspended_ready, "Reconciling", "False"),
        "{suspended_ready:#}"
    );
    assert!(is(&suspended_ready, "Stalled", "False"), "{suspended_ready:#}");
    let (argo, flux) = verdicts("suspended, was Ready", &suspended_ready);
    assert_eq!(argo.0, "Suspended");
    assert_eq!(flux.0, "Current");

    // No status yet (just created): Argo CD waits. kstatus calls an object without conditions
    // Current (its rule for kinds it does not know), which is why the operator writes
    // observedGeneration and Ready=False on its very first reconcile.
    let mut fresh = ready.clone();
    fresh.as_object_mut().unwrap().remove("status");
    let (argo, flux) = verdicts("no status yet", &fresh);
    assert_eq!(argo.0, "Progressing");
    assert_eq!(flux.0, "Current");
}
