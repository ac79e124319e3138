//! Maglev build bench (filled in by the Maglev work).
fn main() {}
