//! AWS access behind narrow, domain-typed calls: every method takes and returns our structs, not
//! SDK builders, classifies its failure (transient or permanent) and counts itself in the metrics.
//!
//! - [`clients`]: building SDK clients per (region, endpoint, credentials), shared across resources.
//! - [`budget`]: their HTTP client, which holds every request to its service's rate budget.
//! - [`ecs`], [`autoscaling`], [`ec2`], [`secretsmanager`], [`iam`]: the calls the reconcile
//!   pipeline makes.

pub mod autoscaling;
pub mod budget;
pub mod clients;
pub mod ec2;
pub mod ecs;
mod error;
pub mod fleet;
pub mod iam;
pub mod secretsmanager;

pub use clients::{AwsClients, AwsPool, AwsTarget, StaticCredentials};
pub use error::AwsError;

/// Tag keys on everything the operator creates.
pub mod tags {
    /// The owning resource's UID: how the operator recognises what it created.
    pub const OWNER: &str = "ecsdefender.io/owner";
    /// `namespace/name` of the owning resource, for people.
    pub const RESOURCE: &str = "ecsdefender.io/resource";
    /// sha256 of a task definition as registered.
    pub const DIGEST: &str = "ecsdefender.io/digest";
    /// The Console version that generated a task definition.
    pub const CONSOLE_VERSION: &str = "ecsdefender.io/console-version";
    /// sha256 of what we asked the Console to generate (its options and our overrides): with the
    /// Console version, tells from the registered revision alone whether it is current.
    pub const INPUTS: &str = "ecsdefender.io/inputs";
    /// On a revision that takes the install bundle from Secrets Manager: the secret version its
    /// Defenders were (re)started with.
    pub const SECRET_VERSION: &str = "ecsdefender.io/secret-version";

    /// Whether `tags` carry `uid` as owner: the one test of "ours" for everything taggable.
    pub fn owned_by(tags: &super::Tags, uid: &str) -> bool {
        tags.get(OWNER).is_some_and(|o| o == uid)
    }
}

/// What a worker instance launches with; launch templates and launch configurations both carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceSpec {
    /// The launch template's or configuration's name.
    pub name: String,
    pub image_id: String,
    pub instance_type: String,
    /// Name or ARN.
    pub instance_profile: String,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    /// Sent only when set: unset lets the subnet decide, as AWS does.
    pub associate_public_ip_address: Option<bool>,
    /// Plain text; base64-encoded on the wire.
    pub user_data: String,
}

/// Tags as key/value pairs, in a stable order.
pub type Tags = std::collections::BTreeMap<String, String>;
