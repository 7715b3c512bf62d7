//! The Prisma Cloud Compute Console simulator (issue 3): the parts of the Console API the operator
//! depends on, served over real HTTP(S) on 127.0.0.1, following
//! `reference/prisma-console-api.md` field by field. Choices the reference marks [inferred] are
//! marked the same way where they are made.
//!
//! - [`ConsoleSim::start`] serves `{url}/api/{v1|vNN.NN}/...` (optionally under a SaaS-style path
//!   prefix, optionally over TLS with a fresh self-signed CA).
//! - The ECS world tells it which Defenders run through [`DefenderRegistry`]: a Defender connects
//!   only with an install bundle this Console issued.
//! - Tests read [`ConsoleSim::requests`] and inject failures through [`ConsoleSim::faults`]; other
//!   processes do the same through the control API ([`ConsoleSim::control_url`], [`control`]).
//! - [`ConsoleConfig::variant`] plays one of the plausible Consoles where the reference is
//!   [inferred] ([`ConsoleVariant`]).
//!
//! Layout: `auth` (credentials, tokens), `bundle` (install bundles), `task_definition` (the ECS
//! generator), `defenders` (records, filters, paging) and `faults` are pure; `server` is the IO
//! edge (accept loop, TLS, routing); `tls` makes the certificates.

mod auth;
mod bundle;
pub mod control;
mod defenders;
mod faults;
mod server;
mod task_definition;
mod tls;
mod variants;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use rand::{Rng as _, distr::Alphanumeric};
use tokio::{net::TcpListener, sync::watch};

pub use self::{
    auth::AuthKind,
    defenders::{DEFAULT_PAGE_SIZE, Defender},
    faults::{Fault, FaultRule, Faults},
    task_definition::{CONTAINER_NAME, DEFAULT_FAMILY},
    variants::{ConsoleVariant, DEFAULT_CLUSTER_DELAY, DEFAULT_UPGRADE_AFTER, next_version},
};
use self::{
    auth::TokenStore,
    bundle::{ProxyOpt, build_install_bundle, hmac_sha256, verify_install_bundle},
    task_definition::build_image_name,
};
use crate::defender::{DefenderRegistry, DefenderStart};

/// The project every Console has; requests without `?project=` address it.
pub const CENTRAL_CONSOLE: &str = "Central Console";
/// The Console version a simulator reports unless configured otherwise.
pub const DEFAULT_VERSION: &str = "34.03.138";
/// The websocket port Defenders of a self-hosted Console connect to (`wss://<SAN>:8084`).
pub const SELF_HOSTED_WS_PORT: u16 = 8084;
/// The websocket port of SaaS Consoles (`wss://<region>.cloud.twistlock.com:443`).
pub const SAAS_WS_PORT: u16 = 443;
/// The request log keeps at most this many entries (the oldest go first); a long benchmark
/// still sees the totals through [`ConsoleSim::request_count`].
const MAX_LOGGED_REQUESTS: usize = 200_000;

/// How to start a Console simulator.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    pub username: String,
    pub password: String,
    /// More (id, secret) pairs that authenticate like the user: SaaS access keys.
    pub access_keys: Vec<(String, String)>,
    /// A SaaS-style tenant path, e.g. `/us-2-158256885`; every API path lives under it.
    pub path_prefix: Option<String>,
    /// Serve HTTPS with a fresh self-signed CA ([`ConsoleSim::ca_pem`]).
    pub tls: bool,
    pub token_lifetime: Duration,
    /// What `/version` reports; the Defender image tag follows it. Changeable with [`ConsoleSim::set_version`].
    pub version: String,
    /// The Subject Alternative Names of the Console certificate: `/settings/certs` lists them and
    /// `consoleAddr` must be one of them.
    pub sans: Vec<String>,
    /// Project names besides [`CENTRAL_CONSOLE`]; empty means Projects are not enabled.
    pub projects: Vec<String>,
    /// The largest `limit` honoured on list endpoints: 50 on SaaS (the default), 250 self-hosted.
    pub max_page_size: usize,
    /// The `WS_ADDRESS` port; `None`: 443 with a path prefix (SaaS), else 8084 (self-hosted).
    pub ws_port: Option<u16>,
    /// Which plausible Console to play where the reference is [inferred].
    pub variant: ConsoleVariant,
    /// [`ConsoleVariant::ClusterLate`]: how long a connected Defender's `cluster` stays empty.
    pub cluster_delay: Duration,
    /// [`ConsoleVariant::Upgrading`]: how long after the first generated task definition the
    /// Console upgrades.
    pub upgrade_after: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            username: "admin".to_string(),
            password: rand::rng().sample_iter(Alphanumeric).take(24).map(char::from).collect(),
            access_keys: Vec::new(),
            path_prefix: None,
            tls: false,
            token_lifetime: Duration::from_secs(30 * 60),
            version: DEFAULT_VERSION.to_string(),
            sans: vec!["127.0.0.1".to_string(), "localhost".to_string()],
            projects: Vec::new(),
            max_page_size: DEFAULT_PAGE_SIZE,
            ws_port: None,
            variant: ConsoleVariant::default(),
            cluster_delay: DEFAULT_CLUSTER_DELAY,
            upgrade_after: DEFAULT_UPGRADE_AFTER,
        }
    }
}

/// One request the Console received. It never holds credentials or tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleRequest {
    pub method: String,
    /// The full path as received, prefix included.
    pub path: String,
    /// The path after `/api/<version>/`, e.g. `defenders/ecs-task.json`; empty if not an API path.
    pub endpoint: String,
    /// `v1`, `v34.03`, ...; empty if not an API path.
    pub api_version: String,
    pub query: Option<String>,
    pub auth: AuthKind,
    /// The response status; `None` when the connection was dropped without one.
    pub status: Option<u16>,
    /// The injected faults this request met, in order.
    pub faults: Vec<Fault>,
    pub at: DateTime<Utc>,
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not take the Console down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state the server and every handle share.
pub(crate) struct Shared {
    cfg: ConsoleConfig,
    /// "" or "/tenant" (normalised: leading slash, no trailing slash).
    prefix: String,
    /// Identify this Console's install bundles; random per Console, fixed for its lifetime.
    console_id: String,
    secret: [u8; 32],
    /// The `tw_<token>` part of image names (per customer on the real Console).
    registry_token: String,
    ca_pem: Option<String>,
    ca_expiration: DateTime<Utc>,
    version: RwLock<String>,
    tokens: Mutex<TokenStore>,
    defenders: Mutex<Vec<Defender>>,
    requests: Mutex<VecDeque<ConsoleRequest>>,
    request_count: AtomicU64,
    faults: Faults,
    /// The largest `limit` honoured now ([`ConsoleSim::set_max_page_size`]).
    max_page_size: AtomicUsize,
    /// [`ConsoleVariant::Upgrading`]: when the first task definition was generated, and whether
    /// the upgrade happened.
    upgrade: Mutex<(Option<Instant>, bool)>,
}

impl Shared {
    fn version(&self) -> String {
        self.version.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_version(&self, version: &str) {
        *self.version.write().unwrap_or_else(PoisonError::into_inner) = version.to_string();
    }

    fn max_page_size(&self) -> usize {
        self.max_page_size.load(Ordering::Relaxed)
    }

    /// [`ConsoleVariant::Upgrading`]: notes the first generation, and upgrades once its time came.
    fn upgrade_if_due(&self, generating: bool) {
        if self.cfg.variant != ConsoleVariant::Upgrading {
            return;
        }
        let mut u = lock(&self.upgrade);
        if generating && u.0.is_none() {
            u.0 = Some(Instant::now());
        }
        if let (Some(first), false) = (u.0, u.1)
            && first.elapsed() >= self.cfg.upgrade_after
        {
            u.1 = true;
            let next = next_version(&self.version());
            tracing::debug!(version = %next, "Console simulator upgrades itself");
            self.set_version(&next);
        }
    }

    /// How records render in this variant now.
    fn rendering(&self) -> defenders::Rendering {
        defenders::Rendering {
            now: Utc::now(),
            hostname_only: self.cfg.variant == ConsoleVariant::HostnameOnly,
            unknown_fields: self.cfg.variant == ConsoleVariant::UnknownFields,
        }
    }

    fn credentials_ok(&self, username: &str, password: &str) -> bool {
        // Usernames and passwords are case-sensitive [S3].
        (username == self.cfg.username && password == self.cfg.password)
            || self.cfg.access_keys.iter().any(|(id, secret)| id == username && secret == password)
    }

    fn issue_token(&self, username: &str) -> String {
        lock(&self.tokens).issue(&self.secret, username, Instant::now(), self.cfg.token_lifetime)
    }

    fn check_token(&self, token: &str) -> Result<(), auth::TokenError> {
        lock(&self.tokens).check(token, Instant::now())
    }

    fn expire_tokens(&self) {
        lock(&self.tokens).expire_all(Instant::now());
    }

    /// Whether `addr` is one of the certificate's SANs (DNS names compare case-insensitively).
    fn is_san(&self, addr: &str) -> bool {
        self.cfg.sans.iter().any(|s| s.eq_ignore_ascii_case(addr))
    }

    fn ws_address(&self, console_addr: &str) -> String {
        let port = self.cfg.ws_port.unwrap_or(if self.prefix.is_empty() { SELF_HOSTED_WS_PORT } else { SAAS_WS_PORT });
        format!("wss://{console_addr}:{port}")
    }

    fn install_bundle(&self, project: &str, proxy: &ProxyOpt) -> String {
        build_install_bundle(&self.secret, &self.console_id, project, &self.version(), proxy)
    }

    fn image_name(&self) -> String {
        build_image_name(&self.registry_token, &self.version())
    }

    fn known_project(&self, project: &str) -> bool {
        project == CENTRAL_CONSOLE || self.cfg.projects.iter().any(|p| p == project)
    }

    fn log(&self, entry: ConsoleRequest) {
        self.request_count.fetch_add(1, Ordering::Relaxed);
        let mut log = lock(&self.requests);
        if log.len() >= MAX_LOGGED_REQUESTS {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// [inferred] A Defender connects when its bundle is ours and, if it has a `WS_ADDRESS`, that
    /// names one of our SANs: a Defender dialling a name the certificate lacks fails TLS.
    fn defender_started(&self, d: &DefenderStart) -> bool {
        let Some(claims) = verify_install_bundle(&self.secret, &self.console_id, &d.install_bundle) else {
            return false;
        };
        if let Some(ws) = &d.ws_address
            && !ws_host(ws).is_some_and(|h| self.is_san(h))
        {
            return false;
        }
        let now = Utc::now();
        let cluster_visible_at = if self.cfg.variant == ConsoleVariant::ClusterLate {
            now + chrono::Duration::from_std(self.cfg.cluster_delay).unwrap_or_default()
        } else {
            now
        };
        let mut defenders = lock(&self.defenders);
        // A record is keyed by hostname; a new instance reusing a hostname takes the record over.
        defenders.retain(|x| x.hostname == d.hostname || x.instance_id != d.instance_id);
        let record = Defender {
            hostname: d.hostname.clone(),
            instance_id: d.instance_id.clone(),
            cluster: d.cluster.clone(),
            account_id: d.account_id.clone(),
            region: d.region.clone(),
            instance_type: d.instance_type.clone(),
            version: claims.version,
            connected: true,
            last_modified: now,
            project: claims.project,
            cluster_visible_at,
        };
        match defenders.iter_mut().find(|x| x.hostname == d.hostname) {
            Some(existing) => {
                // `lastModified` is when connectivity last changed; a restart while connected keeps it.
                let last_modified = if existing.connected { existing.last_modified } else { now };
                // A reconnecting Defender's cluster is known already.
                let cluster_visible_at =
                    if existing.cluster == record.cluster { existing.cluster_visible_at } else { cluster_visible_at };
                *existing = Defender { last_modified, cluster_visible_at, ..record };
            }
            None => defenders.push(record),
        }
        true
    }

    fn defender_stopped(&self, instance_id: &str) {
        let now = Utc::now();
        for d in lock(&self.defenders).iter_mut().filter(|d| d.instance_id == instance_id && d.connected) {
            d.connected = false;
            d.last_modified = now;
        }
    }
}

/// The host of a `wss://host:port` address.
fn ws_host(ws: &str) -> Option<&str> {
    let rest = ws.split_once("://").map_or(ws, |(_, r)| r);
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h)).filter(|h| !h.is_empty())
}

/// Stops the server (accept loop and open connections) when the last handle drops.
struct ServerGuard {
    _stop: watch::Sender<()>,
}

/// A running Console simulator. Clones share it; the server stops when the last clone drops.
#[derive(Clone)]
pub struct ConsoleSim {
    shared: Arc<Shared>,
    url: String,
    control_url: String,
    _server: Arc<ServerGuard>,
}

impl std::fmt::Debug for ConsoleSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSim").field("url", &self.url).finish_non_exhaustive()
    }
}

impl ConsoleSim {
    /// Starts a Console on a free 127.0.0.1 port. Must run inside a tokio runtime; the server
    /// tasks live on it.
    pub async fn start(cfg: ConsoleConfig) -> anyhow::Result<ConsoleSim> {
        if cfg.username.is_empty() || cfg.password.is_empty() {
            bail!("the Console needs a username and a password");
        }
        if cfg.sans.is_empty() || cfg.version.is_empty() || cfg.max_page_size == 0 {
            bail!("the Console needs at least one SAN, a version and a page size");
        }
        let prefix = match cfg.path_prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => String::new(),
            Some(p) => format!("/{p}"),
        };
        let tls = if cfg.tls { Some(tls::build_console_tls(&cfg.sans)?) } else { None };
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.context("bind the Console port")?;
        let port = listener.local_addr()?.port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}{prefix}");

        let secret: [u8; 32] = rand::rng().random();
        let shared = Arc::new(Shared {
            prefix,
            console_id: uuid::Uuid::new_v4().to_string(),
            registry_token: hex::encode(&hmac_sha256(&secret, b"registry")[..16]),
            secret,
            ca_pem: tls.as_ref().map(|t| t.ca_pem.clone()),
            ca_expiration: Utc::now() + chrono::Duration::days(3 * 365),
            version: RwLock::new(cfg.version.clone()),
            tokens: Mutex::new(TokenStore::default()),
            defenders: Mutex::new(Vec::new()),
            requests: Mutex::new(VecDeque::new()),
            request_count: AtomicU64::new(0),
            faults: Faults::default(),
            max_page_size: AtomicUsize::new(cfg.max_page_size),
            upgrade: Mutex::new((None, false)),
            cfg,
        });
        let (stop_tx, stop_rx) = watch::channel(());
        let control = TcpListener::bind(("127.0.0.1", 0)).await.context("bind the Console's control port")?;
        let control_url = format!("http://{}", control.local_addr()?);
        tokio::spawn(control::serve(control, shared.clone(), stop_rx.clone()));
        tokio::spawn(server::serve(listener, shared.clone(), tls.map(|t| t.acceptor), stop_rx));
        Ok(ConsoleSim { shared, url, control_url, _server: Arc::new(ServerGuard { _stop: stop_tx }) })
    }

    /// The control API (plain HTTP on its own 127.0.0.1 port): faults, page size, upgrades, token
    /// expiry, the request log, for tests and scripts outside this process ([`control`]).
    pub fn control_url(&self) -> String {
        self.control_url.clone()
    }

    /// The variant this Console plays.
    pub fn variant(&self) -> ConsoleVariant {
        self.shared.cfg.variant
    }

    /// Sets the largest `limit` the Defender list honours (a small value makes clients page).
    pub fn set_max_page_size(&self, n: usize) {
        self.shared.max_page_size.store(n.max(1), Ordering::Relaxed);
    }

    pub fn access_keys(&self) -> &[(String, String)] {
        &self.shared.cfg.access_keys
    }

    /// `scheme://127.0.0.1:port[/prefix]`, without a trailing slash: the "Path to Console".
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn username(&self) -> &str {
        &self.shared.cfg.username
    }

    pub fn password(&self) -> &str {
        &self.shared.cfg.password
    }

    /// The CA certificate (PEM) that signed the server certificate, when serving TLS.
    pub fn ca_pem(&self) -> Option<String> {
        self.shared.ca_pem.clone()
    }

    pub fn sans(&self) -> &[String] {
        &self.shared.cfg.sans
    }

    pub fn version(&self) -> String {
        self.shared.version()
    }

    /// Simulates a Console upgrade: `/version`, the image name and the generated task
    /// definition change; running Defenders keep their version.
    pub fn set_version(&self, version: &str) {
        self.shared.set_version(version);
    }

    /// The fault rules (inject, clear, inspect).
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Makes every token issued so far expired now.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens();
    }

    /// Every bearer token this Console issued and still remembers: for tests that check the
    /// operator never shows one.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.tokens).issued()
    }

    /// The request log, oldest first.
    pub fn requests(&self) -> Vec<ConsoleRequest> {
        lock(&self.shared.requests).iter().cloned().collect()
    }

    /// All requests ever received, including those the bounded log dropped.
    pub fn request_count(&self) -> u64 {
        self.shared.request_count.load(Ordering::Relaxed)
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Every Defender record of every project, sorted by hostname.
    pub fn defenders(&self) -> Vec<Defender> {
        let mut all = lock(&self.shared.defenders).clone();
        all.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        all
    }

    /// The install bundle this Console issues now for `project` (no proxy), as the ECS task
    /// definition or `/defenders/install-bundle` carry it.
    pub fn install_bundle(&self, project: &str) -> String {
        self.shared.install_bundle(project, &ProxyOpt::default())
    }

    /// The `WS_ADDRESS` this Console gives Defenders that connect to `console_addr`.
    pub fn ws_address(&self, console_addr: &str) -> String {
        self.shared.ws_address(console_addr)
    }
}

impl DefenderRegistry for ConsoleSim {
    fn defender_started(&self, defender: &DefenderStart) -> bool {
        self.shared.defender_started(defender)
    }

    fn defender_stopped(&self, instance_id: &str) {
        self.shared.defender_stopped(instance_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_host_extracts_the_host() {
        assert_eq!(ws_host("wss://127.0.0.1:8084"), Some("127.0.0.1"));
        assert_eq!(ws_host("wss://us-west1.cloud.twistlock.com:443/x"), Some("us-west1.cloud.twistlock.com"));
        assert_eq!(ws_host("wss://[::1]:8084"), Some("::1"));
        assert_eq!(ws_host("localhost"), Some("localhost"));
        assert_eq!(ws_host("wss://:8084"), None);
    }
}
