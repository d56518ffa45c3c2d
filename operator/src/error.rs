//! The operator's one error type.

use thiserror::Error;

/// Everything a reconcile can fail with.
#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),

    #[error("finalizer error: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("object has no name")]
    MissingName,

    #[error("status write for {name} lost a race (stale cache); retrying with fresh state")]
    Conflict { name: String },

    #[error(
        "IPsecNode {node} is still listed by a retained epoch of tunnel {tunnel}; keeping it (and its node id) until that epoch is retired"
    )]
    Retained { node: String, tunnel: String },

    #[error("tunnel {tunnel} is being deleted; waiting for {pending} node(s) to tear down")]
    TeardownPending { tunnel: String, pending: usize },

    #[error("the operating system random source failed: {0}")]
    Random(String),

    #[error("node id space exhausted: {0}")]
    Ids(#[from] crate::ids::IdError),
}

impl Error {
    /// A short, bounded label for the `errors` metric.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::MissingName => "missing_name",
            Error::Conflict { .. } => "conflict",
            Error::Retained { .. } => "retained",
            Error::TeardownPending { .. } => "teardown_pending",
            Error::Random(_) => "random",
            Error::Ids(_) => "ids_exhausted",
        }
    }

    /// Expected waits, not failures: logged at debug, retried soon.
    #[must_use]
    pub fn is_wait(&self) -> bool {
        matches!(
            self,
            Error::Retained { .. } | Error::TeardownPending { .. } | Error::Conflict { .. }
        )
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Error {
        match &e {
            kube::Error::Api(s) if s.code == 409 => Error::Conflict {
                name: s.message.clone(),
            },
            _ => Error::Kube(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
