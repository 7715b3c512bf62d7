//! (pure) `POST /defenders/ecs-task.json`: the `types.EcsTaskDefinitionOptions` body and the
//! RegisterTaskDefinition-style document the Console answers with (reference §2).

use serde_json::{Map, Value, json};

use super::bundle::ProxyOpt;

/// The family when the body names no `taskName` (the UI default, reference §2).
pub const DEFAULT_FAMILY: &str = "pc-defender";
/// The container name in every Console-generated ECS task definition.
pub const CONTAINER_NAME: &str = "twistlock_defender";
const DEFAULT_MEMORY_MIB: i64 = 512;
const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The fields of `types.EcsTaskDefinitionOptions` the generator uses; every other field of the
/// schema (`namespace`, `orchestration`, `istio`, ...) is accepted and ignored, like unknown keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EcsTaskDefinitionOptions {
    pub console_addr: Option<String>,
    pub task_name: Option<String>,
    pub cluster: Option<String>,
    pub image: Option<String>,
    pub docker_socket_path: Option<String>,
    pub proxy: ProxyOpt,
    pub cpu_limit: Option<i64>,
    pub memory_limit: Option<i64>,
    pub host_custom_compliance_enabled: bool,
}

/// Looks a field up the way Go's `encoding/json` does: an exact key first, else any key that
/// matches case-insensitively (so the UI's `serviceAccounts` fills `serviceaccounts`).
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// Go's message for a type mismatch, so a client sees what the real Console would say.
fn mismatch(name: &str, v: &Value, want: &str) -> String {
    let got = match v {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    format!("json: cannot unmarshal {got} into Go struct field EcsTaskDefinitionOptions.{name} of type {want}")
}

// In Go, a JSON null leaves a field at its zero value, so null reads as absent everywhere below.
fn string_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(mismatch(name, v, "string")),
    }
}

fn bool_field(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(mismatch(name, v, "bool")),
    }
}

fn int_field(obj: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| mismatch(name, v, "int")),
        Some(v) => Err(mismatch(name, v, "int")),
    }
}

/// Every boolean of the schema, type-checked although only one is used, as Go would check them.
const BOOL_FIELDS: &[&str] = &[
    "privileged",
    "selinux",
    "serviceaccounts",
    "istio",
    "collectPodLabels",
    "gkeAutopilot",
    "bottlerocket",
    "talos",
    "nftablesEnabled",
    "uniqueHostname",
    "cri",
];

/// Parses the request body. [inferred] An empty body is a 400 (Go's decoder reports EOF); a JSON
/// `null` is an empty options object, as `json.Unmarshal` treats it.
pub fn parse_options(body: &[u8]) -> Result<EcsTaskDefinitionOptions, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("EOF".to_string());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let obj = match value {
        Value::Null => return Ok(EcsTaskDefinitionOptions::default()),
        Value::Object(obj) => obj,
        other => return Err(mismatch("", &other, "types.EcsTaskDefinitionOptions")),
    };
    for name in BOOL_FIELDS {
        bool_field(&obj, name)?;
    }
    let proxy = match field(&obj, "proxy") {
        None | Some(Value::Null) => ProxyOpt::default(),
        Some(Value::Object(p)) => ProxyOpt {
            http_proxy: string_field(p, "httpProxy")?.unwrap_or_default(),
            no_proxy: string_field(p, "noProxy")?.unwrap_or_default(),
            ca: string_field(p, "ca")?.unwrap_or_default(),
            user: string_field(p, "user")?.unwrap_or_default(),
            password: string_field(p, "password")?.unwrap_or_default(),
        },
        Some(v) => return Err(mismatch("proxy", v, "common.DefenderProxyOpt")),
    };
    Ok(EcsTaskDefinitionOptions {
        console_addr: string_field(&obj, "consoleAddr")?,
        task_name: string_field(&obj, "taskName")?,
        cluster: string_field(&obj, "cluster")?,
        image: string_field(&obj, "image")?,
        docker_socket_path: string_field(&obj, "dockerSocketPath")?,
        proxy,
        cpu_limit: int_field(&obj, "cpuLimit")?,
        memory_limit: int_field(&obj, "memoryLimit")?,
        host_custom_compliance_enabled: bool_field(&obj, "hostCustomComplianceEnabled")?.unwrap_or(false),
    })
}

/// The image name for a Console version: the tag follows the version (`defender_34_03_138`).
pub fn build_image_name(registry_token: &str, version: &str) -> String {
    format!("registry-auth.twistlock.com/tw_{registry_token}/twistlock/defender:defender_{}", version.replace('.', "_"))
}

/// Builds the task definition. Everything in it derives from the arguments, so the same inputs
/// give byte-identical output (the operator digests it to decide whether to re-register).
///
/// [inferred] `privileged` is always true: the Console-derived copies [S9] all have it although the
/// UI sends `privileged:false` [S7]; the capability list of the Kubernetes generator was never seen
/// for ECS. [inferred] `memoryLimit`/`cpuLimit` set the container's and task's memory / the
/// container's cpu when given.
pub fn build_task_definition(
    opts: &EcsTaskDefinitionOptions,
    default_image: &str,
    install_bundle: &str,
    ws_address: &str,
) -> Value {
    let family = opts.task_name.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_FAMILY);
    let image = opts.image.as_deref().filter(|s| !s.is_empty()).unwrap_or(default_image);
    let memory = opts.memory_limit.filter(|m| *m > 0).unwrap_or(DEFAULT_MEMORY_MIB);
    let docker_socket = opts.docker_socket_path.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_DOCKER_SOCKET);
    let env = |name: &str, value: &str| json!({"name": name, "value": value});
    let mut container = json!({
        "name": CONTAINER_NAME,
        "image": image,
        "memory": memory,
        "essential": true,
        "readonlyRootFilesystem": true,
        "privileged": true,
        "volumesFrom": [],
        "environment": [
            env("DEFENDER_LISTENER_TYPE", "none"),
            env("DEFENDER_TYPE", "ecs"),
            env("DEFENDER_CLUSTER", opts.cluster.as_deref().unwrap_or("")),
            env("DOCKER_CLIENT_ADDRESS", docker_socket),
            env("LOG_PROD", "true"),
            env("WS_ADDRESS", ws_address),
            env("INSTALL_BUNDLE", install_bundle),
            env("HOST_CUSTOM_COMPLIANCE_ENABLED", if opts.host_custom_compliance_enabled { "true" } else { "false" }),
        ],
        "mountPoints": [
            {"containerPath": "/var/lib/twistlock", "sourceVolume": "data-folder"},
            {"containerPath": "/var/run", "sourceVolume": "docker-sock-folder"},
            {"readOnly": true, "containerPath": "/etc/passwd", "sourceVolume": "passwd"},
            {"containerPath": "/run", "sourceVolume": "iptables-lock-folder"},
            {"containerPath": "/dev/log", "sourceVolume": "syslog-socket"},
        ],
    });
    if let Some(cpu) = opts.cpu_limit.filter(|c| *c > 0) {
        container["cpu"] = json!(cpu);
    }
    json!({
        "family": family,
        "requiresCompatibilities": ["EC2"],
        "networkMode": "host",
        "pidMode": "host",
        "memory": memory.to_string(),
        "containerDefinitions": [container],
        "volumes": [
            {"name": "data-folder", "host": {"sourcePath": "/var/lib/twistlock/"}},
            {"name": "docker-sock-folder", "host": {"sourcePath": "/var/run"}},
            {"name": "syslog-socket", "host": {"sourcePath": "/dev/log"}},
            {"name": "passwd", "host": {"sourcePath": "/etc/passwd"}},
            {"name": "iptables-lock-folder", "host": {"sourcePath": "/run"}},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(td: &Value, name: &str) -> String {
        td["containerDefinitions"][0]["environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_string())
            .unwrap()
    }

    #[test]
    fn parses_the_ui_body_case_insensitively() {
        let body = br#"{"consoleAddr":"us-east1.cloud.twistlock.com","namespace":"twistlock","orchestration":"ecs","selinux":false,
            "cri":true,"privileged":false,"serviceAccounts":true,"istio":false,"collectPodLabels":false,
            "proxy":null,"dockerSocketPath":null,"gkeAutopilot":false,"somethingNew":{"x":1}}"#;
        let o = parse_options(body).unwrap();
        assert_eq!(o.console_addr.as_deref(), Some("us-east1.cloud.twistlock.com"));
        assert_eq!(o.docker_socket_path, None);
        let o = parse_options(br#"{"TASKNAME":"t","ConsoleAddr":"c","CLUSTER":"k","memorylimit":1024}"#).unwrap();
        assert_eq!(
            (o.task_name.as_deref(), o.console_addr.as_deref(), o.cluster.as_deref(), o.memory_limit),
            (Some("t"), Some("c"), Some("k"), Some(1024))
        );
        assert_eq!(parse_options(b"null").unwrap(), EcsTaskDefinitionOptions::default());
    }

    #[test]
    fn rejects_bad_bodies_like_go() {
        assert_eq!(parse_options(b"").unwrap_err(), "EOF");
        assert!(parse_options(b"{").is_err());
        assert!(parse_options(b"[]").is_err());
        let e = parse_options(br#"{"taskName":5}"#).unwrap_err();
        assert!(e.contains("cannot unmarshal number") && e.contains("taskName"), "{e}");
        assert!(parse_options(br#"{"privileged":"yes"}"#).is_err());
        assert!(parse_options(br#"{"proxy":"x"}"#).is_err());
    }

    #[test]
    fn builds_the_reference_shape() {
        let o = EcsTaskDefinitionOptions { cluster: Some("prod".into()), ..Default::default() };
        let td = build_task_definition(&o, "img:defender_34_03_138", "QlVORExF", "wss://10.0.0.1:8084");
        assert_eq!(td["family"], DEFAULT_FAMILY);
        assert_eq!(
            (&td["networkMode"], &td["pidMode"], &td["memory"]),
            (&json!("host"), &json!("host"), &json!("512"))
        );
        let c = &td["containerDefinitions"][0];
        assert_eq!(
            (&c["name"], &c["image"], &c["privileged"]),
            (&json!(CONTAINER_NAME), &json!("img:defender_34_03_138"), &json!(true))
        );
        assert_eq!(env_of(&td, "DEFENDER_CLUSTER"), "prod");
        assert_eq!(env_of(&td, "WS_ADDRESS"), "wss://10.0.0.1:8084");
        assert_eq!(env_of(&td, "INSTALL_BUNDLE"), "QlVORExF");
        assert_eq!(env_of(&td, "DEFENDER_TYPE"), "ecs");
        assert_eq!(c["mountPoints"].as_array().unwrap().len(), 5);
        assert_eq!(td["volumes"].as_array().unwrap().len(), 5);
        assert!(c.get("cpu").is_none());
        let o = EcsTaskDefinitionOptions {
            task_name: Some("mine".into()),
            image: Some("my/img:1".into()),
            cpu_limit: Some(256),
            ..o
        };
        let td = build_task_definition(&o, "img", "b", "w");
        assert_eq!((&td["family"], &td["containerDefinitions"][0]["image"]), (&json!("mine"), &json!("my/img:1")));
        assert_eq!(td["containerDefinitions"][0]["cpu"], 256);
    }

    #[test]
    fn image_tag_follows_the_version() {
        assert_eq!(
            build_image_name("abc", "34.03.138"),
            "registry-auth.twistlock.com/tw_abc/twistlock/defender:defender_34_03_138"
        );
    }
}
