//! The rotation state machine: pure data and a pure `step` function.
//!
//! Nothing here does I/O or reads a clock. The controller observes the
//! cluster (IPsecNode acknowledgements, the manual annotation, the time),
//! calls [`step`], persists the returned [`TunnelState`] in the tunnel's
//! status and publishes the returned [`Note`]s as Events. Because every
//! decision is a function of the persisted state and the observation, an
//! operator restart or a leader failover resumes exactly where the status
//! says, and re-running a step on the same input never advances twice.

mod state;
mod step;
#[cfg(test)]
mod tests;

pub use state::{
    Epoch, Member, NodeAck, Phase, Policy, RotatingPhase, Rotation, Stamp, Trigger, TunnelState,
    Usage,
};
pub use step::{Decision, Note, Observation, step};
