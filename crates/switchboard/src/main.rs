//! The `switchboard` binary: one command for every Switchboard service.
fn main() {}
