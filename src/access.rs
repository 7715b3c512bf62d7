//! (pure) The installer's rules on where the operator sends requests and whose AWS identity a
//! resource may use. Anyone allowed to edit an `EcsDefenderDeployment` chooses its URLs and role;
//! these rules keep that from sending Console credentials or signed AWS requests elsewhere, or
//! acting with the operator's own AWS identity from any namespace. Checked before any request.

use std::net::IpAddr;

use url::Url;

/// What the installer allows (operator flags / chart values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessRules {
    /// `http://` Console URLs (test worlds, the demo). Off: credentials only go over TLS.
    pub allow_insecure_console: bool,
    /// `spec.aws.endpointUrl` (emulators, private endpoints). Off: AWS's own endpoints only.
    pub allow_custom_aws_endpoints: bool,
    /// Namespaces whose resources may use the operator's own credentials (`*`: all).
    pub default_credentials_namespaces: Vec<String>,
    /// Role ARN patterns (`*` matches any run of characters) that resources elsewhere may assume
    /// with the operator's own credentials.
    pub allowed_role_arns: Vec<String>,
    /// Console credential Secrets without a `url`/`allowedUrls` key may be used for any Console
    /// URL (a migration aid; off by default).
    pub allow_unbound_console_credentials: bool,
}

/// A refusal: a fixed reason (status condition and Event) and a sentence saying what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message }
}

/// (pure) Problems of a URL that no rule may allow: user info, and addresses of the instance
/// metadata service or other link-local hosts (a request there could leak credentials to the
/// machine the operator runs on). `field` names it in the message.
pub fn url_problems(field: &str, raw: &str) -> Vec<String> {
    let Ok(url) = Url::parse(raw) else { return vec![format!("{field} {raw:?} is not a valid URL")] };
    let mut problems = vec![];
    if !url.username().is_empty() || url.password().is_some() {
        problems.push(format!("{field} must not contain user info (user:password@); credentials come from Secrets"));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Some(a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a))),
        _ => None,
    };
    if let Some(ip) = ip
        && is_link_local_or_metadata(ip)
    {
        problems.push(format!("{field} points at a link-local or instance metadata address ({ip}), which is refused"));
    }
    problems
}

fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => {
            // fe80::/10, and EC2's IPv6 metadata address fd00:ec2::254.
            (a.segments()[0] & 0xffc0) == 0xfe80 || a == "fd00:ec2::254".parse::<std::net::Ipv6Addr>().unwrap()
        }
    }
}

impl AccessRules {
    /// (pure) Whether the Console may be reached at `url` at all (before its Secret is read).
    pub fn check_console_url(&self, url: &str) -> Result<(), Refusal> {
        let scheme = Url::parse(url).map(|u| u.scheme().to_string()).unwrap_or_default();
        if scheme == "http" && !self.allow_insecure_console {
            return Err(refuse(
                "InsecureConsoleUrl",
                format!(
                    "defender.console.url {url} is plain http: the Console credentials would cross the network in clear text; use https (the operator's --allow-insecure-console flag permits http for test worlds)"
                ),
            ));
        }
        Ok(())
    }

    /// (pure) Whether the resource's `aws.endpointUrl` may be used.
    pub fn check_endpoint(&self, endpoint_url: Option<&str>) -> Result<(), Refusal> {
        match endpoint_url {
            Some(e) if !self.allow_custom_aws_endpoints => Err(refuse(
                "EndpointNotAllowed",
                format!(
                    "aws.endpointUrl {e} is not allowed: the operator signs requests with AWS credentials and sends them only to AWS's own endpoints unless its installer allows custom endpoints (--allow-custom-aws-endpoints)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// (pure) Whether a resource in `namespace` may act with the identity it asks for: its own
    /// credentials (a Secret) always; the operator's own credentials only in the installer's
    /// namespaces, or to assume a role the installer allows.
    pub fn check_identity(
        &self,
        namespace: &str,
        has_own_credentials: bool,
        role_arn: Option<&str>,
    ) -> Result<(), Refusal> {
        if has_own_credentials || self.default_credentials_namespaces.iter().any(|n| n == "*" || n == namespace) {
            return Ok(());
        }
        match role_arn {
            Some(arn) if self.allowed_role_arns.iter().any(|p| glob_match(p, arn)) => Ok(()),
            Some(arn) => Err(refuse(
                "CredentialsNotAllowed",
                format!(
                    "role {arn} is not in the operator's allowed roles (--allowed-role-arns), and namespace {namespace} may not use the operator's own AWS credentials; set aws.credentialsSecretRef to a Secret with this team's credentials"
                ),
            )),
            None => Err(refuse(
                "CredentialsNotAllowed",
                format!(
                    "namespace {namespace} may not use the operator's own AWS credentials (--default-credentials-namespaces); set aws.credentialsSecretRef to a Secret with this team's credentials, or aws.assumeRole to a role the operator allows"
                ),
            )),
        }
    }

    /// (pure) Whether the Console credentials Secret allows `url`. `bound` is what the Secret's
    /// `url` / `allowedUrls` keys hold (`None`: the Secret has neither key).
    pub fn check_console_binding(&self, secret: &str, url: &str, bound: Option<&[String]>) -> Result<(), Refusal> {
        let Some(allowed) = bound else {
            if self.allow_unbound_console_credentials {
                return Ok(());
            }
            return Err(refuse(
                "ConsoleNotAllowed",
                format!(
                    "Secret {secret} does not say which Console its credentials are for: add the key url: {url} (or allowedUrls, one URL per line) to it"
                ),
            ));
        };
        let want = normalize(url);
        if want.is_some() && allowed.iter().any(|a| normalize(a) == want) {
            return Ok(());
        }
        Err(refuse(
            "ConsoleNotAllowed",
            format!(
                "Secret {secret} holds credentials for {} only, not for defender.console.url {url}; no request was sent",
                allowed.join(", ")
            ),
        ))
    }
}

/// The parts of a Console URL that decide where credentials go: scheme, host, port and path.
fn normalize(raw: &str) -> Option<(String, String, u16, String)> {
    let u = Url::parse(raw.trim()).ok()?;
    Some((
        u.scheme().to_string(),
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?,
        u.path().trim_end_matches('/').to_string(),
    ))
}

/// The URLs a Console credentials Secret's `url` and `allowedUrls` values name (one per line or
/// comma); `None` when it has neither key.
pub fn bound_urls(url: Option<&str>, allowed: Option<&str>) -> Option<Vec<String>> {
    if url.is_none() && allowed.is_none() {
        return None;
    }
    Some(
        [url, allowed]
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(['\n', ',']))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// `*` matches any run of characters (ARNs contain no other wildcard the installer needs).
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) || s.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AccessRules {
        AccessRules {
            default_credentials_namespaces: vec!["platform".into()],
            allowed_role_arns: vec!["arn:aws:iam::111122223333:role/defenders-*".into()],
            ..Default::default()
        }
    }

    #[test]
    fn urls_with_user_info_or_metadata_addresses_are_refused() {
        assert!(url_problems("u", "https://console.example.com").is_empty());
        assert_eq!(url_problems("u", "https://a:b@console.example.com").len(), 1);
        assert_eq!(url_problems("u", "http://169.254.169.254/latest").len(), 1);
        assert_eq!(url_problems("u", "http://[fd00:ec2::254]/").len(), 1);
        assert_eq!(url_problems("u", "http://[::ffff:169.254.169.254]/").len(), 1);
        assert_eq!(url_problems("u", "http://[fe80::1]/").len(), 1);
        assert!(url_problems("u", "http://127.0.0.1:8083").is_empty());
    }

    #[test]
    fn http_consoles_and_custom_endpoints_need_the_installer() {
        let r = rules();
        assert_eq!(r.check_console_url("http://c:8083").unwrap_err().reason, "InsecureConsoleUrl");
        assert!(r.check_console_url("https://c").is_ok());
        assert_eq!(r.check_endpoint(Some("http://127.0.0.1:1")).unwrap_err().reason, "EndpointNotAllowed");
        assert!(r.check_endpoint(None).is_ok());
        let open = AccessRules { allow_insecure_console: true, allow_custom_aws_endpoints: true, ..r };
        assert!(open.check_console_url("http://c:8083").is_ok());
        assert!(open.check_endpoint(Some("http://127.0.0.1:1")).is_ok());
    }

    #[test]
    fn the_operators_identity_only_where_the_installer_says() {
        let r = rules();
        assert!(r.check_identity("team-a", true, None).is_ok());
        assert!(r.check_identity("platform", false, None).is_ok());
        assert_eq!(r.check_identity("team-a", false, None).unwrap_err().reason, "CredentialsNotAllowed");
        assert!(r.check_identity("team-a", false, Some("arn:aws:iam::111122223333:role/defenders-a")).is_ok());
        let other = r.check_identity("team-a", false, Some("arn:aws:iam::999999999999:role/defenders-a"));
        assert_eq!(other.unwrap_err().reason, "CredentialsNotAllowed");
        let all = AccessRules { default_credentials_namespaces: vec!["*".into()], ..Default::default() };
        assert!(all.check_identity("any", false, None).is_ok());
    }

    #[test]
    fn console_credentials_name_their_console() {
        let r = rules();
        let bound = bound_urls(Some("https://Console.example.com:443/"), None);
        assert!(r.check_console_binding("s", "https://console.example.com", bound.as_deref()).is_ok());
        let refused = r.check_console_binding("s", "https://evil.example.com", bound.as_deref()).unwrap_err();
        assert_eq!(refused.reason, "ConsoleNotAllowed");
        assert!(r.check_console_binding("s", "http://console.example.com", bound.as_deref()).is_err());
        let list = bound_urls(None, Some("https://a.example.com\nhttps://b.example.com/prefix"));
        assert!(r.check_console_binding("s", "https://b.example.com/prefix/", list.as_deref()).is_ok());
        assert!(r.check_console_binding("s", "https://b.example.com", list.as_deref()).is_err());
        // No key: refused unless the installer allows unbound credentials.
        assert_eq!(
            r.check_console_binding("s", "https://a.example.com", None).unwrap_err().reason,
            "ConsoleNotAllowed"
        );
        let lax = AccessRules { allow_unbound_console_credentials: true, ..r };
        assert!(lax.check_console_binding("s", "https://a.example.com", None).is_ok());
    }

    #[test]
    fn role_patterns() {
        assert!(glob_match("arn:aws:iam::1:role/*", "arn:aws:iam::1:role/x"));
        assert!(glob_match("arn:aws:iam::*:role/defenders", "arn:aws:iam::2:role/defenders"));
        assert!(!glob_match("arn:aws:iam::*:role/defenders", "arn:aws:iam::2:role/defenders-admin"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("a*a", "a"));
    }
}
