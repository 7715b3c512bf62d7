//! (pure) Credentials and bearer tokens: what `/authenticate`, `/authenticate/renew` and the
//! `Authorization` header of every other call are checked against.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde_json::json;

use super::bundle::hmac_sha256;

/// How a request authenticated itself (the request log keeps this, never the secret itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    None,
    Bearer,
    Basic,
    /// A header that is neither `Bearer` nor `Basic`.
    Other,
}

/// The parsed `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
    /// Present but not understood (unknown scheme, bad base64, no colon).
    Malformed,
}

impl Credentials {
    pub fn kind(&self) -> AuthKind {
        match self {
            Credentials::None => AuthKind::None,
            Credentials::Bearer(_) => AuthKind::Bearer,
            Credentials::Basic { .. } => AuthKind::Basic,
            Credentials::Malformed => AuthKind::Other,
        }
    }
}

/// Parses an `Authorization` header value; the scheme is case-insensitive (RFC 9110).
pub fn parse_authorization(header: Option<&str>) -> Credentials {
    let Some(value) = header.map(str::trim) else { return Credentials::None };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Credentials::Bearer(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).ok().and_then(|b| String::from_utf8(b).ok());
        if let Some((username, password)) = decoded.as_deref().and_then(|s| s.split_once(':')) {
            return Credentials::Basic { username: username.to_string(), password: password.to_string() };
        }
    }
    Credentials::Malformed
}

/// Why a bearer token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    Unknown,
    Expired,
}

impl TokenError {
    /// The `err` text of the 401. [inferred] The real texts were not seen (reference §4).
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Unknown => "invalid token",
            TokenError::Expired => "token expired",
        }
    }
}

/// The tokens this Console issued, each with its expiry on the monotonic clock.
#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: HashMap<String, Instant>,
}

impl TokenStore {
    /// Issues a JWT-shaped token (the real ones start `eyJ`), signed with the Console secret and
    /// made unique by a random id, valid for `lifetime` from `now`.
    pub fn issue(&mut self, secret: &[u8], username: &str, now: Instant, lifetime: Duration) -> String {
        // Forget long-expired tokens so a long benchmark does not grow the map without bound;
        // recently expired ones stay so a client still gets "token expired" rather than "invalid".
        self.tokens.retain(|_, exp| now.saturating_duration_since(*exp) < Duration::from_secs(600));
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
        let exp = chrono::Utc::now() + lifetime;
        let payload = json!({
            "username": username,
            "role": "admin",
            "exp": exp.timestamp(),
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(secret, format!("{header}.{payload}").as_bytes()));
        let token = format!("{header}.{payload}.{sig}");
        self.tokens.insert(token.clone(), now + lifetime);
        token
    }

    pub fn check(&self, token: &str, now: Instant) -> Result<(), TokenError> {
        match self.tokens.get(token) {
            None => Err(TokenError::Unknown),
            Some(exp) if now >= *exp => Err(TokenError::Expired),
            Some(_) => Ok(()),
        }
    }

    /// Every token issued and not yet forgotten (those expired for more than 10 minutes are).
    pub fn issued(&self) -> Vec<String> {
        self.tokens.keys().cloned().collect()
    }

    /// Makes every issued token expired right now (the "expired token mid-session" fault).
    pub fn expire_all(&mut self, now: Instant) {
        self.tokens.values_mut().for_each(|exp| *exp = (*exp).min(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authorization_headers() {
        assert_eq!(parse_authorization(None), Credentials::None);
        assert_eq!(parse_authorization(Some("Bearer abc")), Credentials::Bearer("abc".into()));
        assert_eq!(parse_authorization(Some("bearer  abc ")), Credentials::Bearer("abc".into()));
        let basic = format!("Basic {}", STANDARD.encode("admin:pa:ss"));
        assert_eq!(
            parse_authorization(Some(&basic)),
            Credentials::Basic { username: "admin".into(), password: "pa:ss".into() }
        );
        assert_eq!(parse_authorization(Some("Basic !!!")), Credentials::Malformed);
        assert_eq!(parse_authorization(Some("Bearer")), Credentials::Malformed);
        assert_eq!(parse_authorization(Some("Digest x")), Credentials::Malformed);
    }

    #[test]
    fn tokens_expire_and_can_be_expired_early() {
        let mut store = TokenStore::default();
        let t0 = Instant::now();
        let a = store.issue(b"s", "admin", t0, Duration::from_secs(10));
        let b = store.issue(b"s", "admin", t0, Duration::from_secs(10));
        assert_ne!(a, b, "each token is unique");
        assert!(a.starts_with("eyJ"));
        assert_eq!(store.check(&a, t0 + Duration::from_secs(9)), Ok(()));
        assert_eq!(store.check(&a, t0 + Duration::from_secs(10)), Err(TokenError::Expired));
        assert_eq!(store.check("nope", t0), Err(TokenError::Unknown));
        store.expire_all(t0 + Duration::from_secs(1));
        assert_eq!(store.check(&b, t0 + Duration::from_secs(1)), Err(TokenError::Expired));
        let c = store.issue(b"s", "admin", t0 + Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(store.check(&c, t0 + Duration::from_secs(2)), Ok(()), "new tokens work after expire_all");
    }
}
