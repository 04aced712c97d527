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

/// The frame number stamped on each frame of a Y4M recording (`None` where it does not read), in
/// order, and the recording's size.
pub fn recorded(path: &std::path::Path) -> (Vec<Option<u32>>, (u32, u32)) {
    let mut reader = hark_video::y4m::Y4mReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let size = (reader.width(), reader.height());
    let mut numbers = Vec::new();
    while let Some(frame) = reader.read_frame().unwrap() {
        numbers.push(hark_video::pattern::read_number(&frame));
    }
    (numbers, size)
}
