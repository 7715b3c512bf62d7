//! SigV4 verification, as AWS does it before anything else: a request signed with a key the gate
//! does not know, or whose signature does not match its method, path, query, signed headers and
//! body (a body changed after signing, for instance), is refused with the service's own error.
//! moto checks nothing of this.
//!
//! Known keys: [`super::GateConfig::credentials`] (the sandbox's own by default), keys added at run
//! time (`POST /credentials` on the control API, [`super::Gate::add_credentials`]), and the
//! temporary keys STS hands out through the gate (AssumeRole and friends), learnt from its answers.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::protocol::{self, Protocol};

/// Why a request is refused: `(status, code, message)`.
pub(crate) type Refusal = (u16, &'static str, &'static str);

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const UNKNOWN_KEY: &str = "The security token included in the request is invalid.";
const MISSING: &str = "Missing Authentication Token";

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq)]
pub(crate) struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

pub(crate) fn parse_authorization(value: &str) -> Option<Authorization> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256")?.trim();
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        fields.insert(k.trim(), v.trim());
    }
    let scope: Vec<&str> = fields.get("Credential")?.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return None;
    }
    Some(Authorization {
        access_key: scope[0].to_string(),
        date: scope[1].to_string(),
        region: scope[2].to_string(),
        service: scope[3].to_string(),
        signed_headers: fields.get("SignedHeaders")?.split(';').map(str::to_string).collect(),
        signature: fields.get("Signature")?.to_string(),
    })
}

/// RFC 3986 encoding as SigV4 wants it (unreserved characters kept).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn canonical_query(query: Option<&str>) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else { return String::new() };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k), false), uri_encode(&percent_decode(v), false))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK { Sha256::digest(key).to_vec() } else { key.to_vec() };
    k.resize(BLOCK, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(data).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().to_vec()
}

/// The signature the request should carry, signed with `secret`.
pub(crate) fn expected_signature(
    auth: &Authorization,
    secret: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<String> {
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok())?;
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical_path = if path.is_empty() { "/".to_string() } else { uri_encode(&percent_decode(path), true) };
    let canonical_request = format!(
        "{method}\n{canonical_path}\n{}\n{canonical_headers}\n{}\n{}",
        canonical_query(query),
        auth.signed_headers.join(";"),
        hex::encode(Sha256::digest(body)),
    );
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    Some(hex::encode(hmac(&key, to_sign.as_bytes())))
}

/// The service's error for a refused signature.
fn refusal(service: &str, what: Problem) -> Refusal {
    let json = protocol::protocol_of(service) == Protocol::Json || service == "secretsmanager";
    match (what, json) {
        (Problem::Missing, true) => (403, "MissingAuthenticationTokenException", MISSING),
        (Problem::Missing, false) => (403, "MissingAuthenticationToken", MISSING),
        (Problem::UnknownKey, true) => (403, "UnrecognizedClientException", UNKNOWN_KEY),
        (Problem::UnknownKey, false) if service == "ec2" => {
            (401, "AuthFailure", "AWS was not able to validate the provided access credentials")
        }
        (Problem::UnknownKey, false) => (403, "InvalidClientTokenId", UNKNOWN_KEY),
        (Problem::Mismatch, true) => (403, "InvalidSignatureException", MISMATCH),
        (Problem::Mismatch, false) => (403, "SignatureDoesNotMatch", MISMATCH),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Problem {
    Missing,
    UnknownKey,
    Mismatch,
}

/// Checks one request; `None` means it is signed right with a known key.
pub(crate) fn check(
    keys: &HashMap<String, String>,
    service: &str,
    method: &str,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<Refusal> {
    let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Some(refusal(service, Problem::Missing));
    };
    let Some(auth) = parse_authorization(value) else { return Some(refusal(service, Problem::Missing)) };
    let Some(secret) = keys.get(&auth.access_key) else { return Some(refusal(service, Problem::UnknownKey)) };
    let expected = expected_signature(&auth, secret, method, uri.path(), uri.query(), headers, body);
    match expected {
        Some(sig) if sig == auth.signature => None,
        _ => Some(refusal(service, Problem::Mismatch)),
    }
}

/// Temporary credentials in an STS answer (`<AccessKeyId>`, `<SecretAccessKey>`), to accept later.
pub(crate) fn learn_from_sts(body: &[u8]) -> Option<(String, String)> {
    let doc = super::xml::parse(std::str::from_utf8(body).ok()?).ok()?;
    fn find<'a>(n: &'a super::xml::Node, name: &str) -> Option<&'a super::xml::Node> {
        if n.name == name {
            return Some(n);
        }
        n.children.iter().find_map(|c| find(c, name))
    }
    let creds = find(&doc, "Credentials")?;
    Some((creds.text_of("AccessKeyId")?.to_string(), creds.text_of("SecretAccessKey")?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of AWS's SigV4 documentation (IAM ListUsers, GET with a query).
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[test]
    fn matches_aws_documented_example() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/x-www-form-urlencoded; charset=utf-8".parse().unwrap());
        headers.insert("host", "iam.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let auth = Authorization {
            access_key: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "iam".into(),
            signed_headers: vec!["content-type".into(), "host".into(), "x-amz-date".into()],
            signature: String::new(),
        };
        let sig =
            expected_signature(&auth, SECRET, "GET", "/", Some("Action=ListUsers&Version=2010-05-08"), &headers, b"")
                .unwrap();
        assert_eq!(sig, "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
    }

    #[test]
    fn parses_the_authorization_header() {
        let a = parse_authorization("AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/ecs/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc").unwrap();
        assert_eq!((a.access_key.as_str(), a.region.as_str(), a.service.as_str()), ("AKID", "eu-west-1", "ecs"));
        assert_eq!(a.signed_headers, ["host", "x-amz-date"]);
        assert!(parse_authorization("Bearer x").is_none());
    }

    #[test]
    fn refusals_per_protocol() {
        assert_eq!(refusal("ecs", Problem::Mismatch).1, "InvalidSignatureException");
        assert_eq!(refusal("autoscaling", Problem::Mismatch).1, "SignatureDoesNotMatch");
        assert_eq!(refusal("ec2", Problem::Mismatch).1, "SignatureDoesNotMatch");
        assert_eq!(refusal("ssm", Problem::UnknownKey).1, "UnrecognizedClientException");
    }

    #[test]
    fn learns_sts_credentials() {
        let body = br#"<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>s3cr3t</SecretAccessKey></Credentials></AssumeRoleResult></AssumeRoleResponse>"#;
        assert_eq!(learn_from_sts(body), Some(("ASIA1".into(), "s3cr3t".into())));
    }
}
