//! The Helm chart: it lints and renders with default and namespaced values, its RBAC grants exactly
//! the Kubernetes API calls the operator makes, and on a real apiserver a token of the chart's own
//! ServiceAccount can make those calls and nothing else.

mod common;

use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use ecs_defender_operator::{
    crd::{EcsDefenderDeployment, FIELD_MANAGER, FINALIZER},
    fixtures,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Secret},
    events::v1::Event as K8sEvent,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use sandbox::{control_plane::ControlPlane, tools::Tools};
use serde::Deserialize;
use serde_yaml::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ecs-defender-operator");
const RELEASE_NAMESPACE: &str = "ecs-defender-system";
const WATCHED: &str = "team-a";

/// What the operator calls (src/controller.rs, src/reconcile/mod.rs, kube-rs `Recorder`), as
/// (API group, resource, verbs). The chart must grant exactly this.
const OPERATOR_CALLS: &[(&str, &str, &[&str])] = &[
    ("ecsdefender.io", "ecsdefenderdeployments", &["get", "list", "watch", "patch"]),
    ("ecsdefender.io", "ecsdefenderdeployments/status", &["patch"]),
    ("ecsdefender.io", "ecsdefenderdeployments/finalizers", &["update"]),
    // get by name; list/watch of metadata for the Secret watch (watchSecrets, on by default).
    ("", "secrets", &["get", "list", "watch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

// ---------------------------------------------------------------------------------------------
// helpers

/// Runs a command; panics with its output when it fails. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn helm() -> Command {
    Command::new(Tools::locate().expect("test tools (make tools)").helm)
}

fn kubectl(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(Tools::locate().expect("test tools (make tools)").kubectl);
    cmd.arg("--kubeconfig").arg(kubeconfig);
    cmd
}

/// `helm template <release> <chart> -n ecs-defender-system --set ...`, one value per document.
fn render(release: &str, set: &[&str]) -> Vec<Value> {
    let mut cmd = helm();
    cmd.args(["template", release, CHART, "--namespace", RELEASE_NAMESPACE]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let yaml = run(&mut cmd);
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).expect("helm template renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind_of(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, rendered {}", found.len());
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// A role's rules as (group, resource, verb) triples; panics on wildcards and on any field that
/// would widen or narrow a rule beyond group/resource/verb.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        for key in rule.as_mapping().unwrap().keys() {
            let key = key.as_str().unwrap();
            assert!(["apiGroups", "resources", "verbs"].contains(&key), "unexpected rule field {key}: {rule:?}");
        }
        let (groups, resources, verbs) =
            (strings(&rule["apiGroups"]), strings(&rule["resources"]), strings(&rule["verbs"]));
        for s in groups.iter().chain(&resources).chain(&verbs) {
            assert!(!s.contains('*'), "wildcard in {rule:?}");
        }
        for g in &groups {
            for r in &resources {
                for v in &verbs {
                    assert!(out.insert((g.clone(), r.clone(), v.clone())), "{g}/{r} {v} granted twice");
                }
            }
        }
    }
    out
}

fn expected_grants() -> BTreeSet<(String, String, String)> {
    OPERATOR_CALLS
        .iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(move |v| (g.to_string(), r.to_string(), v.to_string())))
        .collect()
}

fn env_of(deployment: &Value) -> Vec<&Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_sequence().expect("env").iter().collect()
}

fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    env_of(deployment).into_iter().find(|e| e["name"].as_str() == Some(name)).and_then(|e| e["value"].as_str())
}

fn is_forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    match r {
        Err(kube::Error::Api(s)) => s.code == 403,
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// rendering

#[test]
fn chart_lints_with_default_and_namespaced_values() {
    for set in [vec![], vec!["watchNamespace=team-a"], vec!["serviceMonitor.enabled=true", "logFormat=text"]] {
        let mut cmd = helm();
        cmd.args(["lint", "--strict", CHART, "--namespace", RELEASE_NAMESPACE]);
        for s in &set {
            cmd.args(["--set", s]);
        }
        let out = run(&mut cmd);
        assert!(out.contains("0 chart(s) failed"), "helm lint {set:?}:\n{out}");
    }
}

#[test]
fn default_values_grant_exactly_the_operator_calls_cluster_wide() {
    let docs = render("edo", &[]);
    let kinds: BTreeSet<&str> = docs.iter().map(kind_of).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]),
        "rendered objects"
    );
    assert!(of_kind(&docs, "ServiceMonitor").is_empty(), "ServiceMonitor only when enabled");

    let role = one(&docs, "ClusterRole");
    assert_eq!(grants(role), expected_grants());
    // Secrets: read by name, and listed/watched (metadata only) for the Secret watch.
    let secrets: Vec<_> = grants(role).into_iter().filter(|(_, r, _)| r == "secrets").map(|(_, _, v)| v).collect();
    assert_eq!(secrets, ["get", "list", "watch"]);
    assert_eq!(env_value(one(&docs, "Deployment"), "WATCH_SECRETS"), Some("true"));

    let sa = one(&docs, "ServiceAccount");
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let subjects = binding["subjects"].as_sequence().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], sa["metadata"]["name"]);
    assert_eq!(subjects[0]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(sa["metadata"]["namespace"], RELEASE_NAMESPACE);

    let deployment = one(&docs, "Deployment");
    assert_eq!(env_value(deployment, "WATCH_NAMESPACE"), None, "empty watchNamespace watches all namespaces");
}

#[test]
fn without_the_secret_watch_secrets_are_read_by_name_only() {
    let docs = render("edo", &["watchSecrets=false"]);
    let role = one(&docs, "ClusterRole");
    let secrets: Vec<_> = grants(role).into_iter().filter(|(_, r, _)| r == "secrets").map(|(_, _, v)| v).collect();
    assert_eq!(secrets, ["get"], "never listed or watched (that would expose every Secret)");
    assert_eq!(env_value(one(&docs, "Deployment"), "WATCH_SECRETS"), Some("false"));
}

#[test]
fn watch_namespace_grants_the_same_calls_in_that_namespace_only() {
    let docs = render("edo", &["watchNamespace=team-a"]);
    assert!(of_kind(&docs, "ClusterRole").is_empty(), "nothing cluster-scoped when watching one namespace");
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());

    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], WATCHED);
    assert_eq!(grants(role), expected_grants());

    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], WATCHED);
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], RELEASE_NAMESPACE, "the SA lives in the release namespace");

    assert_eq!(env_value(one(&docs, "Deployment"), "WATCH_NAMESPACE"), Some(WATCHED));
}

#[test]
fn deployment_wires_values_into_the_operator() {
    let docs = render("edo", &[]);
    let d = one(&docs, "Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "no leader election: never two operators at once");
    assert_eq!(pod["serviceAccountName"], one(&docs, "ServiceAccount")["metadata"]["name"]);
    assert_eq!(c["image"], "ghcr.io/ecs-defender/ecs-defender-operator:0.1.0", "tag defaults to appVersion");

    // Env from values, as src/main.rs reads it.
    assert_eq!(env_value(d, "METRICS_ADDR"), Some("0.0.0.0:8080"));
    assert_eq!(env_value(d, "RUST_LOG"), Some("info"));
    assert_eq!(env_value(d, "LOG_FORMAT"), Some("json"));
    assert_eq!(env_value(d, "OPERATOR_AWS_ENDPOINT_URL"), None);
    let pod_name = env_of(d).into_iter().find(|e| e["name"] == "POD_NAME").expect("POD_NAME");
    assert_eq!(pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");

    // Probes on the metrics port.
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");

    // Hardened: nonroot, read-only root filesystem, no capabilities.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&c["securityContext"]["capabilities"]["drop"]), ["ALL"]);

    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");

    // Values flow through.
    let docs = render(
        "edo",
        &[
            "logLevel=debug",
            "logFormat=text",
            "metrics.port=9090",
            "awsEndpointUrl=http://127.0.0.1:4566",
            "image.tag=dev",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/edo",
            "env[0].name=AWS_REGION",
            "env[0].value=eu-west-1",
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=prom",
        ],
    );
    let d = one(&docs, "Deployment");
    assert_eq!(env_value(d, "RUST_LOG"), Some("debug"));
    assert_eq!(env_value(d, "LOG_FORMAT"), Some("text"));
    assert_eq!(env_value(d, "METRICS_ADDR"), Some("0.0.0.0:9090"));
    assert_eq!(env_value(d, "OPERATOR_AWS_ENDPOINT_URL"), Some("http://127.0.0.1:4566"));
    assert_eq!(env_value(d, "AWS_REGION"), Some("eu-west-1"));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/ecs-defender/ecs-defender-operator:dev"
    );
    assert_eq!(
        one(&docs, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/edo"
    );
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn argocd_health_check_is_documented_verbatim() {
    let lua = std::fs::read_to_string(format!("{CHART}/files/argocd-health.lua")).unwrap();
    let readme = std::fs::read_to_string(format!("{CHART}/README.md")).unwrap();
    assert!(readme.contains("resource.customizations.health.ecsdefender.io_EcsDefenderDeployment: |"));
    // The README's argocd-cm block is the file, indented under the key.
    let indented: String = lua.lines().map(|l| format!("    {l}\n")).collect();
    assert!(readme.contains(&indented), "README's Argo CD snippet differs from files/argocd-health.lua");
    for needle in ["Stalled", "Degraded", "Healthy", "observedGeneration ~= obj.metadata.generation"] {
        assert!(lua.contains(needle), "health check lacks {needle}");
    }
}

// ---------------------------------------------------------------------------------------------
// on a real apiserver

/// Applies the rendered ServiceAccount and RBAC objects by server-side apply and returns a client
/// authenticating as that ServiceAccount (a TokenRequest token).
async fn install_rbac_and_login(cp: &ControlPlane, docs: &[Value]) -> Client {
    let rbac_kinds = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    let manifest: String = docs
        .iter()
        .filter(|d| rbac_kinds.contains(&kind_of(d)))
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    let sa = one(docs, "ServiceAccount")["metadata"]["name"].as_str().unwrap().to_string();
    let file = cp.dir().join(format!("{sa}-rbac.yaml"));
    std::fs::write(&file, manifest).unwrap();
    run(kubectl(cp.kubeconfig()).args(["apply", "--server-side", "--field-manager=helm-template", "-f"]).arg(&file));
    let token = run(kubectl(cp.kubeconfig()).args(["create", "token", &sa, "-n", RELEASE_NAMESPACE, "--duration=10m"]));
    cp.client_with_token(token.trim()).await.expect("client with the ServiceAccount's token")
}

/// The operator's own calls, in `ns`, through `client`: each must be allowed.
async fn operator_calls_succeed(client: &Client, ns: &str, edd_name: &str, secret_name: &str) {
    let api: Api<EcsDefenderDeployment> = Api::namespaced(client.clone(), ns);

    // Startup check and watch (controller::run).
    api.list(&ListParams::default().limit(1)).await.expect("list EcsDefenderDeployments");
    let mut events = api.watch(&WatchParams::default().timeout(10), "0").await.expect("watch").boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.expect("watch event in time");
    match first.expect("watch stream") {
        Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), edd_name),
        other => panic!("expected Added({edd_name}), got {other:?}"),
    }
    let edd = api.get(edd_name).await.expect("get EcsDefenderDeployment");

    // Credentials Secret by name (reconcile::read_secret).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets.get(secret_name).await.expect("get the credentials Secret");
    // The Secret watch lists metadata only (controller::run, metadata_watcher).
    secrets.list_metadata(&ListParams::default()).await.expect("list Secrets' metadata");

    // Finalizer by merge patch with resourceVersion (controller::set_finalizers). A plain apiserver
    // checks only `patch` here; `ecsdefenderdeployments/finalizers` (asserted in the rendered
    // rules) is for clusters that enforce it, such as OpenShift's OwnerReferencesPermissionEnforcement.
    let patch = serde_json::json!({
        "metadata": {"finalizers": [FINALIZER], "resourceVersion": edd.resource_version()}
    });
    let edd = api.patch(edd_name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch finalizers");
    assert_eq!(edd.finalizers(), [FINALIZER]);

    // Status by server-side apply (reconcile::patch_status).
    let status = serde_json::json!({
        "apiVersion": "ecsdefender.io/v1alpha1",
        "kind": "EcsDefenderDeployment",
        "status": {"observedGeneration": edd.metadata.generation},
    });
    let edd = api
        .patch_status(edd_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&status))
        .await
        .expect("patch status by server-side apply");
    assert_eq!(edd.status.and_then(|s| s.observed_generation), edd.metadata.generation);

    // Events through kube-rs's Recorder: the first publish creates, a repeat patches the series.
    let edd = api.get(edd_name).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "ecs-defender-operator".into(), instance: Some("chart-test".into()) },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "RbacCheck".into(),
        note: Some("chart RBAC".into()),
        action: "RbacCheck".into(),
        secondary: None,
    };
    recorder.publish(&ev, &edd.object_ref(&())).await.expect("create an events.k8s.io Event");
    recorder.publish(&ev, &edd.object_ref(&())).await.expect("patch an events.k8s.io Event");

    // Removing the finalizer again, as teardown does.
    let edd = api.get(edd_name).await.unwrap();
    let patch = serde_json::json!({"metadata": {"finalizers": [], "resourceVersion": edd.resource_version()}});
    api.patch(edd_name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("remove finalizer");
}

/// Calls the operator never makes: each must be forbidden.
async fn other_calls_are_forbidden(client: &Client, ns: &str, edd_name: &str, secret_name: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    assert!(is_forbidden(secrets.delete(secret_name, &DeleteParams::default()).await), "delete a secret");
    let secret: Secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "planted"}})).unwrap();
    assert!(is_forbidden(secrets.create(&PostParams::default(), &secret).await), "create a secret");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    assert!(is_forbidden(pods.list(&ListParams::default()).await), "list pods");
    let edds: Api<EcsDefenderDeployment> = Api::namespaced(client.clone(), ns);
    assert!(is_forbidden(edds.delete(edd_name, &DeleteParams::default()).await), "delete an EcsDefenderDeployment");
    let mut planted = fixtures::sample("planted");
    planted.metadata = kube::api::ObjectMeta { name: Some("planted".into()), ..Default::default() };
    assert!(is_forbidden(edds.create(&PostParams::default(), &planted).await), "create one");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(is_forbidden(namespaces.list(&ListParams::default()).await), "list namespaces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_rbac_allows_the_operator_calls_and_nothing_else_on_a_real_apiserver() {
    ecs_defender_operator::install_crypto_provider();
    let cp = ControlPlane::start().await.expect("control plane");
    let admin = cp.client().await.unwrap();
    common::install_crd(&admin).await.unwrap();

    // Namespaces, a resource and its Secret in "default" and in the watched namespace.
    for ns in [RELEASE_NAMESPACE, WATCHED] {
        let n: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &n).await.unwrap();
    }
    for ns in ["default", WATCHED] {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pc-console"},
            "stringData": {"username": "u", "password": "p"},
        }))
        .unwrap();
        Api::<Secret>::namespaced(admin.clone(), ns).create(&PostParams::default(), &secret).await.unwrap();
        let mut edd = fixtures::sample("demo");
        edd.metadata.uid = None;
        edd.metadata.generation = None;
        edd.metadata.namespace = Some(ns.to_string());
        Api::<EcsDefenderDeployment>::namespaced(admin.clone(), ns).create(&PostParams::default(), &edd).await.unwrap();
    }

    // Default values: cluster-wide.
    let cluster_wide = install_rbac_and_login(&cp, &render("edo", &[])).await;
    let all: Api<EcsDefenderDeployment> = Api::all(cluster_wide.clone());
    assert_eq!(all.list(&ListParams::default()).await.expect("list in all namespaces").items.len(), 2);
    operator_calls_succeed(&cluster_wide, "default", "demo", "pc-console").await;
    other_calls_are_forbidden(&cluster_wide, "default", "demo", "pc-console").await;
    let published: Api<K8sEvent> = Api::namespaced(admin.clone(), "default");
    let ours: Vec<_> = published
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RbacCheck"))
        .collect();
    assert_eq!(ours.len(), 1, "one Event, its repeat counted in the series");
    assert_eq!(ours[0].series.as_ref().map(|s| s.count), Some(2));

    // watchNamespace: the same calls work in that namespace, and nowhere else.
    let namespaced = install_rbac_and_login(&cp, &render("edo-ns", &["watchNamespace=team-a"])).await;
    operator_calls_succeed(&namespaced, WATCHED, "demo", "pc-console").await;
    other_calls_are_forbidden(&namespaced, WATCHED, "demo", "pc-console").await;
    let all: Api<EcsDefenderDeployment> = Api::all(namespaced.clone());
    assert!(is_forbidden(all.list(&ListParams::default()).await), "list in all namespaces");
    let elsewhere: Api<Secret> = Api::namespaced(namespaced.clone(), "default");
    assert!(is_forbidden(elsewhere.get("pc-console").await), "a Secret outside the watched namespace");
    let elsewhere: Api<EcsDefenderDeployment> = Api::namespaced(namespaced.clone(), "default");
    assert!(is_forbidden(elsewhere.get("demo").await), "a resource outside the watched namespace");

    // watchSecrets=false: Secrets by name only.
    let by_name =
        install_rbac_and_login(&cp, &render("edo-names", &["watchNamespace=team-a", "watchSecrets=false"])).await;
    let secrets: Api<Secret> = Api::namespaced(by_name.clone(), WATCHED);
    secrets.get("pc-console").await.expect("get by name");
    assert!(is_forbidden(secrets.list(&ListParams::default()).await), "list secrets");
}
