//! Contract tests of the Console simulator over real HTTP(S): every endpoint and every error the
//! operator may meet (reference/prisma-console-api.md), plus the fault injection and the Rust API
//! the rest of the test world uses.

use std::time::{Duration, Instant};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use reqwest::{Method, StatusCode};
use sandbox::{
    console::{
        AuthKind, CENTRAL_CONSOLE, CONTAINER_NAME, ConsoleConfig, ConsoleSim, ConsoleVariant, DEFAULT_FAMILY, Fault,
        FaultRule,
    },
    defender::{DefenderRegistry, DefenderStart},
};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    sandbox::install_crypto_provider();
    // no_proxy: the environment may name an HTTP proxy that cannot reach 127.0.0.1.
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn start(cfg: ConsoleConfig) -> ConsoleSim {
    ConsoleSim::start(cfg).await.expect("console starts")
}

async fn login(http: &reqwest::Client, sim: &ConsoleSim) -> String {
    let resp = http
        .post(format!("{}/api/v1/authenticate", sim.url()))
        .json(&json!({"username": sim.username(), "password": sim.password()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// Sends `method url` with a bearer token and returns (status, headers, JSON body or Null).
async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    call(http, Method::GET, url, token, None).await
}

fn assert_err(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "body {body}");
    assert!(body["err"].as_str().is_some_and(|e| !e.is_empty()), "error body {body} has no err");
}

fn env_of(td: &Value, name: &str) -> String {
    td["containerDefinitions"][0]["environment"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {td}"))["value"]
        .as_str()
        .unwrap()
        .to_string()
}

fn defender(bundle: &str, n: usize, cluster: &str) -> DefenderStart {
    DefenderStart {
        install_bundle: bundle.to_string(),
        ws_address: Some("wss://127.0.0.1:8084".to_string()),
        cluster: cluster.to_string(),
        instance_id: format!("i-{n:017x}"),
        hostname: format!("ip-10-0-{}-{}.ec2.internal", n / 256, n % 256),
        account_id: "123456789012".to_string(),
        region: "us-east-1".to_string(),
        instance_type: "t3.small".to_string(),
    }
}

async fn ecs_task(http: &reqwest::Client, sim: &ConsoleSim, token: &str, body: Value) -> Value {
    let (status, headers, td) =
        call(http, Method::POST, &format!("{}/api/v1/defenders/ecs-task.json", sim.url()), token, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{td}");
    assert_eq!(headers[reqwest::header::CONTENT_TYPE], "application/json");
    td
}

#[tokio::test]
async fn ping_version_certs_and_image_name() {
    let sim = start(ConsoleConfig::default()).await;
    let http = client();
    let base = sim.url();
    assert!(base.starts_with("http://127.0.0.1:") && !base.ends_with('/'));

    // `_ping` needs no credentials; everything else does.
    let resp = http.get(format!("{base}/api/v1/_ping")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = http.get(format!("{base}/api/v1/version")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let token = login(&http, &sim).await;
    let (status, _, v) = get(&http, &format!("{base}/api/v1/version"), &token).await;
    assert_eq!((status, v), (StatusCode::OK, json!("34.03.138")));
    // A versioned path routes to the same handler.
    let (status, _, v) = get(&http, &format!("{base}/api/v34.03/version"), &token).await;
    assert_eq!((status, v), (StatusCode::OK, json!("34.03.138")));

    let (status, _, certs) = get(&http, &format!("{base}/api/v1/settings/certs"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(certs["consoleSAN"], json!(["127.0.0.1", "localhost"]));
    assert!(certs["caExpiration"].is_string());

    let (status, _, image) = get(&http, &format!("{base}/api/v1/defenders/image-name"), &token).await;
    assert_eq!(status, StatusCode::OK);
    let image = image.as_str().unwrap().to_string();
    assert!(image.starts_with("registry-auth.twistlock.com/tw_"), "{image}");
    assert!(image.ends_with("/twistlock/defender:defender_34_03_138"), "{image}");

    // A Console upgrade at runtime: the version and the image tag follow.
    sim.set_version("34.04.145");
    let (_, _, v) = get(&http, &format!("{base}/api/v1/version"), &token).await;
    assert_eq!(v, json!("34.04.145"));
    let (_, _, image) = get(&http, &format!("{base}/api/v1/defenders/image-name"), &token).await;
    assert!(image.as_str().unwrap().ends_with(":defender_34_04_145"));

    // install-bundle: a bundle this Console recognises and the websocket address of the SAN.
    let (status, _, ib) =
        get(&http, &format!("{base}/api/v1/defenders/install-bundle?consoleaddr=localhost&defenderType=ecs"), &token)
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ib["wsAddress"], "wss://localhost:8084");
    let bundle = ib["installBundle"].as_str().unwrap();
    assert!(sim.defender_started(&defender(bundle, 1, "c")));
    let (status, _, e) =
        get(&http, &format!("{base}/api/v1/defenders/install-bundle?consoleaddr=evil.example"), &token).await;
    assert_err(status, &e, StatusCode::BAD_REQUEST);

    // Unknown routes, versions and methods answer with the Console's error shape.
    for path in ["/api/v1/nope", "/api/v2/version", "/api/vX.1/version", "/version", "/api/v1/"] {
        let (status, _, e) = get(&http, &format!("{base}{path}"), &token).await;
        assert_err(status, &e, StatusCode::NOT_FOUND);
    }
    let (status, _, e) = call(&http, Method::DELETE, &format!("{base}/api/v1/version"), &token, None).await;
    assert_err(status, &e, StatusCode::METHOD_NOT_ALLOWED);
    // Without TLS there is no CA to hand out.
    assert!(sim.ca_pem().is_none());
    let (status, _, e) = get(&http, &format!("{base}/api/v1/certs/ca.pem"), &token).await;
    assert_err(status, &e, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn authenticate_basic_auth_and_access_keys() {
    let cfg = ConsoleConfig {
        access_keys: vec![("ak-id-1".to_string(), "ak-secret-1".to_string())],
        ..ConsoleConfig::default()
    };
    let sim = start(cfg).await;
    let http = client();
    let base = sim.url();
    let auth_url = format!("{base}/api/v1/authenticate");

    let token = login(&http, &sim).await;
    assert!(token.starts_with("eyJ"), "JWT-shaped: {token}");
    assert_ne!(token, login(&http, &sim).await, "every login gets a new token");

    // Keys are matched case-insensitively, as Go decodes JSON; access keys log in the same way.
    for body in [
        json!({"Username": sim.username(), "PASSWORD": sim.password()}),
        json!({"username": "ak-id-1", "password": "ak-secret-1", "extra": 1}),
    ] {
        let resp = http.post(&auth_url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let t = resp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
        let (status, _, _) = get(&http, &format!("{base}/api/v1/defenders"), &t).await;
        assert_eq!(status, StatusCode::OK);
    }

    // Wrong credentials (case-sensitive), a bad body, and a foreign JWT are refused.
    for body in [
        json!({"username": sim.username(), "password": "wrong"}),
        json!({"username": sim.username().to_uppercase(), "password": sim.password()}),
        json!({"token": "eyJhbGciOi.x.y"}),
        json!({}),
    ] {
        let resp = http.post(&auth_url).json(&body).send().await.unwrap();
        let status = resp.status();
        assert_err(status, &resp.json().await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let resp = http.post(&auth_url).body("not json").send().await.unwrap();
    let status = resp.status();
    assert_err(status, &resp.json().await.unwrap(), StatusCode::BAD_REQUEST);

    // HTTP Basic works on any call; wrong Basic credentials do not.
    let resp = http.get(format!("{base}/api/v1/version")).basic_auth(sim.username(), Some(sim.password())).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    let resp = http.get(format!("{base}/api/v1/defenders")).basic_auth("ak-id-1", Some("ak-secret-1")).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    let resp = http.get(format!("{base}/api/v1/version")).basic_auth(sim.username(), Some("nope")).send().await;
    let resp = resp.unwrap();
    let status = resp.status();
    assert_err(status, &resp.json().await.unwrap(), StatusCode::UNAUTHORIZED);

    // Missing, malformed and unknown tokens get 401 {"err"}.
    let resp = http.get(format!("{base}/api/v1/defenders")).send().await.unwrap();
    let status = resp.status();
    assert_err(status, &resp.json().await.unwrap(), StatusCode::UNAUTHORIZED);
    let resp = http.get(format!("{base}/api/v1/defenders")).header("Authorization", "Token abc").send().await.unwrap();
    let status = resp.status();
    assert_err(status, &resp.json().await.unwrap(), StatusCode::UNAUTHORIZED);
    let (status, _, e) = get(&http, &format!("{base}/api/v1/defenders"), "eyJ.forged.token").await;
    assert_err(status, &e, StatusCode::UNAUTHORIZED);

    // The request log shows how each call authenticated, never the secrets themselves.
    let log = sim.requests();
    assert!(log.iter().any(|r| r.auth == AuthKind::Basic && r.status == Some(200)));
    assert!(log.iter().any(|r| r.auth == AuthKind::Bearer && r.status == Some(401)));
    assert!(log.iter().any(|r| r.auth == AuthKind::Other && r.status == Some(401)));
    let dump = format!("{log:?}");
    for secret in [sim.password(), "ak-secret-1", token.as_str()] {
        assert!(!dump.contains(secret), "the request log leaks a secret");
    }
}

#[tokio::test]
async fn token_expiry_then_renewal() {
    // Long enough that the calls before the sleep finish well within it even on a loaded machine.
    let lifetime = Duration::from_millis(2000);
    let sim = start(ConsoleConfig { token_lifetime: lifetime, ..ConsoleConfig::default() }).await;
    let http = client();
    let base = sim.url();
    let renew_url = format!("{base}/api/v1/authenticate/renew");
    let issued = Instant::now();
    let old = login(&http, &sim).await;

    // Renewing an unexpired token returns a new, working one; the old one keeps working.
    let (status, _, body) = get(&http, &renew_url, &old).await;
    assert_eq!(status, StatusCode::OK);
    let renewed = body["token"].as_str().unwrap().to_string();
    assert_ne!(renewed, old);
    for t in [&old, &renewed] {
        assert_eq!(get(&http, &format!("{base}/api/v1/defenders"), t).await.0, StatusCode::OK);
    }
    // Renewing needs a bearer token.
    let resp = http.get(&renew_url).basic_auth(sim.username(), Some(sim.password())).send().await.unwrap();
    let status = resp.status();
    assert_err(status, &resp.json().await.unwrap(), StatusCode::UNAUTHORIZED);

    // Once the lifetime is over the token is refused and cannot be renewed; logging in again works.
    tokio::time::sleep((lifetime + Duration::from_millis(100)).saturating_sub(issued.elapsed())).await;
    let (status, _, e) = get(&http, &format!("{base}/api/v1/defenders"), &old).await;
    assert_err(status, &e, StatusCode::UNAUTHORIZED);
    assert_eq!(e["err"], "token expired");
    let (status, _, e) = get(&http, &renew_url, &old).await;
    assert_err(status, &e, StatusCode::UNAUTHORIZED);
    let fresh = login(&http, &sim).await;
    assert_eq!(get(&http, &format!("{base}/api/v1/defenders"), &fresh).await.0, StatusCode::OK);

    // The Rust API can expire every token at once.
    sim.expire_tokens();
    assert_eq!(get(&http, &format!("{base}/api/v1/defenders"), &fresh).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ecs_task_definition_follows_the_reference() {
    let sim = start(ConsoleConfig::default()).await;
    let http = client();
    let token = login(&http, &sim).await;

    // The body the SaaS UI sends (unknown keys, nulls, `serviceAccounts` capitalised).
    let ui_body = json!({"consoleAddr": "127.0.0.1", "namespace": "twistlock", "orchestration": "ecs", "selinux": false,
        "cri": true, "privileged": false, "serviceAccounts": true, "istio": false, "collectPodLabels": false,
        "proxy": null, "dockerSocketPath": null, "gkeAutopilot": false, "cluster": "prod-ecs", "brandNewField": [1]});
    let td = ecs_task(&http, &sim, &token, ui_body.clone()).await;
    assert_eq!(td["family"], DEFAULT_FAMILY);
    assert_eq!(td["requiresCompatibilities"], json!(["EC2"]));
    assert_eq!((&td["networkMode"], &td["pidMode"], &td["memory"]), (&json!("host"), &json!("host"), &json!("512")));
    let containers = td["containerDefinitions"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], CONTAINER_NAME);
    assert_eq!((&c["memory"], &c["essential"], &c["privileged"]), (&json!(512), &json!(true), &json!(true)));
    assert_eq!(c["readonlyRootFilesystem"], true);
    assert!(c["image"].as_str().unwrap().ends_with("/twistlock/defender:defender_34_03_138"));
    let env_names: Vec<&str> =
        c["environment"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        env_names,
        [
            "DEFENDER_LISTENER_TYPE",
            "DEFENDER_TYPE",
            "DEFENDER_CLUSTER",
            "DOCKER_CLIENT_ADDRESS",
            "LOG_PROD",
            "WS_ADDRESS",
            "INSTALL_BUNDLE",
            "HOST_CUSTOM_COMPLIANCE_ENABLED"
        ]
    );
    assert_eq!(env_of(&td, "DEFENDER_TYPE"), "ecs");
    assert_eq!(env_of(&td, "DEFENDER_CLUSTER"), "prod-ecs");
    assert_eq!(env_of(&td, "WS_ADDRESS"), "wss://127.0.0.1:8084");
    assert_eq!(env_of(&td, "DOCKER_CLIENT_ADDRESS"), "/var/run/docker.sock");
    let mounts: Vec<(&str, &str)> = c["mountPoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["containerPath"].as_str().unwrap(), m["sourceVolume"].as_str().unwrap()))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/var/lib/twistlock", "data-folder"),
            ("/var/run", "docker-sock-folder"),
            ("/etc/passwd", "passwd"),
            ("/run", "iptables-lock-folder"),
            ("/dev/log", "syslog-socket")
        ]
    );
    let volumes: Vec<(&str, &str)> = td["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["host"]["sourcePath"].as_str().unwrap()))
        .collect();
    assert_eq!(volumes.len(), 5);
    assert!(volumes.contains(&("data-folder", "/var/lib/twistlock/")));

    // INSTALL_BUNDLE is base64 JSON that this Console recognises as its own.
    let bundle = env_of(&td, "INSTALL_BUNDLE");
    let decoded: Value = serde_json::from_slice(&STANDARD.decode(&bundle).unwrap()).unwrap();
    assert!(decoded["secrets"].is_object() && decoded["globalProxyOpt"].is_object());
    assert!(sim.defender_started(&defender(&bundle, 7, "prod-ecs")));
    assert_eq!(bundle, sim.install_bundle(CENTRAL_CONSOLE));

    // Deterministic: the same inputs give byte-identical output (the operator digests it).
    let again = ecs_task(&http, &sim, &token, ui_body.clone()).await;
    assert_eq!(serde_json::to_string(&again).unwrap(), serde_json::to_string(&td).unwrap());
    // Also on a versioned path.
    let (status, _, versioned) = call(
        &http,
        Method::POST,
        &format!("{}/api/v34.03/defenders/ecs-task.json", sim.url()),
        &token,
        Some(ui_body.clone()),
    )
    .await;
    assert_eq!((status, versioned), (StatusCode::OK, td.clone()));

    // A Console upgrade changes the image tag and the bundle; the old bundle still connects.
    sim.set_version("34.04.145");
    let upgraded = ecs_task(&http, &sim, &token, ui_body).await;
    assert_ne!(upgraded, td);
    assert!(upgraded["containerDefinitions"][0]["image"].as_str().unwrap().ends_with(":defender_34_04_145"));
    assert_ne!(env_of(&upgraded, "INSTALL_BUNDLE"), bundle);
    assert!(sim.defender_started(&defender(&bundle, 8, "prod-ecs")));
    let versions: Vec<String> = sim.defenders().into_iter().map(|d| d.version).collect();
    assert_eq!(versions, ["34.03.138", "34.03.138"], "Defenders keep the version of their bundle");

    // Options: taskName, image, cluster, memory; keys in any case.
    let custom = ecs_task(
        &http,
        &sim,
        &token,
        json!({"TASKNAME": "my-defender", "consoleaddr": "localhost", "Image": "mirror/defender:1", "memoryLimit": 1024}),
    )
    .await;
    assert_eq!(custom["family"], "my-defender");
    assert_eq!(custom["containerDefinitions"][0]["image"], "mirror/defender:1");
    assert_eq!((&custom["memory"], &custom["containerDefinitions"][0]["memory"]), (&json!("1024"), &json!(1024)));
    assert_eq!(env_of(&custom, "DEFENDER_CLUSTER"), "");
    assert_eq!(env_of(&custom, "WS_ADDRESS"), "wss://localhost:8084");

    // Errors: a consoleAddr that is not a SAN (or has a scheme/port), none at all, bad bodies.
    let url = format!("{}/api/v1/defenders/ecs-task.json", sim.url());
    for body in [
        json!({"consoleAddr": "console.example.com"}),
        json!({"consoleAddr": "https://127.0.0.1:8083"}),
        json!({"taskName": "x"}),
        json!({"consoleAddr": "127.0.0.1", "taskName": 5}),
        json!([1, 2]),
    ] {
        let (status, _, e) = call(&http, Method::POST, &url, &token, Some(body)).await;
        assert_err(status, &e, StatusCode::BAD_REQUEST);
    }
    let resp = http.post(&url).bearer_auth(&token).body("{").send().await.unwrap();
    let status = resp.status();
    assert_err(status, &resp.json().await.unwrap(), StatusCode::BAD_REQUEST);
    // Without credentials the generator is closed.
    let resp = http.post(&url).json(&json!({"consoleAddr": "127.0.0.1"})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn defenders_list_filters_and_pages_with_total_count() {
    let sim = start(ConsoleConfig::default()).await;
    let http = client();
    let token = login(&http, &sim).await;
    let base = format!("{}/api/v1", sim.url());
    let bundle = sim.install_bundle(CENTRAL_CONSOLE);

    // 120 Defenders in two clusters; 30 of cluster "b" stop.
    for n in 0..120 {
        assert!(sim.defender_started(&defender(&bundle, n, if n % 2 == 0 { "a" } else { "b" })));
    }
    for n in (1..60).step_by(2) {
        sim.defender_stopped(&format!("i-{n:017x}"));
    }

    // Paging: the limit is clamped to 50, Total-Count is the whole match, pages are disjoint.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let (status, headers, page) = get(&http, &format!("{base}/defenders?limit=500&offset={offset}"), &token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["Total-Count"], "120");
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 50);
        offset += 50;
        seen.extend(page.into_iter().map(|d| d["hostname"].as_str().unwrap().to_string()));
        if offset >= 120 {
            break;
        }
    }
    assert_eq!(seen.len(), 120);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 120);
    // The default page is 50 too.
    let (_, _, page) = get(&http, &format!("{base}/defenders"), &token).await;
    assert_eq!(page.as_array().unwrap().len(), 50);

    // Filters.
    let count = |q: &'static str| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let (status, headers, _) = get(&http, &format!("{base}/defenders?{q}"), &token).await;
            assert_eq!(status, StatusCode::OK, "{q}");
            headers["Total-Count"].to_str().unwrap().parse::<usize>().unwrap()
        }
    };
    assert_eq!(count("cluster=a").await, 60);
    assert_eq!(count("cluster=a&cluster=b").await, 120);
    assert_eq!(count("cluster=b&connected=true").await, 30);
    assert_eq!(count("connected=false").await, 30);
    assert_eq!(count("type=ecs").await, 120);
    assert_eq!(count("type=daemonset").await, 0);
    assert_eq!(count("cluster=nope").await, 0);
    let (_, headers, one) = get(&http, &format!("{base}/defenders?hostname=ip-10-0-0-5.ec2.internal"), &token).await;
    assert_eq!(headers["Total-Count"], "1");
    let d = &one[0];
    assert_eq!(
        (&d["hostname"], &d["type"], &d["cluster"], &d["connected"]),
        (&json!("ip-10-0-0-5.ec2.internal"), &json!("ecs"), &json!("b"), &json!(false))
    );
    assert_eq!(d["cloudMetadata"]["resourceID"], format!("i-{:017x}", 5));
    assert_eq!(d["cloudMetadata"]["accountID"], "123456789012");
    assert_eq!((&d["cloudMetadata"]["provider"], &d["cloudMetadata"]["type"]), (&json!("aws"), &json!("t3.small")));
    assert_eq!(d["version"], "34.03.138");
    assert!(d["lastModified"].as_str().unwrap().ends_with('Z'));
    for bad in ["connected=maybe", "limit=-5", "offset=x"] {
        let (status, _, e) = get(&http, &format!("{base}/defenders?{bad}"), &token).await;
        assert_err(status, &e, StatusCode::BAD_REQUEST);
    }

    // names: same parameters, hostnames only.
    let (status, headers, names) = get(&http, &format!("{base}/defenders/names?cluster=a&limit=10"), &token).await;
    assert_eq!((status, headers["Total-Count"].to_str().unwrap()), (StatusCode::OK, "60"));
    assert_eq!(names.as_array().unwrap().len(), 10);
    assert_eq!(names[0], "ip-10-0-0-0.ec2.internal");

    // summary.
    let (status, _, summary) = get(&http, &format!("{base}/defenders/summary"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary[0]["category"], "container");
    assert_eq!((&summary[0]["deployed"], &summary[0]["connected"]), (&json!(120), &json!(90)));

    // A stop changes `connected` and `lastModified`; a restart reconnects.
    let before = sim.defenders().into_iter().find(|d| d.instance_id == format!("i-{:017x}", 0)).unwrap();
    assert!(before.connected);
    sim.defender_stopped(&before.instance_id);
    let after = sim.defenders().into_iter().find(|d| d.instance_id == before.instance_id).unwrap();
    assert!(!after.connected && after.last_modified >= before.last_modified);
    assert!(sim.defender_started(&defender(&bundle, 0, "a")));

    // DELETE: a disconnected Defender's record goes; a connected one reconnects; unknown is 404.
    let url = |h: &str| format!("{base}/defenders/{h}");
    let (status, _, body) = call(&http, Method::DELETE, &url("ip-10-0-0-1.ec2.internal"), &token, None).await;
    assert_eq!((status, body), (StatusCode::OK, Value::Null));
    assert_eq!(count("hostname=ip-10-0-0-1.ec2.internal").await, 0);
    assert_eq!(count("").await, 119);
    let (status, _, _) = call(&http, Method::DELETE, &url("ip-10-0-0-0.ec2.internal"), &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count("hostname=ip-10-0-0-0.ec2.internal&connected=true").await, 1);
    let (status, _, e) = call(&http, Method::DELETE, &url("ip-1-2-3-4.ec2.internal"), &token, None).await;
    assert_err(status, &e, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn saas_style_path_prefix() {
    let cfg = ConsoleConfig {
        path_prefix: Some("/us-2-158256885".to_string()),
        access_keys: vec![("key-id".to_string(), "key-secret".to_string())],
        ..ConsoleConfig::default()
    };
    let sim = start(cfg).await;
    let http = client();
    assert!(sim.url().ends_with("/us-2-158256885"), "{}", sim.url());
    let root = sim.url().trim_end_matches("/us-2-158256885").to_string();

    // Everything lives under the prefix; the bare paths do not exist.
    assert_eq!(http.get(format!("{}/api/v1/_ping", sim.url())).send().await.unwrap().status(), StatusCode::OK);
    let resp = http.get(format!("{root}/api/v1/_ping")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Access keys authenticate like a user.
    let resp = http
        .post(format!("{}/api/v1/authenticate", sim.url()))
        .json(&json!({"username": "key-id", "password": "key-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let token = resp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let td = ecs_task(&http, &sim, &token, json!({"consoleAddr": "localhost", "orchestration": "ecs"})).await;
    // [inferred] SaaS Defenders dial port 443.
    assert_eq!(env_of(&td, "WS_ADDRESS"), "wss://localhost:443");
    assert!(sim.requests().iter().all(|r| r.path.starts_with("/us-2-158256885/") || r.endpoint.is_empty()));
}

#[tokio::test]
async fn two_consoles_recognise_only_their_own_bundles() {
    let (one, two) = (start(ConsoleConfig::default()).await, start(ConsoleConfig::default()).await);
    assert_ne!(one.url(), two.url());
    assert_ne!(one.password(), two.password(), "random default passwords");
    let http = client();
    let t1 = login(&http, &one).await;
    let t2 = login(&http, &two).await;
    // A token of one Console means nothing to the other.
    assert_eq!(get(&http, &format!("{}/api/v1/defenders", two.url()), &t1).await.0, StatusCode::UNAUTHORIZED);

    let body = json!({"consoleAddr": "127.0.0.1", "cluster": "shared"});
    let b1 = env_of(&ecs_task(&http, &one, &t1, body.clone()).await, "INSTALL_BUNDLE");
    let b2 = env_of(&ecs_task(&http, &two, &t2, body).await, "INSTALL_BUNDLE");
    assert_ne!(b1, b2);

    assert!(one.defender_started(&defender(&b1, 1, "shared")));
    assert!(!one.defender_started(&defender(&b2, 2, "shared")), "a foreign bundle never connects");
    assert!(two.defender_started(&defender(&b2, 3, "shared")));
    assert!(!two.defender_started(&defender(&b1, 4, "shared")));
    assert!(!one.defender_started(&defender("garbage", 5, "shared")));
    assert!(!one.defender_started(&defender("", 6, "shared")));
    // [inferred] A WS_ADDRESS naming a host the certificate lacks does not connect either.
    let mut elsewhere = defender(&b1, 7, "shared");
    elsewhere.ws_address = Some("wss://console.example.com:8084".to_string());
    assert!(!one.defender_started(&elsewhere));
    let mut no_ws = defender(&b1, 8, "shared");
    no_ws.ws_address = None;
    assert!(one.defender_started(&no_ws));

    let hosts = |sim: &ConsoleSim| sim.defenders().into_iter().map(|d| d.instance_id).collect::<Vec<_>>();
    assert_eq!(hosts(&one), [format!("i-{:017x}", 1), format!("i-{:017x}", 8)]);
    assert_eq!(hosts(&two), [format!("i-{:017x}", 3)]);
    let (_, headers, _) = get(&http, &format!("{}/api/v1/defenders", two.url()), &t2).await;
    assert_eq!(headers["Total-Count"], "1");
}

#[tokio::test]
async fn projects_scope_requests_and_defenders() {
    let sim = start(ConsoleConfig { projects: vec!["Dev Team".to_string()], ..ConsoleConfig::default() }).await;
    let http = client();
    let base = format!("{}/api/v1", sim.url());
    // `project` does not apply to authentication.
    let resp = http
        .post(format!("{base}/authenticate?project=Whatever"))
        .json(&json!({"username": sim.username(), "password": sim.password()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let token = resp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();

    let (status, _, e) = get(&http, &format!("{base}/defenders?project=Nope"), &token).await;
    assert_err(status, &e, StatusCode::BAD_REQUEST);
    assert_eq!(get(&http, &format!("{base}/defenders?project=Central+Console"), &token).await.0, StatusCode::OK);

    // A Defender from the project's bundle shows only in that project.
    let (status, _, td) = call(
        &http,
        Method::POST,
        &format!("{base}/defenders/ecs-task.json?project=Dev%20Team"),
        &token,
        Some(json!({"consoleAddr": "127.0.0.1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let dev_bundle = env_of(&td, "INSTALL_BUNDLE");
    assert_ne!(dev_bundle, sim.install_bundle(CENTRAL_CONSOLE));
    assert!(sim.defender_started(&defender(&dev_bundle, 1, "dev")));
    let (_, headers, _) = get(&http, &format!("{base}/defenders?project=Dev+Team"), &token).await;
    assert_eq!(headers["Total-Count"], "1");
    let (_, headers, _) = get(&http, &format!("{base}/defenders"), &token).await;
    assert_eq!(headers["Total-Count"], "0");

    // Without Projects enabled, naming one is an error too.
    let plain = start(ConsoleConfig::default()).await;
    let t = login(&http, &plain).await;
    let (status, _, e) = get(&http, &format!("{}/api/v1/defenders?project=Dev+Team", plain.url()), &t).await;
    assert_err(status, &e, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn injected_faults_are_observed_exactly() {
    let sim = start(ConsoleConfig::default()).await;
    let http = client();
    let base = format!("{}/api/v1", sim.url());
    let token = login(&http, &sim).await;
    let faults = sim.faults();

    // 429 with Retry-After on the next two calls to /defenders only, then normal again.
    faults.inject(FaultRule::on("defenders", Fault::TooManyRequests { retry_after: Some(7) }).times(2));
    for _ in 0..2 {
        assert_eq!(get(&http, &format!("{base}/defenders/names"), &token).await.0, StatusCode::OK);
        let (status, headers, e) = get(&http, &format!("{base}/defenders"), &token).await;
        assert_err(status, &e, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[reqwest::header::RETRY_AFTER], "7");
    }
    assert_eq!(get(&http, &format!("{base}/defenders"), &token).await.0, StatusCode::OK);
    assert!(faults.pending().is_empty());

    // 429 without Retry-After.
    faults.inject(FaultRule::on("version", Fault::TooManyRequests { retry_after: None }).times(1));
    let (status, headers, _) = get(&http, &format!("{base}/version"), &token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.get(reqwest::header::RETRY_AFTER).is_none());

    // 500 always, until cleared; also on authenticate, before credentials are looked at.
    faults.inject(FaultRule::on("ecs-task.json", Fault::ServerError));
    faults.inject(FaultRule::on("authenticate", Fault::ServerError).times(1));
    for _ in 0..3 {
        let (status, _, e) = call(
            &http,
            Method::POST,
            &format!("{base}/defenders/ecs-task.json"),
            &token,
            Some(json!({"consoleAddr": "127.0.0.1"})),
        )
        .await;
        assert_err(status, &e, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let resp = http.post(format!("{base}/authenticate")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    faults.clear();
    let td = ecs_task(&http, &sim, &token, json!({"consoleAddr": "127.0.0.1"})).await;
    assert_eq!(td["family"], DEFAULT_FAMILY);

    // A delay, then the normal answer.
    faults.inject(FaultRule::on("settings/certs", Fault::Delay(Duration::from_millis(300))).times(1));
    let started = Instant::now();
    assert_eq!(get(&http, &format!("{base}/settings/certs"), &token).await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(get(&http, &format!("{base}/settings/certs"), &token).await.0, StatusCode::OK);
    let certs_calls: Vec<_> = sim.requests().into_iter().filter(|r| r.endpoint == "settings/certs").collect();
    assert_eq!(certs_calls.len(), 2);
    assert_eq!(certs_calls[0].faults, [Fault::Delay(Duration::from_millis(300))]);
    assert!(certs_calls[1].faults.is_empty(), "a counted delay applies once");

    // A dropped connection: no HTTP response at all; the next call is served.
    faults.inject(FaultRule::on("defenders/summary", Fault::DropConnection).times(1));
    let dropped = http.get(format!("{base}/defenders/summary")).bearer_auth(&token).send().await;
    let e = dropped.expect_err("the connection is dropped");
    assert!(!e.is_timeout() && e.status().is_none(), "{e:?}");
    assert_eq!(get(&http, &format!("{base}/defenders/summary"), &token).await.0, StatusCode::OK);

    // An expired token mid-session: the call gets 401; logging in again works.
    faults.inject(FaultRule::on("defenders", Fault::ExpireTokens).times(1));
    let (status, _, e) = get(&http, &format!("{base}/defenders"), &token).await;
    assert_err(status, &e, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&http, &format!("{base}/defenders"), &token).await.0, StatusCode::UNAUTHORIZED);
    let token = login(&http, &sim).await;
    assert_eq!(get(&http, &format!("{base}/defenders"), &token).await.0, StatusCode::OK);

    // Everywhere, counted: even _ping fails.
    faults.inject(FaultRule::everywhere(Fault::ServerError).times(2));
    assert_eq!(http.get(format!("{base}/_ping")).send().await.unwrap().status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(get(&http, &format!("{base}/version"), &token).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(get(&http, &format!("{base}/version"), &token).await.0, StatusCode::OK);

    // The request log shows every fault as the client saw it.
    let log = sim.requests();
    let with = |f: &Fault| log.iter().filter(|r| r.faults.contains(f)).count();
    assert_eq!(with(&Fault::TooManyRequests { retry_after: Some(7) }), 2);
    assert_eq!(with(&Fault::ServerError), 6);
    assert_eq!(with(&Fault::DropConnection), 1);
    assert_eq!(with(&Fault::ExpireTokens), 1);
    let drop_entry = log.iter().find(|r| r.faults.contains(&Fault::DropConnection)).unwrap();
    assert_eq!((drop_entry.endpoint.as_str(), drop_entry.status), ("defenders/summary", None));
    assert!(log.iter().all(|r| r.api_version == "v1"));
    assert_eq!(sim.request_count(), log.len() as u64);
}

#[tokio::test]
async fn tls_with_the_console_ca() {
    let sim = start(ConsoleConfig { tls: true, ..ConsoleConfig::default() }).await;
    let base = sim.url();
    assert!(base.starts_with("https://127.0.0.1:"));
    let pem = sim.ca_pem().expect("a CA when TLS is on");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    sandbox::install_crypto_provider();
    let trusting = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let token = login(&trusting, &sim).await;
    let (status, _, v) = get(&trusting, &format!("{base}/api/v1/version"), &token).await;
    assert_eq!((status, v), (StatusCode::OK, json!("34.03.138")));
    // The CA is also served, as `certs/ca.pem` on a real Console.
    let resp = trusting.get(format!("{base}/api/v1/certs/ca.pem")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), pem);
    // `localhost` is a SAN of the certificate too.
    let local = base.replace("127.0.0.1", "localhost");
    let resp = trusting.get(format!("{local}/api/v1/_ping")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A client that does not trust the CA fails the handshake.
    let e = client().get(format!("{base}/api/v1/_ping")).send().await.expect_err("untrusted CA");
    assert!(e.is_connect(), "{e:?}");
    // Another Console's CA is no good either.
    let other = start(ConsoleConfig { tls: true, ..ConsoleConfig::default() }).await;
    let wrong = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(other.ca_pem().unwrap().as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(wrong.get(format!("{base}/api/v1/_ping")).send().await.is_err());
}

#[tokio::test]
async fn server_stops_when_the_last_handle_drops() {
    let sim = start(ConsoleConfig::default()).await;
    let http = client();
    let url = format!("{}/api/v1/_ping", sim.url());
    let clone = sim.clone();
    drop(sim);
    assert_eq!(http.get(&url).send().await.unwrap().status(), StatusCode::OK, "a clone keeps it running");
    drop(clone);
    // The accept loop and open connections end on the next scheduler turn; poll briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = client();
    loop {
        if fresh.get(&url).send().await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the server still answers after the last handle dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Defender list as one call returns it (token auth).
async fn list(http: &reqwest::Client, sim: &ConsoleSim, token: &str, query: &str) -> (usize, Vec<Value>) {
    let (status, headers, body) = get(http, &format!("{}/api/v1/defenders?{query}", sim.url()), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let total = headers["Total-Count"].to_str().unwrap().parse().unwrap();
    (total, body.as_array().cloned().unwrap_or_default())
}

/// A Console of `variant` with one connected Defender from a generated task definition.
async fn variant_with_one_defender(variant: ConsoleVariant) -> (ConsoleSim, reqwest::Client, String, Value) {
    let sim = start(ConsoleConfig {
        variant,
        cluster_delay: Duration::from_millis(1500),
        upgrade_after: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let http = client();
    let token = login(&http, &sim).await;
    let td = ecs_task(&http, &sim, &token, json!({"consoleAddr": "127.0.0.1"})).await;
    assert!(sim.defender_started(&defender(&env_of(&td, "INSTALL_BUNDLE"), 1, "prod")));
    (sim, http, token, td)
}

#[tokio::test]
async fn variant_cluster_late_shows_an_empty_cluster_for_a_while() {
    let (sim, http, token, _) = variant_with_one_defender(ConsoleVariant::ClusterLate).await;
    let (total, all) = list(&http, &sim, &token, "").await;
    assert_eq!((total, all[0]["cluster"].as_str()), (1, Some("")), "{all:?}");
    assert_eq!(list(&http, &sim, &token, "cluster=prod").await.0, 0, "a cluster filter misses it meanwhile");
    assert_eq!(all[0]["cloudMetadata"]["resourceID"], "i-00000000000000001", "found by instance id without the filter");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (total, all) = list(&http, &sim, &token, "cluster=prod").await;
    assert_eq!((total, all[0]["cluster"].as_str()), (1, Some("prod")));
}

#[tokio::test]
async fn variant_hostname_only_has_no_resource_id() {
    let (sim, http, token, _) = variant_with_one_defender(ConsoleVariant::HostnameOnly).await;
    let (_, all) = list(&http, &sim, &token, "").await;
    assert!(all[0]["cloudMetadata"].get("resourceID").is_none(), "{}", all[0]);
    assert_eq!(all[0]["hostname"], "ip-10-0-0-1.ec2.internal");
    assert_eq!(all[0]["cluster"], "prod");
}

#[tokio::test]
async fn variant_fresh_bundle_differs_on_every_generation_and_still_connects() {
    let (sim, http, token, td1) = variant_with_one_defender(ConsoleVariant::FreshBundle).await;
    let td2 = ecs_task(&http, &sim, &token, json!({"consoleAddr": "127.0.0.1"})).await;
    assert_ne!(env_of(&td1, "INSTALL_BUNDLE"), env_of(&td2, "INSTALL_BUNDLE"));
    assert_ne!(td1, td2, "the same request, another document");
    assert!(sim.defender_started(&defender(&env_of(&td2, "INSTALL_BUNDLE"), 2, "prod")));
    // The documented Console gives the same bundle for the same version.
    let plain = start(ConsoleConfig::default()).await;
    let t = login(&http, &plain).await;
    let a = ecs_task(&http, &plain, &t, json!({"consoleAddr": "127.0.0.1"})).await;
    let b = ecs_task(&http, &plain, &t, json!({"consoleAddr": "127.0.0.1"})).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn variant_upgrading_changes_version_image_and_bundle_once() {
    let (sim, http, token, td1) = variant_with_one_defender(ConsoleVariant::Upgrading).await;
    let (_, _, v1) = get(&http, &format!("{}/api/v1/version", sim.url()), &token).await;
    assert_eq!(v1, json!("34.03.138"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, _, v2) = get(&http, &format!("{}/api/v1/version", sim.url()), &token).await;
    assert_eq!(v2, json!("34.03.139"), "upgraded after upgrade_after");
    let td2 = ecs_task(&http, &sim, &token, json!({"consoleAddr": "127.0.0.1"})).await;
    assert_ne!(td1["containerDefinitions"][0]["image"], td2["containerDefinitions"][0]["image"]);
    assert_ne!(env_of(&td1, "INSTALL_BUNDLE"), env_of(&td2, "INSTALL_BUNDLE"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sim.version(), "34.03.139", "only once");
}

#[tokio::test]
async fn variant_unknown_fields_adds_fields_our_types_do_not_know() {
    let (sim, http, token, td) = variant_with_one_defender(ConsoleVariant::UnknownFields).await;
    assert!(td["containerDefinitions"][0]["ulimits"].is_array(), "{td}");
    let (_, all) = list(&http, &sim, &token, "").await;
    assert_eq!(all[0]["agentlessScanEnabled"], false);
    assert!(all[0]["cloudMetadata"]["tags"].is_array());
    let (_, _, certs) = get(&http, &format!("{}/api/v1/settings/certs", sim.url()), &token).await;
    assert!(certs["consoleCustomCerts"].is_object());
    assert_eq!(ConsoleVariant::ALL.len(), 6);
}

#[tokio::test]
async fn small_pages_on_switch_from_rust_and_over_http() {
    let sim = start(ConsoleConfig::default()).await;
    let http = client();
    let token = login(&http, &sim).await;
    let bundle = sim.install_bundle(CENTRAL_CONSOLE);
    for n in 0..5 {
        assert!(sim.defender_started(&defender(&bundle, n, "c")));
    }
    assert_eq!(list(&http, &sim, &token, "limit=50").await.1.len(), 5);
    sim.set_max_page_size(2);
    let (total, page) = list(&http, &sim, &token, "limit=50").await;
    assert_eq!((total, page.len()), (5, 2), "the limit is clamped; Total-Count still counts all");
    // Paging as the python SDK does: offset until Total-Count.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let (total, page) = list(&http, &sim, &token, &format!("limit=50&offset={offset}")).await;
        seen.extend(page.iter().map(|d| d["hostname"].as_str().unwrap().to_string()));
        offset += page.len();
        if page.is_empty() || offset >= total {
            break;
        }
    }
    assert_eq!(seen.len(), 5);
    let control = sim.control_url();
    let resp = http.put(format!("{control}/page-size")).json(&json!({"maxPageSize": 1})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(list(&http, &sim, &token, "").await.1.len(), 1);
    let v: Value = http.get(format!("{control}/page-size")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"maxPageSize": 1}));
}

#[tokio::test]
async fn faults_by_route_and_probability_over_the_control_api() {
    let sim = start(ConsoleConfig::default()).await;
    let http = client();
    let token = login(&http, &sim).await;
    let control = sim.control_url();
    // Half the Defender-list calls fail; other routes are untouched.
    let resp = http
        .post(format!("{control}/faults"))
        .json(&json!({"endpoint": "defenders", "fault": "serverError", "rate": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (mut failed, mut ok) = (0, 0);
    for _ in 0..200 {
        let (status, _, _) = get(&http, &format!("{}/api/v1/defenders", sim.url()), &token).await;
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::INTERNAL_SERVER_ERROR => failed += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!((60..=140).contains(&failed), "about half fail: {failed} failed, {ok} ok");
    for _ in 0..20 {
        assert_eq!(get(&http, &format!("{}/api/v1/version", sim.url()), &token).await.0, StatusCode::OK);
    }
    let rules: Value = http.get(format!("{control}/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(rules, json!([{"endpoint": "defenders", "fault": "serverError", "rate": 0.5}]));
    // The log says which calls met the fault, also over HTTP.
    let log: Value =
        http.get(format!("{control}/requests?endpoint=defenders")).send().await.unwrap().json().await.unwrap();
    let hit = log.as_array().unwrap().iter().filter(|r| r["faults"] == json!(["serverError"])).count();
    assert_eq!(hit, failed);
    assert_eq!(http.delete(format!("{control}/faults")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&http, &format!("{}/api/v1/defenders", sim.url()), &token).await.0, StatusCode::OK);

    // Counted 429s with Retry-After, a Console upgrade and expired tokens, from outside.
    http.post(format!("{control}/faults"))
        .json(&json!([{"endpoint": "ecs-task.json", "fault": {"tooManyRequests": {"retryAfter": 2}}, "remaining": 1}]))
        .send()
        .await
        .unwrap();
    let (status, headers, _) = call(
        &http,
        Method::POST,
        &format!("{}/api/v1/defenders/ecs-task.json", sim.url()),
        &token,
        Some(json!({"consoleAddr": "127.0.0.1"})),
    )
    .await;
    assert_eq!((status, headers["retry-after"].to_str().unwrap()), (StatusCode::TOO_MANY_REQUESTS, "2"));
    http.put(format!("{control}/version")).json(&json!({"version": "34.04.100"})).send().await.unwrap();
    assert_eq!(sim.version(), "34.04.100");
    http.post(format!("{control}/expire-tokens")).send().await.unwrap();
    assert_eq!(get(&http, &format!("{}/api/v1/version", sim.url()), &token).await.0, StatusCode::UNAUTHORIZED);
    // The Rust API takes the same rules.
    sim.faults().inject(FaultRule::on("version", Fault::ServerError).rate(1.0).times(1));
    let t = login(&http, &sim).await;
    assert_eq!(get(&http, &format!("{}/api/v1/version", sim.url()), &t).await.0, StatusCode::INTERNAL_SERVER_ERROR);
}
