//! What the hark-cli tests share.
#![allow(dead_code)]

use std::process::{Child, Command};

/// A child process killed when the test lets go of it.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// hark-cli against `server`, with a password, registering, bound to loopback; `args` first.
pub fn cli(server: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hark-cli"));
    command.args(args).args(["--server", server, "--password", "password123", "--register", "--bind", "127.0.0.1:0"]);
    command
}
