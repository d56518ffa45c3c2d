//! meshsec operator.
fn main() {}
