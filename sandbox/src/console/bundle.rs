//! (pure) The `INSTALL_BUNDLE` a Console issues and later recognises, and the HMAC that signs it.
//!
//! The real bundle is base64 of JSON carrying the Defender's certificates in `secrets`
//! (reference §2). Ours carries a per-Console id and an HMAC of (console id, project, version)
//! under the Console's secret instead: only the issuing Console can produce or verify it, and it
//! is deterministic for the same inputs, so the generated task definition's digest only changes
//! when the Console version (or project) does.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Keys inside the bundle's `secrets` map (ours, opaque to everyone else).
const SECRET_CONSOLE_ID: &str = "console-id";
const SECRET_PROJECT: &str = "project";
const SECRET_VERSION: &str = "version";
const SECRET_SIGNATURE: &str = "signature";
/// A per-generation key ([`with_fresh_key`]), not covered by the signature.
const SECRET_FRESH_KEY: &str = "defender-key";

/// HMAC-SHA256 (RFC 2104), written out to avoid one more dependency for twenty lines.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().into()
}

/// What a verified bundle says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleClaims {
    pub project: String,
    /// The Console version that issued it; a Defender started from it reports this version.
    pub version: String,
}

/// The global proxy a bundle carries (`globalProxyOpt`, from the generator's `proxy` option).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyOpt {
    pub http_proxy: String,
    pub no_proxy: String,
    pub ca: String,
    pub user: String,
    pub password: String,
}

fn signature(secret: &[u8], console_id: &str, project: &str, version: &str) -> String {
    // Fields are joined with NUL, which none of them can contain, so the message is unambiguous.
    hex::encode(hmac_sha256(secret, format!("{console_id}\0{project}\0{version}").as_bytes()))
}

/// Builds the base64 install bundle for Defenders of `project` at Console `version`.
pub fn build_install_bundle(secret: &[u8], console_id: &str, project: &str, version: &str, proxy: &ProxyOpt) -> String {
    // The real Console stores the proxy password encrypted; a keyed digest keeps it out of the
    // bundle while staying deterministic.
    let encrypted = if proxy.password.is_empty() {
        String::new()
    } else {
        hex::encode(hmac_sha256(secret, proxy.password.as_bytes()))
    };
    let doc = json!({
        "secrets": {
            SECRET_CONSOLE_ID: console_id,
            SECRET_PROJECT: project,
            SECRET_VERSION: version,
            SECRET_SIGNATURE: signature(secret, console_id, project, version),
        },
        "globalProxyOpt": {
            "httpProxy": proxy.http_proxy,
            "noProxy": proxy.no_proxy,
            "ca": proxy.ca,
            "user": proxy.user,
            "password": {"encrypted": encrypted},
        },
        "microsegCompatible": false,
    });
    STANDARD.encode(doc.to_string())
}

/// The bundle with a fresh per-Defender key added to `secrets` (outside the signed fields, so it
/// still verifies): what a Console that issues new certificates on every generation returns.
pub fn with_fresh_key(bundle: &str, key: &str) -> String {
    let Some(mut doc) = STANDARD.decode(bundle.trim()).ok().and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
    else {
        return bundle.to_string();
    };
    doc["secrets"][SECRET_FRESH_KEY] = json!(key);
    STANDARD.encode(doc.to_string())
}

/// Returns the claims if `bundle` was issued by the Console with this id and secret.
pub fn verify_install_bundle(secret: &[u8], console_id: &str, bundle: &str) -> Option<BundleClaims> {
    let raw = STANDARD.decode(bundle.trim()).ok()?;
    let doc: Value = serde_json::from_slice(&raw).ok()?;
    let secrets = doc.get("secrets")?;
    let field = |k: &str| secrets.get(k).and_then(Value::as_str);
    if field(SECRET_CONSOLE_ID)? != console_id {
        return None;
    }
    let (project, version) = (field(SECRET_PROJECT)?, field(SECRET_VERSION)?);
    (field(SECRET_SIGNATURE)? == signature(secret, console_id, project, version))
        .then(|| BundleClaims { project: project.to_string(), version: version.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn hmac_hashes_long_keys_first() {
        // RFC 4231 test case 6: a 131-byte key.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn bundle_round_trips_and_is_deterministic() {
        let proxy = ProxyOpt::default();
        let a = build_install_bundle(b"s1", "c1", "Central Console", "34.03.138", &proxy);
        assert_eq!(a, build_install_bundle(b"s1", "c1", "Central Console", "34.03.138", &proxy));
        let claims = verify_install_bundle(b"s1", "c1", &a).unwrap();
        assert_eq!(claims, BundleClaims { project: "Central Console".into(), version: "34.03.138".into() });
        assert_ne!(a, build_install_bundle(b"s1", "c1", "Central Console", "34.04.100", &proxy));
    }

    #[test]
    fn foreign_or_tampered_bundles_are_rejected() {
        let a = build_install_bundle(b"s1", "c1", "p", "1.0", &ProxyOpt::default());
        assert!(verify_install_bundle(b"s2", "c1", &a).is_none(), "other secret");
        assert!(verify_install_bundle(b"s1", "c2", &a).is_none(), "other console id");
        let mut doc: Value = serde_json::from_slice(&STANDARD.decode(&a).unwrap()).unwrap();
        doc["secrets"]["version"] = json!("9.9");
        assert!(verify_install_bundle(b"s1", "c1", &STANDARD.encode(doc.to_string())).is_none(), "tampered");
        assert!(verify_install_bundle(b"s1", "c1", "not base64!").is_none());
        assert!(verify_install_bundle(b"s1", "c1", "").is_none());
    }

    #[test]
    fn proxy_password_is_not_in_the_clear() {
        let proxy = ProxyOpt { http_proxy: "http://p:3128".into(), password: "hunter2".into(), ..Default::default() };
        let raw = STANDARD.decode(build_install_bundle(b"s", "c", "p", "1", &proxy)).unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains("http://p:3128"));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn a_fresh_key_changes_the_bundle_but_not_its_claims() {
        let a = build_install_bundle(b"s1", "c1", "p", "1.0", &ProxyOpt::default());
        let b = with_fresh_key(&a, "k1");
        assert_ne!(a, b);
        assert_ne!(b, with_fresh_key(&a, "k2"));
        assert_eq!(verify_install_bundle(b"s1", "c1", &b), verify_install_bundle(b"s1", "c1", &a));
    }
}
