//! meshsec sidecar.
fn main() {}
