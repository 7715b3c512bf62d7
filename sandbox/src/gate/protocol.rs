//! AWS wire protocols as the gate sees them: which service and operation a request is, its key
//! parameters, and errors in each protocol's own format (so the AWS SDK parses them into the right
//! error variants). Pure functions; no I/O.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use http_body_util::Full;

/// How a service encodes requests and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson1_1 (ECS, SSM, Secrets Manager): operation in `X-Amz-Target`, errors `{"__type": .., "message": ..}`.
    Json,
    /// awsQuery (Auto Scaling, IAM, STS): `Action=` in a form body, errors `<ErrorResponse>`.
    Query,
    /// ec2Query: like awsQuery, but errors are `<Response><Errors><Error>`.
    Ec2Query,
    /// Not an AWS API call (for example moto's own `/moto-api/`).
    Other,
}

/// What the gate knows about one incoming request.
#[derive(Clone, Debug, PartialEq)]
pub struct Identified {
    /// Signing name of the service: `ecs`, `ssm`, `autoscaling`, `ec2`, `iam`, `sts` (or `moto`, `unknown`).
    pub service: String,
    pub operation: String,
    pub protocol: Protocol,
    /// From the SigV4 credential scope; `us-east-1` when unsigned.
    pub region: String,
    /// The parsed JSON body (JSON protocols).
    pub json: Option<serde_json::Value>,
    /// Form parameters (query protocols), in order.
    pub form: Vec<(String, String)>,
}

impl Identified {
    /// First value of a form parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A string field of the JSON body.
    pub fn json_str(&self, name: &str) -> Option<&str> {
        self.json.as_ref()?.get(name)?.as_str()
    }
}

/// Prefix of `X-Amz-Target` -> service signing name.
const JSON_TARGETS: &[(&str, &str)] = &[
    ("AmazonEC2ContainerServiceV20141113", "ecs"),
    ("AmazonSSM", "ssm"),
    ("AWSSecurityTokenServiceV20110615", "sts"),
    ("secretsmanager", "secretsmanager"),
];

/// Identifies service, operation and region of a request.
pub fn identify(headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Identified {
    let (scope_region, scope_service) = credential_scope(headers).unwrap_or_default();
    let region = if scope_region.is_empty() { "us-east-1".to_string() } else { scope_region };
    if uri.path().starts_with("/moto-api") {
        return Identified {
            service: "moto".into(),
            operation: uri.path().to_string(),
            protocol: Protocol::Other,
            region,
            json: None,
            form: vec![],
        };
    }
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (prefix, op) = target.split_once('.').unwrap_or(("", target));
        let service = JSON_TARGETS
            .iter()
            .find(|(p, _)| *p == prefix)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| if scope_service.is_empty() { "unknown".into() } else { scope_service.clone() });
        let json = serde_json::from_slice(body).ok();
        return Identified { service, operation: op.to_string(), protocol: Protocol::Json, region, json, form: vec![] };
    }
    let mut form: Vec<(String, String)> = uri.query().map(parse_form).unwrap_or_default();
    form.extend(parse_form(&String::from_utf8_lossy(body)));
    let operation =
        form.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.clone()).unwrap_or_else(|| "unknown".into());
    let service = if scope_service.is_empty() { "unknown".to_string() } else { scope_service };
    let protocol = match service.as_str() {
        "ec2" => Protocol::Ec2Query,
        "ecs" | "ssm" | "secretsmanager" => Protocol::Json,
        "unknown" if operation == "unknown" => Protocol::Other,
        _ => Protocol::Query,
    };
    Identified { service, operation, protocol, region, json: None, form }
}

fn parse_form(s: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(s).unwrap_or_default()
}

/// `(region, service)` from `Authorization: AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ecs/aws4_request, ...`.
pub fn credential_scope(headers: &HeaderMap) -> Option<(String, String)> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    let parts: Vec<&str> = cred.split('/').collect();
    (parts.len() >= 5).then(|| (parts[2].to_string(), parts[3].to_string()))
}

/// JSON fields recorded in the call log (scalars as-is, arrays joined with `,`).
const JSON_KEYS: &[&str] = &[
    "cluster",
    "clusters",
    "clusterName",
    "service",
    "services",
    "serviceName",
    "taskDefinition",
    "family",
    "containerInstance",
    "containerInstances",
    "tasks",
    "task",
    "desiredCount",
    "schedulingStrategy",
    "forceNewDeployment",
    "force",
    "clientToken",
    "status",
    "Name",
    "Names",
    // Secrets Manager names the secret (name or ARN) in every call after the create.
    "SecretId",
];

/// Query parameters recorded in the call log; `X.member.N` lists are joined with `,` under `X`.
const QUERY_KEYS: &[&str] = &[
    "AutoScalingGroupName",
    "AutoScalingGroupNames",
    "LaunchConfigurationName",
    "LaunchConfigurationNames",
    "LaunchTemplateName",
    "LaunchTemplateId",
    "LaunchTemplate.LaunchTemplateName",
    "LaunchTemplate.LaunchTemplateId",
    "LaunchTemplate.Version",
    "MinSize",
    "MaxSize",
    "DesiredCapacity",
    "ForceDelete",
    "InstanceId",
    "InstanceIds",
    "RoleName",
    "InstanceProfileName",
    "GroupName",
    "GroupId",
    "RoleArn",
];

/// The key parameters of a call, for the log.
pub fn key_params(id: &Identified) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(obj) = id.json.as_ref().and_then(|j| j.as_object()) {
        for key in JSON_KEYS {
            let Some(v) = obj.get(*key) else { continue };
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join(","),
                serde_json::Value::Null => continue,
                other => value_text(other),
            };
            out.insert(key.to_string(), s);
        }
    }
    for (k, v) in &id.form {
        // `AutoScalingGroupNames.member.2` and EC2's `InstanceId.2` both list under their base name.
        let base = k.split(".member.").next().unwrap_or(k);
        let base = match base.rsplit_once('.') {
            Some((b, n)) if n.chars().all(|c| c.is_ascii_digit()) => b,
            _ => base,
        };
        // The public-IP choice sits inside a numbered network interface of the launch data.
        if base.ends_with(".AssociatePublicIpAddress") {
            out.insert("AssociatePublicIpAddress".to_string(), v.clone());
            continue;
        }
        if QUERY_KEYS.contains(&base) {
            out.entry(base.to_string())
                .and_modify(|e: &mut String| {
                    e.push(',');
                    e.push_str(v)
                })
                .or_insert_with(|| v.clone());
        }
    }
    out
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether an operation changes state (by AWS's naming convention: reads are Describe/List/Get).
pub fn is_mutating(operation: &str) -> bool {
    const READS: &[&str] = &["Describe", "List", "Get", "BatchGet", "Search", "Lookup", "Query", "Scan", "Check"];
    !(READS.iter().any(|p| operation.starts_with(p)) || operation == "unknown" || operation.starts_with('/'))
}

/// The error code of a response, if it is an error: `x-amzn-ErrorType`, JSON `__type`, or XML `<Code>`.
pub fn error_code(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if status < 300 {
        return None;
    }
    let clean = |s: &str| {
        let s = s.split(':').next().unwrap_or(s);
        s.rsplit('#').next().unwrap_or(s).to_string()
    };
    if let Some(t) = headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok()) {
        return Some(clean(t));
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed).ok()?;
        return v.get("__type").or_else(|| v.get("code")).and_then(|t| t.as_str()).map(clean);
    }
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(text[start..end].to_string())
}

/// An AWS error in the protocol of `service`.
pub fn error_response(service: &str, status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut builder = Response::builder().status(status_code);
    let body = match protocol_of(service) {
        Protocol::Json | Protocol::Other => {
            builder = builder
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amzn-requestid", &request_id)
                .header("x-amzn-errortype", HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("Unknown")));
            serde_json::json!({ "__type": code, "message": message }).to_string()
        }
        Protocol::Query => {
            builder = builder.header("content-type", "text/xml");
            let kind = if status >= 500 { "Receiver" } else { "Sender" };
            format!(
                "<ErrorResponse xmlns=\"{ns}\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                ns = query_namespace(service),
                code = xml_escape(code),
                msg = xml_escape(message),
            )
        }
        Protocol::Ec2Query => {
            builder = builder.header("content-type", "text/xml;charset=UTF-8");
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
                code = xml_escape(code),
                msg = xml_escape(message),
            )
        }
    };
    builder.body(Full::new(Bytes::from(body))).expect("static response parts are valid")
}

/// The protocol a service speaks.
pub fn protocol_of(service: &str) -> Protocol {
    match service {
        "ecs" | "ssm" | "secretsmanager" => Protocol::Json,
        "ec2" => Protocol::Ec2Query,
        "autoscaling" | "iam" | "sts" => Protocol::Query,
        _ => Protocol::Other,
    }
}

fn query_namespace(service: &str) -> &'static str {
    match service {
        "autoscaling" => "http://autoscaling.amazonaws.com/doc/2011-01-01/",
        "iam" => "https://iam.amazonaws.com/doc/2010-05-08/",
        "sts" => "https://sts.amazonaws.com/doc/2011-06-15/",
        _ => "",
    }
}

/// The throttling error each service sends when a request-rate limit is exceeded: `(status, code, message)`.
pub fn throttle_error(service: &str) -> (u16, &'static str, &'static str) {
    match service {
        "ec2" => (503, "RequestLimitExceeded", "Request limit exceeded."),
        "ecs" | "ssm" | "secretsmanager" => (400, "ThrottlingException", "Rate exceeded"),
        _ => (400, "Throttling", "Rate exceeded"),
    }
}

/// The error each service sends with a given 5xx (or other) status: `(code, message)`.
pub fn status_error(service: &str, status: u16) -> (&'static str, &'static str) {
    match (protocol_of(service), status) {
        (Protocol::Ec2Query, 503) => ("Unavailable", "The server is overloaded and can't handle the request."),
        (Protocol::Ec2Query, s) if s >= 500 => ("InternalError", "An internal error has occurred."),
        (Protocol::Json, 503) => ("ServiceUnavailableException", "Service Unavailable"),
        (_, 503) => ("ServiceUnavailable", "Service is unable to handle request."),
        (Protocol::Json, s) if s >= 500 && service == "ecs" => {
            ("ServerException", "These errors are usually caused by a server issue.")
        }
        (Protocol::Json, s) if s >= 500 => ("InternalServerError", "An error occurred on the server side."),
        (_, s) if s >= 500 => ("InternalFailure", "The request processing has failed because of an unknown error."),
        _ => ("BadRequest", "The request was rejected."),
    }
}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    const AUTH_ECS: &str =
        "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/ecs/aws4_request, SignedHeaders=host, Signature=abc";
    const AUTH_ASG: &str = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/autoscaling/aws4_request, SignedHeaders=host, Signature=abc";

    #[test]
    fn identifies_json_protocol_by_target() {
        let h = headers(&[
            ("authorization", AUTH_ECS),
            ("x-amz-target", "AmazonEC2ContainerServiceV20141113.CreateService"),
        ]);
        let id = identify(&h, &"/".parse().unwrap(), br#"{"cluster":"c","serviceName":"s","desiredCount":2}"#);
        assert_eq!(
            (id.service.as_str(), id.operation.as_str(), id.region.as_str()),
            ("ecs", "CreateService", "eu-west-1")
        );
        assert_eq!(id.protocol, Protocol::Json);
        let p = key_params(&id);
        assert_eq!(p["cluster"], "c");
        assert_eq!(p["serviceName"], "s");
        assert_eq!(p["desiredCount"], "2");
        assert!(is_mutating(&id.operation));
    }

    #[test]
    fn identifies_ssm_without_signature() {
        let h = headers(&[("x-amz-target", "AmazonSSM.GetParameter")]);
        let id = identify(&h, &"/".parse().unwrap(), br#"{"Name":"/aws/x"}"#);
        assert_eq!(
            (id.service.as_str(), id.operation.as_str(), id.region.as_str()),
            ("ssm", "GetParameter", "us-east-1")
        );
        assert!(!is_mutating("GetParameter"));
    }

    #[test]
    fn identifies_query_protocol_by_action_and_scope() {
        let h = headers(&[("authorization", AUTH_ASG)]);
        let body = b"Action=DescribeAutoScalingGroups&Version=2011-01-01&AutoScalingGroupNames.member.1=a&AutoScalingGroupNames.member.2=b";
        let id = identify(&h, &"/".parse().unwrap(), body);
        assert_eq!((id.service.as_str(), id.operation.as_str()), ("autoscaling", "DescribeAutoScalingGroups"));
        assert_eq!(id.protocol, Protocol::Query);
        assert_eq!(key_params(&id)["AutoScalingGroupNames"], "a,b");
        let h = headers(&[("authorization", &AUTH_ASG.replace("autoscaling", "ec2"))]);
        let id = identify(&h, &"/".parse().unwrap(), b"Action=TerminateInstances&InstanceId.1=i-1&InstanceId.2=i-2");
        assert_eq!(id.protocol, Protocol::Ec2Query);
        assert_eq!(key_params(&id)["InstanceId"], "i-1,i-2");
    }

    #[test]
    fn moto_api_is_not_an_aws_call() {
        let id = identify(&HeaderMap::new(), &"/moto-api/reset".parse().unwrap(), b"");
        assert_eq!(id.service, "moto");
        assert!(!is_mutating(&id.operation));
    }

    #[test]
    fn error_codes_are_read_back_from_every_format() {
        for service in ["ecs", "autoscaling", "ec2", "iam"] {
            let resp = error_response(service, 400, "SomeCode", "a <message> & more");
            let (parts, body) = resp.into_parts();
            let body = futures::executor::block_on(http_body_util::BodyExt::collect(body)).unwrap().to_bytes();
            assert_eq!(error_code(400, &parts.headers, &body).as_deref(), Some("SomeCode"), "{service}");
        }
        let h = headers(&[("x-amzn-errortype", "ClusterNotFoundException:http://internal.amazon.com/")]);
        assert_eq!(error_code(400, &h, b"").as_deref(), Some("ClusterNotFoundException"));
        assert_eq!(
            error_code(400, &HeaderMap::new(), br#"{"__type":"com.amazonaws.ecs#ServerException"}"#).as_deref(),
            Some("ServerException")
        );
        assert_eq!(error_code(200, &HeaderMap::new(), b"<Code>x</Code>"), None);
    }

    #[test]
    fn throttling_matches_each_service() {
        assert_eq!(throttle_error("ecs").1, "ThrottlingException");
        assert_eq!(throttle_error("autoscaling").1, "Throttling");
        assert_eq!(throttle_error("ec2"), (503, "RequestLimitExceeded", "Request limit exceeded."));
    }
}
