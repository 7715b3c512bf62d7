//! (pure) The Console as it may really be: where the reference marks behaviour [inferred], the
//! simulator can play each plausible variant, chosen per test ([`super::ConsoleConfig::variant`]),
//! so the operator is tested against what it must survive, not only against our best guess.

use std::{str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

/// One plausible Console. [`ConsoleVariant::AsDocumented`] is the reference's best guess; each
/// other variant differs from it in one [inferred] point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsoleVariant {
    /// The reference's reading: `cluster` set at once, `cloudMetadata.resourceID` = the instance
    /// id, the same install bundle for the same Console version.
    #[default]
    AsDocumented,
    /// A Defender's `cluster` is empty for [`super::ConsoleConfig::cluster_delay`] after it
    /// connects (the reference: "be tolerant of `cluster` not being populated immediately"); a
    /// `?cluster=` filter does not find it meanwhile.
    ClusterLate,
    /// Defenders carry no `cloudMetadata.resourceID`: only `hostname` (the private DNS name) says
    /// which instance they run on.
    HostnameOnly,
    /// Every generated task definition carries a new install bundle (fresh certificates each
    /// time), so two generations of the same version differ.
    FreshBundle,
    /// The Console upgrades itself [`super::ConsoleConfig::upgrade_after`] after it first
    /// generated a task definition: `/version`, the image and the bundle change once.
    Upgrading,
    /// Responses carry fields our types do not know (Defender records, the task definition's
    /// containers, `/settings/certs`).
    UnknownFields,
}

impl ConsoleVariant {
    /// Every variant, for tests that run against each.
    pub const ALL: [ConsoleVariant; 6] = [
        ConsoleVariant::AsDocumented,
        ConsoleVariant::ClusterLate,
        ConsoleVariant::HostnameOnly,
        ConsoleVariant::FreshBundle,
        ConsoleVariant::Upgrading,
        ConsoleVariant::UnknownFields,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConsoleVariant::AsDocumented => "as-documented",
            ConsoleVariant::ClusterLate => "cluster-late",
            ConsoleVariant::HostnameOnly => "hostname-only",
            ConsoleVariant::FreshBundle => "fresh-bundle",
            ConsoleVariant::Upgrading => "upgrading",
            ConsoleVariant::UnknownFields => "unknown-fields",
        }
    }
}

impl std::fmt::Display for ConsoleVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ConsoleVariant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConsoleVariant::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ConsoleVariant::ALL.iter().map(|v| v.name()).collect();
            format!("unknown Console variant {s:?}; one of {}", names.join(", "))
        })
    }
}

/// The version an [`ConsoleVariant::Upgrading`] Console moves to: the next patch release.
pub fn next_version(version: &str) -> String {
    let mut parts: Vec<String> = version.split('.').map(str::to_string).collect();
    if let Some(last) = parts.last_mut() {
        *last = last.parse::<u64>().map(|n| (n + 1).to_string()).unwrap_or_else(|_| format!("{last}1"));
    }
    parts.join(".")
}

/// Default of [`super::ConsoleConfig::cluster_delay`].
pub const DEFAULT_CLUSTER_DELAY: Duration = Duration::from_secs(3);
/// Default of [`super::ConsoleConfig::upgrade_after`].
pub const DEFAULT_UPGRADE_AFTER: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for v in ConsoleVariant::ALL {
            assert_eq!(v.name().parse::<ConsoleVariant>(), Ok(v));
        }
        assert!("nope".parse::<ConsoleVariant>().unwrap_err().contains("hostname-only"));
    }

    #[test]
    fn next_version_bumps_the_patch() {
        assert_eq!(next_version("34.03.138"), "34.03.139");
        assert_eq!(next_version("x"), "x1");
    }
}
