//! IAM calls: the Defender's task execution role, when the operator creates it.

use aws_sdk_iam::types::Tag;

use super::{AwsClients, AwsError, Tags};

#[derive(Clone, Debug, PartialEq)]
pub struct Role {
    pub arn: String,
    pub name: String,
    pub tags: Tags,
}

/// A role to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRole {
    pub name: String,
    /// `/ecs-defender/`: the IAM policy of the operator can scope its IAM rights to it.
    pub path: String,
    pub description: String,
    /// The trust policy (JSON).
    pub assume_role_policy: String,
    pub tags: Tags,
}

fn sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok()).collect()
}

fn is_not_found(e: &AwsError) -> bool {
    e.code_is("NoSuchEntity") || e.code_is("NoSuchEntityException")
}

/// IAM returns policy documents URL-encoded (RFC 3986).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl AwsClients {
    pub async fn get_role(&self, name: &str) -> Result<Option<Role>, AwsError> {
        let out = match self.finish("iam:GetRole", self.iam.get_role().role_name(name).send().await) {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(out.role().map(|r| Role {
            arn: r.arn().to_string(),
            name: r.role_name().to_string(),
            tags: r.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect(),
        }))
    }

    /// Creates the role; a role of that name that exists already is left to the caller's next look.
    pub async fn create_role(&self, role: &NewRole) -> Result<(), AwsError> {
        match self.finish(
            "iam:CreateRole",
            self.iam
                .create_role()
                .role_name(&role.name)
                .path(&role.path)
                .description(&role.description)
                .assume_role_policy_document(&role.assume_role_policy)
                .set_tags(Some(sdk_tags(&role.tags)))
                .send()
                .await,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code_is("EntityAlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The role's inline policy `policy` as parsed JSON; `None` when it has none of that name.
    pub async fn get_role_policy(&self, role: &str, policy: &str) -> Result<Option<serde_json::Value>, AwsError> {
        let out = match self
            .finish("iam:GetRolePolicy", self.iam.get_role_policy().role_name(role).policy_name(policy).send().await)
        {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let doc = out.policy_document();
        Ok(Some(
            serde_json::from_str(doc)
                .or_else(|_| serde_json::from_str(&percent_decode(doc)))
                .unwrap_or(serde_json::Value::Null),
        ))
    }

    pub async fn put_role_policy(&self, role: &str, policy: &str, document: &str) -> Result<(), AwsError> {
        self.finish(
            "iam:PutRolePolicy",
            self.iam.put_role_policy().role_name(role).policy_name(policy).policy_document(document).send().await,
        )?;
        Ok(())
    }

    /// Deletes the inline policy; "already gone" counts as success.
    pub async fn delete_role_policy(&self, role: &str, policy: &str) -> Result<(), AwsError> {
        match self.finish(
            "iam:DeleteRolePolicy",
            self.iam.delete_role_policy().role_name(role).policy_name(policy).send().await,
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the role; "already gone" counts as success.
    pub async fn delete_role(&self, role: &str) -> Result<(), AwsError> {
        match self.finish("iam:DeleteRole", self.iam.delete_role().role_name(role).send().await) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_documents_are_url_decoded() {
        assert_eq!(super::percent_decode("%7B%22a%22%3A%20%2A%7D"), r#"{"a": *}"#);
        assert_eq!(super::percent_decode("100%"), "100%");
    }
}
