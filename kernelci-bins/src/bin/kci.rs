//! kci
fn main() {}
