//! NAT pipeline benches.
fn main() {}
