//! (pure) The log filter: `RUST_LOG` as given, except that the crates which put credentials or
//! request details into their debug and trace output stay at info unless `RUST_LOG` names them.
//!
//! The AWS SDK logs the resolved identity (the access key id) at debug and its request signing at
//! trace; the HTTP stack logs connections and headers at trace. `RUST_LOG=debug` should show the
//! operator's own reasoning, not that. `RUST_LOG=debug,aws_smithy_runtime=trace` still gets it.

use tracing_subscriber::EnvFilter;

/// Capped at info unless named in `RUST_LOG` (the crate, or a module of it).
pub const CAPPED_TARGETS: &[&str] = &[
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
    "aws_sigv4",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_types",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tower",
];

/// The filter for `spec` (`RUST_LOG`; unset or invalid: `info`), with [`CAPPED_TARGETS`] at
/// info unless it names them.
pub fn log_filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    let (mut filter, spec) = match EnvFilter::try_new(spec) {
        Ok(f) => (f, spec),
        Err(_) => (EnvFilter::new("info"), "info"),
    };
    for target in CAPPED_TARGETS.iter().filter(|t| !names(spec, t)) {
        filter = filter.add_directive(format!("{target}=info").parse().expect("a valid directive"));
    }
    filter
}

/// Whether a directive of `spec` is about `target` (the crate or one of its modules).
fn names(spec: &str, target: &str) -> bool {
    spec.split(',')
        .filter_map(|d| d.split(['=', '[']).next())
        .map(str::trim)
        .any(|t| t == target || t.strip_prefix(target).is_some_and(|rest| rest.starts_with("::")))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tracing::Level;
    use tracing_subscriber::{Layer, prelude::*};

    use super::*;

    /// Counts the events that reach it.
    #[derive(Clone, Default)]
    struct Counter(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Counter {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether an event of `target` at `level` passes the filter of `spec`.
    macro_rules! passes {
        ($spec:expr, $target:literal, $level:expr) => {{
            let counter = Counter::default();
            let subscriber = tracing_subscriber::registry().with(log_filter($spec)).with(counter.clone());
            tracing::subscriber::with_default(subscriber, || tracing::event!(target: $target, $level, "x"));
            counter.0.load(Ordering::SeqCst) == 1
        }};
    }

    #[test]
    fn debug_and_trace_keep_the_aws_sdk_and_http_stack_at_info() {
        for spec in ["debug", "trace", "ecs_defender_operator=trace,debug"] {
            let spec = Some(spec);
            assert!(passes!(spec, "ecs_defender_operator::reconcile", Level::DEBUG), "{spec:?}");
            assert!(!passes!(spec, "aws_smithy_runtime::client::orchestrator::endpoints", Level::DEBUG), "{spec:?}");
            assert!(!passes!(spec, "aws_sigv4::http_request::sign", Level::TRACE), "{spec:?}");
            assert!(!passes!(spec, "hyper_util::client::legacy::pool", Level::TRACE), "{spec:?}");
            assert!(passes!(spec, "aws_smithy_runtime::client::retries", Level::INFO), "{spec:?}");
        }
    }

    #[test]
    fn a_crate_named_in_rust_log_gets_what_it_asks_for() {
        let spec = Some("info,aws_smithy_runtime=trace");
        assert!(passes!(spec, "aws_smithy_runtime::client::orchestrator", Level::TRACE));
        assert!(!passes!(spec, "aws_smithy_runtime_api::client", Level::DEBUG), "a longer name is another crate");
        assert!(passes!(Some("debug,aws_sigv4::http_request=trace"), "aws_sigv4::http_request::sign", Level::TRACE));
    }

    #[test]
    fn unset_or_invalid_is_info() {
        for spec in [None, Some(""), Some("not a=valid=filter[")] {
            assert!(passes!(spec, "ecs_defender_operator", Level::INFO), "{spec:?}");
            assert!(!passes!(spec, "ecs_defender_operator", Level::DEBUG), "{spec:?}");
        }
    }
}
