//! Secrets Manager calls: the secret that holds the Defender's install bundle.
//!
//! The operator writes the secret (create, put a version, delete) but never reads its value: which
//! bundle a version holds is told by its `VersionId`, a token derived from the owner and the bundle
//! ([`crate::reconcile::plan`]), so no `GetSecretValue` is needed.

use aws_sdk_secretsmanager::types::Tag;

use super::{AwsClients, AwsError, Tags};

/// The staging label of the version ECS injects.
pub const CURRENT_STAGE: &str = "AWSCURRENT";

#[derive(Clone, Debug, PartialEq)]
pub struct Secret {
    pub arn: String,
    pub name: String,
    /// The version labelled `AWSCURRENT`; `None` for a secret created without a value.
    pub current_version: Option<String>,
    /// Every version that has a staging label (AWS may delete unlabelled ones).
    pub versions: Vec<String>,
    /// Scheduled for deletion (a recovery window runs): it cannot be used or re-created by name.
    pub deleted: bool,
    pub tags: Tags,
}

/// A secret's value; its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// How a secret is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretDeletion {
    /// Recoverable for this many days (7 to 30).
    RecoveryWindow(i64),
    /// Gone at once.
    Force,
}

fn sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn is_not_found(e: &AwsError) -> bool {
    e.code_is("ResourceNotFoundException")
}

impl AwsClients {
    /// The secret by name (or ARN), with its versions and tags; `None` when there is none.
    pub async fn describe_secret(&self, id: &str) -> Result<Option<Secret>, AwsError> {
        let out = match self
            .finish("secretsmanager:DescribeSecret", self.secretsmanager.describe_secret().secret_id(id).send().await)
        {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let stages = out.version_ids_to_stages();
        let mut versions: Vec<String> = stages
            .map(|m| m.iter().filter(|(_, s)| !s.is_empty()).map(|(v, _)| v.clone()).collect())
            .unwrap_or_default();
        versions.sort();
        let current_version =
            stages.and_then(|m| m.iter().find(|(_, s)| s.iter().any(|s| s == CURRENT_STAGE)).map(|(v, _)| v.clone()));
        Ok(Some(Secret {
            arn: out.arn().unwrap_or_default().to_string(),
            name: out.name().unwrap_or_default().to_string(),
            current_version,
            versions,
            deleted: out.deleted_date().is_some(),
            tags: out.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
        }))
    }

    /// Creates the secret without a value (so its ARN is known before the bundle is), tagged.
    /// A secret of that name that exists already is left to the caller's next look.
    pub async fn create_secret(&self, name: &str, description: &str, tags: &Tags) -> Result<(), AwsError> {
        match self.finish(
            "secretsmanager:CreateSecret",
            self.secretsmanager
                .create_secret()
                .name(name)
                .description(description)
                .set_tags(Some(sdk_tags(tags)))
                .send()
                .await,
        ) {
            Ok(_) => Ok(()),
            // Created by an earlier attempt whose answer was lost: the next observe finds it.
            Err(e) if e.code_is("ResourceExistsException") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores `value` as the new current version `version_id` (idempotent: the same token with the
    /// same value is a no-op).
    pub async fn put_secret_value(&self, arn: &str, version_id: &str, value: &SecretValue) -> Result<(), AwsError> {
        self.finish(
            "secretsmanager:PutSecretValue",
            self.secretsmanager
                .put_secret_value()
                .secret_id(arn)
                .client_request_token(version_id)
                .secret_string(value.0.clone())
                .send()
                .await,
        )?;
        Ok(())
    }

    /// Cancels a scheduled deletion.
    pub async fn restore_secret(&self, arn: &str) -> Result<(), AwsError> {
        self.finish("secretsmanager:RestoreSecret", self.secretsmanager.restore_secret().secret_id(arn).send().await)?;
        Ok(())
    }

    /// Deletes the secret; "already gone" and "already scheduled for deletion" count as success.
    pub async fn delete_secret(&self, arn: &str, how: SecretDeletion) -> Result<(), AwsError> {
        let req = self.secretsmanager.delete_secret().secret_id(arn);
        let req = match how {
            SecretDeletion::RecoveryWindow(days) => req.recovery_window_in_days(days),
            SecretDeletion::Force => req.force_delete_without_recovery(true),
        };
        match self.finish("secretsmanager:DeleteSecret", req.send().await) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if e.code_is("InvalidRequestException") && e.message.contains("marked deleted") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
