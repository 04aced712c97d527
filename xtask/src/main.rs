//! `cargo xtask …`: the one entry point for people working on Hark.
//!
//! Each subcommand lives in its own module; this file only parses the first argument and
//! dispatches. When a child process fails, xtask exits with that child's exit code so that
//! `.ci/run` and shells see the real outcome.

mod assets;
mod bench;
mod bundle;
mod icons;
mod run_app;
mod run_tests;
mod system_packages;
mod workspace;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [args…]

commands:
  run   [--headless [--listen ADDR] [--data-dir DIR]]
        build and start Hark: the desktop app with its built-in server and echo service;
        --headless: the signaling server and the echo service only, no display needed
        (default 127.0.0.1:7600, data in $XDG_DATA_HOME/hark/server or ~/.local/share/hark/server)
  test  [cargo test args…]
        install the Debian packages (apt-get) and npm packages the tests need, then run every
        test: UI unit tests, Rust tests, the UI in Chromium, Chromium calling hark-cli, the app
        end to end under Xvfb;
        with args, only `cargo test --workspace --locked [args…]`, e.g. `cargo xtask test -p hark-server`
  bench [args…]
        run benchmarks: `cargo xtask bench signaling`, `call`, `app`, `video`
        (figures in docs/BENCHMARKS.md)
  bundle
        build the installable packages into target/bundle/: the app's .deb and .rpm, and the
        server's .deb (a systemd service); offline, with Tauri's bundler from the UI's lockfile
  assets [--check]
        synthesize the bundled ringtones into assets/ringtones/ (--check: verify them instead)
  help  print this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    let outcome = match command {
        "run" => run_app::run(rest),
        "test" => run_tests::run(rest),
        "bench" => bench::run(rest).map(|()| workspace::ChildOutcome::Success),
        "bundle" => bundle::run(rest).map(|()| workspace::ChildOutcome::Success),
        "assets" => assets::run(rest).map(|()| workspace::ChildOutcome::Success),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(workspace::ChildOutcome::Success)
        }
        unknown => {
            eprintln!("xtask: unknown command `{unknown}`\n");
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(workspace::ChildOutcome::Success) => ExitCode::SUCCESS,
        Ok(workspace::ChildOutcome::Failed(code)) => ExitCode::from(code),
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
