//! `cargo xtask test`: install what the tests need, then run every test in the workspace.
//!
//! Extra arguments go to `cargo test` unchanged (`cargo xtask test -p hark-server`). The exit
//! code is cargo's, so CI fails exactly when a test fails.

use crate::system_packages;
use crate::workspace::{self, ChildOutcome};

pub fn run(extra_args: &[String]) -> anyhow::Result<ChildOutcome> {
    system_packages::ensure_installed(system_packages::SYSTEM_PACKAGES)?;

    let mut cargo_test = workspace::cargo_command()?;
    cargo_test
        .args(["test", "--workspace", "--locked"])
        .args(extra_args)
        .env("RUST_BACKTRACE", "1");
    println!("xtask: running {}", workspace::describe(&cargo_test));
    workspace::run_to_completion(&mut cargo_test)
}
