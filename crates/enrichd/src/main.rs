//! enrichd
fn main() {}
