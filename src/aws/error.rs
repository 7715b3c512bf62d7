use std::fmt;

use aws_sdk_ecs::error::SdkError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// A failed AWS call: which operation, AWS's error code and message, and whether retrying can help.
#[derive(Debug, Clone, thiserror::Error)]
pub struct AwsError {
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub transient: bool,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "AWS {} failed: {code}: {}", self.operation, self.message),
            None => write!(f, "AWS {} failed: {}", self.operation, self.message),
        }
    }
}

/// Error codes AWS uses for rate limiting and passing server trouble.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "ServerException",
    "ScalingActivityInProgress",
    "ResourceContention",
    "RequestTimeout",
    "RequestTimeoutException",
];

impl AwsError {
    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match &err {
            SdkError::ServiceError(se) => {
                let e = se.err();
                let code = e.code().map(str::to_string);
                let status = se.raw().status().as_u16();
                let transient = code.as_deref().is_some_and(|c| TRANSIENT_CODES.contains(&c)) || status >= 500;
                Self {
                    operation,
                    message: e.message().map(str::to_string).unwrap_or_else(|| format!("{e}")),
                    code,
                    transient,
                }
            }
            // No answer (timeouts, connection failures) or an unreadable one: try again later.
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                Self { operation, code: None, message: error_chain(&err), transient: true }
            }
            _ => Self { operation, code: None, message: error_chain(&err), transient: false },
        }
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Access problems the user must fix.
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "AccessDenied"
                    | "AccessDeniedException"
                    | "UnauthorizedOperation"
                    | "UnrecognizedClientException"
                    | "InvalidClientTokenId"
                    | "AuthFailure"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "ExpiredTokenException"
            )
        )
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
