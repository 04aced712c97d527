//! Where the workspace is and how xtask runs child processes.
//!
//! Every command xtask starts runs from the workspace root, with the same `cargo` that runs
//! xtask (the `CARGO` variable cargo sets), so a toolchain picked by rustup is honoured.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use anyhow::Context;

/// How a child process ended, as far as xtask's own exit code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildOutcome {
    Success,
    /// The child failed; xtask exits with this code (1 when the child was killed by a signal).
    Failed(u8),
}

impl From<ExitStatus> for ChildOutcome {
    fn from(status: ExitStatus) -> Self {
        if status.success() {
            ChildOutcome::Success
        } else {
            let code = status.code().unwrap_or(1);
            ChildOutcome::Failed(u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1))
        }
    }
}

/// The workspace root: the parent of xtask's own manifest directory.
pub fn root() -> anyhow::Result<PathBuf> {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir
        .parent()
        .map(PathBuf::from)
        .with_context(|| format!("{} has no parent directory", xtask_dir.display()))
}

/// The cargo that runs xtask (`CARGO`), or `cargo` from `PATH`.
pub fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A `cargo` command that runs in the workspace root.
pub fn cargo_command() -> anyhow::Result<Command> {
    let mut command = Command::new(cargo_program());
    command.current_dir(root()?);
    Ok(command)
}

/// An `npm ARGS…` command that runs in the UI's folder (`ui/`).
pub fn npm_command(args: &[&str]) -> anyhow::Result<Command> {
    let mut command = Command::new("npm");
    command.args(args).current_dir(root()?.join("ui"));
    Ok(command)
}

/// Runs `command` to completion, inheriting stdin/stdout/stderr.
pub fn run_to_completion(command: &mut Command) -> anyhow::Result<ChildOutcome> {
    let status = command
        .status()
        .with_context(|| format!("could not start {}", describe(command)))?;
    Ok(status.into())
}

/// `program arg arg …`, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `program` is an executable file somewhere on `PATH`.
pub fn is_on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
