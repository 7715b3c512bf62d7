//! The Helm chart: it lints and renders with default and namespaced values, its RBAC grants exactly
//! the Kubernetes API calls the operator makes (leader election's Lease included), and on a real
//! apiserver a token of the chart's own ServiceAccount can make those calls and nothing else. It
//! runs two replicas with a rolling update and a PodDisruptionBudget, runs the image's user, and
//! `helm upgrade` upgrades the CRD.

mod common;

use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use ecs_defender_operator::{
    crd::{EcsDefenderDeployment, FIELD_MANAGER, FINALIZER},
    fixtures,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Namespace, Pod, Secret},
    events::v1::Event as K8sEvent,
};
use kube::{
    Api, Client, CustomResourceExt, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use sandbox::{control_plane::ControlPlane, tools::Tools};
use serde::Deserialize;
use serde_yaml::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ecs-defender-operator");
const RELEASE_NAMESPACE: &str = "ecs-defender-system";
const CRD_FILE: &str = "files/crds/ecsdefenderdeployments.ecsdefender.io.yaml";
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

/// What leader election calls (kube-lease-manager: get, create, server-side-apply patch; the fence
/// in src/leader.rs: list+watch with a metadata.name field selector), as rendered rules: `create`
/// for any Lease (it cannot be limited by name), the rest for the release's Lease only.
fn expected_lease_rules(lease: &str) -> Value {
    serde_yaml::from_str(&format!(
        r#"
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: ["{lease}"]
  verbs: ["get", "list", "watch", "patch"]
"#
    ))
    .unwrap()
}

/// The object of `kind` whose name ends with `suffix` ("" for the operator's main one).
fn named<'a>(docs: &'a [Value], kind: &str, leader_election: bool) -> &'a Value {
    let found: Vec<_> = of_kind(docs, kind)
        .into_iter()
        .filter(|d| d["metadata"]["name"].as_str().unwrap().ends_with("-leader-election") == leader_election)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} (leader election: {leader_election})");
    found[0]
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
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]),
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

    // Leader election: a Role for this release's Lease only, in the release namespace.
    let lease_role = named(&docs, "Role", true);
    assert_eq!(lease_role["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(lease_role["rules"], expected_lease_rules("edo-ecs-defender-operator"));
    let lease_binding = named(&docs, "RoleBinding", true);
    assert_eq!(lease_binding["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(lease_binding["roleRef"]["name"], lease_role["metadata"]["name"]);
    assert_eq!(lease_binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(env_value(deployment, "LEADER_ELECT_LEASE_NAME"), Some("edo-ecs-defender-operator"));
    assert_eq!(env_value(deployment, "LEADER_ELECT_NAMESPACE"), Some(RELEASE_NAMESPACE));
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

    let role = named(&docs, "Role", false);
    assert_eq!(role["metadata"]["namespace"], WATCHED);
    assert_eq!(grants(role), expected_grants());
    // The Lease stays in the operator's own namespace.
    assert_eq!(named(&docs, "Role", true)["metadata"]["namespace"], RELEASE_NAMESPACE);

    let binding = named(&docs, "RoleBinding", false);
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

    // Two replicas, one leads: a rolling update starts a (Ready) standby before stopping one.
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 1);
    assert_eq!(env_value(d, "LEADER_ELECT"), Some("true"));
    assert_eq!(env_value(d, "LEADER_ELECT_LEASE_DURATION_SECONDS"), Some("15"));
    assert_eq!(env_value(d, "LEADER_ELECT_RENEW_GRACE_SECONDS"), Some("5"));
    let spread = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(spread["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname", "replicas spread over nodes");
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"]);
    assert_eq!(pod["serviceAccountName"], one(&docs, "ServiceAccount")["metadata"]["name"]);
    assert_eq!(c["image"], "ghcr.io/ecs-defender/ecs-defender-operator:0.1.0", "tag defaults to appVersion");

    // Env from values, as src/main.rs reads it.
    assert_eq!(env_value(d, "METRICS_ADDR"), Some("0.0.0.0:8080"));
    assert_eq!(env_value(d, "RUST_LOG"), Some("info"));
    assert_eq!(env_value(d, "LOG_FORMAT"), Some("json"));
    assert_eq!(env_value(d, "OPERATOR_AWS_ENDPOINT_URL"), None);
    assert_eq!(env_value(d, "RESOURCE_SELECTOR"), None, "every resource unless a shard is asked for");
    assert_eq!(env_value(d, "AWS_RATE_LIMITS"), None, "the binary's default rate budgets");
    assert_eq!(env_value(d, "CONSOLE_RATE_LIMIT"), None);
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
            "resourceSelector=shard=a",
            "rateLimits.aws.ecs=15/45",
            "rateLimits.aws.iam=off",
            "rateLimits.console=1/5",
        ],
    );
    let d = one(&docs, "Deployment");
    // The rate budgets as src/main.rs parses them.
    assert_eq!(env_value(d, "AWS_RATE_LIMITS"), Some("ecs=15/45,iam=off"));
    let limits: ecs_defender_operator::budget::AwsRateLimits =
        env_value(d, "AWS_RATE_LIMITS").unwrap().parse().unwrap();
    assert_eq!(limits.get("ecs"), Some(ecs_defender_operator::budget::RateLimit::new(15.0, 45)));
    assert_eq!(limits.get("iam"), None);
    assert_eq!(env_value(d, "CONSOLE_RATE_LIMIT"), Some("1/5"));
    assert_eq!(env_value(d, "RESOURCE_SELECTOR"), Some("shard=a"));
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

    // Leader election values.
    let docs = render(
        "edo",
        &[
            "leaderElection.leaseName=edo-lock",
            "leaderElection.namespace=locks",
            "leaderElection.leaseDurationSeconds=30",
            "leaderElection.renewGraceSeconds=10",
        ],
    );
    let d = one(&docs, "Deployment");
    assert_eq!(env_value(d, "LEADER_ELECT_LEASE_NAME"), Some("edo-lock"));
    assert_eq!(env_value(d, "LEADER_ELECT_NAMESPACE"), Some("locks"));
    assert_eq!(env_value(d, "LEADER_ELECT_LEASE_DURATION_SECONDS"), Some("30"));
    assert_eq!(env_value(d, "LEADER_ELECT_RENEW_GRACE_SECONDS"), Some("10"));
    let lease_role = named(&docs, "Role", true);
    assert_eq!(lease_role["metadata"]["namespace"], "locks");
    assert_eq!(lease_role["rules"], expected_lease_rules("edo-lock"));
    assert_eq!(named(&docs, "RoleBinding", true)["metadata"]["namespace"], "locks");
}

#[test]
fn without_leader_election_one_replica_is_recreated_and_more_are_refused() {
    let docs = render("edo", &["leaderElection.enabled=false", "replicaCount=1"]);
    let d = one(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "no leader election: never two operators at once");
    assert_eq!(env_value(d, "LEADER_ELECT"), Some("false"));
    assert!(of_kind(&docs, "Role").is_empty(), "no Lease RBAC without leader election");
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty(), "a budget on one replica would block drains");
    assert!(d["spec"]["template"]["spec"]["affinity"].is_null());

    let out = helm()
        .args(["template", "edo", CHART, "--set", "leaderElection.enabled=false", "--set", "replicaCount=2"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "two replicas without leader election rendered");
    assert!(String::from_utf8_lossy(&out.stderr).contains("replicaCount > 1 needs leaderElection.enabled"));
}

/// `v` with every number as a float, so 1000 and 1000.0 compare equal.
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        Value::Sequence(s) => Value::Sequence(s.iter().map(numbers_as_f64).collect()),
        Value::Mapping(m) => Value::Mapping(m.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn the_crd_is_a_kept_template_equal_to_the_generated_one() {
    let generated: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/{CRD_FILE}")).unwrap()).unwrap();
    let docs = render("edo", &[]);
    let crd = one(&docs, "CustomResourceDefinition");
    // Helm's fromYaml/toYaml writes the schema's `maximum: 1000.0` as `1000`: the same number.
    assert_eq!(
        numbers_as_f64(&crd["spec"]),
        numbers_as_f64(&generated["spec"]),
        "the rendered CRD differs from the generated one"
    );
    assert_eq!(crd["metadata"]["name"], generated["metadata"]["name"]);
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert_eq!(crd["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");

    let docs = render("edo", &["crds.keep=false"]);
    assert!(one(&docs, "CustomResourceDefinition")["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    let docs = render("edo", &["crds.install=false"]);
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty());
}

#[test]
fn the_pods_run_as_the_images_user() {
    // The Dockerfile's final USER (uid:gid) is the one the chart's securityContext names.
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let user = dockerfile.lines().rev().find_map(|l| l.trim().strip_prefix("USER ")).expect("a USER line");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let (uid, gid): (i64, i64) = (uid.parse().expect("numeric uid"), gid.parse().expect("numeric gid"));
    assert_ne!(uid, 0, "the image runs as root");

    let docs = render("edo", &[]);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(uid));
    assert_eq!(pod["securityContext"]["runAsGroup"].as_i64(), Some(gid));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["containers"][0]["securityContext"]["runAsNonRoot"], true);
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

/// Leader election through `client`, as the operator runs it (src/leader.rs): create the Lease,
/// acquire it, watch it, release it. Then what it must not do with Leases.
async fn lease_calls_succeed_and_nothing_else(client: &Client, lease: &str) {
    let metrics = std::sync::Arc::new(ecs_defender_operator::metrics::Metrics::default());
    let config = ecs_defender_operator::leader::Config {
        lease_name: lease.to_string(),
        namespace: RELEASE_NAMESPACE.to_string(),
        identity: "chart-test".into(),
        lease_duration: Duration::from_secs(10),
        renew_grace: Duration::from_secs(3),
    };
    let election = ecs_defender_operator::leader::Election::start(client.clone(), config, metrics.clone())
        .await
        .expect("create/get the Lease");
    let mut role = election.role();
    tokio::time::timeout(Duration::from_secs(20), role.wait_for(|r| r.is_leader()))
        .await
        .expect("acquired the Lease in time (get, patch, list+watch by name)")
        .unwrap();
    assert!(metrics.is_leader());
    drop(role);
    election.stop().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let released = leases.get(lease).await.expect("get our Lease");
    assert_eq!(released.spec.and_then(|s| s.holder_identity), None, "released on stop");

    assert!(is_forbidden(leases.get("someone-elses-lease").await), "get another Lease");
    assert!(is_forbidden(leases.list(&ListParams::default()).await), "list every Lease");
    assert!(is_forbidden(leases.delete(lease, &DeleteParams::default()).await), "delete the Lease");
    let elsewhere: Api<Lease> = Api::namespaced(client.clone(), "default");
    assert!(is_forbidden(elsewhere.get(lease).await), "the Lease's name in another namespace");
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
    lease_calls_succeed_and_nothing_else(&cluster_wide, "edo-ecs-defender-operator").await;
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
    lease_calls_succeed_and_nothing_else(&namespaced, "edo-ns-ecs-defender-operator").await;
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

/// A copy of the chart whose CRD gains `spec.upgradeProbe`, as a later chart version would.
fn chart_with_a_changed_crd(dir: &Path) -> std::path::PathBuf {
    let copy = dir.join("chart-next");
    run(Command::new("cp").arg("-r").arg(CHART).arg(&copy));
    let file = copy.join(CRD_FILE);
    let mut crd: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    spec.as_mapping_mut().unwrap().insert(
        "upgradeProbe".into(),
        serde_yaml::from_str("{type: string, description: A field only the next chart version knows.}").unwrap(),
    );
    std::fs::write(&file, serde_yaml::to_string(&crd).unwrap()).unwrap();
    copy
}

/// Creates a resource carrying `spec.upgradeProbe` and returns what the apiserver kept of it
/// (a field the served schema does not know is pruned).
async fn create_with_probe(client: &Client, name: &str) -> Option<String> {
    use kube::{api::DynamicObject, discovery::ApiResource};
    let ar = ApiResource::erase::<EcsDefenderDeployment>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut edd = serde_json::to_value(fixtures::sample(name)).unwrap();
    edd["metadata"] = serde_json::json!({"name": name});
    edd["spec"]["upgradeProbe"] = "kept".into();
    let obj: DynamicObject = serde_json::from_value(edd).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.expect("create a resource");
    created.data["spec"]["upgradeProbe"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_upgrades_the_crd_and_uninstall_keeps_it() {
    ecs_defender_operator::install_crypto_provider();
    let cp = ControlPlane::start().await.expect("control plane");
    let admin = cp.client().await.unwrap();
    let helm_on = |args: &[&str]| {
        let mut cmd = helm();
        cmd.args(args).arg("--kubeconfig").arg(cp.kubeconfig()).args(["--namespace", RELEASE_NAMESPACE]);
        cmd
    };

    run(&mut helm_on(&["install", "edo", CHART, "--create-namespace"]));
    // What the release created, as the apiserver has it.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    let d = deployments.get("edo-ecs-defender-operator").await.expect("the Deployment");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    pdbs.get("edo-ecs-defender-operator").await.expect("the PodDisruptionBudget");
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    let lease_role = roles.get("edo-ecs-defender-operator-leader-election").await.expect("the Lease Role");
    assert_eq!(
        lease_role.rules.unwrap()[1].resource_names.as_deref(),
        Some(&["edo-ecs-defender-operator".to_string()][..])
    );
    common::eventually(Duration::from_secs(30), || async {
        Api::<EcsDefenderDeployment>::all(admin.clone()).list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await
    .expect("the CRD is served");
    assert_eq!(create_with_probe(&admin, "before").await, None, "the first CRD has no upgradeProbe");

    let tmp = tempfile::tempdir().unwrap();
    let next = chart_with_a_changed_crd(tmp.path());
    run(&mut helm_on(&["upgrade", "edo", next.to_str().unwrap()]));
    // The apiserver serves the new schema (after its discovery/schema caches catch up).
    let mut n = 0;
    let kept = common::eventually(Duration::from_secs(30), || {
        n += 1;
        let name = format!("after-{n}");
        let admin = admin.clone();
        async move { create_with_probe(&admin, &name).await }
    })
    .await;
    assert_eq!(kept.as_deref(), Some("kept"), "helm upgrade did not upgrade the CRD");

    run(&mut helm_on(&["uninstall", "edo"]));
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(admin.clone());
    let crd = crds.get(EcsDefenderDeployment::crd_name()).await.expect("helm uninstall kept the CRD");
    assert!(crd.metadata.deletion_timestamp.is_none());
    let left = Api::<EcsDefenderDeployment>::namespaced(admin.clone(), "default").list(&ListParams::default()).await;
    assert!(left.unwrap().items.len() >= 2, "the resources survive an uninstall");
}
