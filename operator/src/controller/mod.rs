//! The two controllers (controller-rs shape): `tunnel` reconciles
//! IPsecTunnels into PSK Secrets, status and rotations; `node` admits
//! IPsecNodes (node ids) and keeps departed nodes' ids reserved.

pub mod node;
pub mod tunnel;

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::finalizer;
use tracing::{debug, warn};

use crate::error::Error;
use crate::metrics::ControllerKind;

/// Unwrap our own error from the finalizer helper's wrapper, so metrics
/// and logs name the real cause.
fn from_finalizer(e: finalizer::Error<Error>) -> Error {
    match e {
        finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => inner,
        other => Error::Finalizer(Box::new(other)),
    }
}

/// Shared error policy: count, log, requeue (waits soon, failures later).
fn policy(
    kind: ControllerKind,
    name: &str,
    error: &Error,
    metrics: &crate::metrics::Metrics,
) -> Action {
    metrics.error(kind.clone(), error);
    if error.is_wait() {
        debug!(controller = ?kind, object = name, reason = error.metric_label(), "{error}");
        Action::requeue(Duration::from_secs(2))
    } else {
        warn!(controller = ?kind, object = name, error = %error, "reconcile failed");
        Action::requeue(Duration::from_secs(10))
    }
}
