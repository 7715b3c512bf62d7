//! The operator's top-level error: what stopped a reconcile, whether retrying can help, and a
//! fixed category name used as the metrics label and the Event reason.

use crate::{aws::AwsError, crd::reasons, prisma::ConsoleError, validate::InvalidSpec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretKeyMissing { namespace: String, name: String, key: &'static str },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A refusal before any request: `step` is its reason (the condition's and the Event's),
    /// so the message does not repeat it.
    #[error("{message}")]
    Stalled { step: &'static str, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A fixed PascalCase name: the metrics label and the Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::SecretNotFound { .. } => "SecretNotFound",
            Error::SecretKeyMissing { .. } => "SecretInvalid",
            Error::Aws(e) => aws_category(e),
            Error::Console(ConsoleError::Unauthorized { .. }) => "ConsoleUnauthorized",
            Error::Console(ConsoleError::Forbidden { .. }) => "ConsoleForbidden",
            Error::Console(ConsoleError::RateLimited { .. }) => reasons::CONSOLE_RATE_LIMITED,
            Error::Console(e) if e.is_transient() => reasons::CONSOLE_UNAVAILABLE,
            Error::Console(ConsoleError::Config(_)) => "ConsoleConfigInvalid",
            Error::Console(_) => "ConsoleError",
            Error::Kube(_) => "KubeApiError",
            Error::Stalled { step, .. } => step,
        }
    }

    /// Retrying without a change can help.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Aws(e) => e.transient,
            Error::Console(e) => e.is_transient(),
            Error::Kube(_) => true,
            _ => false,
        }
    }

    /// A lower bound for the next attempt, when the other side said one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Console(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// The category of an AWS error (the condition reason and metrics label).
pub fn aws_category(e: &AwsError) -> &'static str {
    if e.is_access_denied() {
        "AwsAccessDenied"
    } else if e.transient {
        "AwsUnavailable"
    } else {
        "AwsError"
    }
}
