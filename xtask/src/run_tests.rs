//! `cargo xtask test`: install what the tests need, then run every test in the workspace.
//!
//! In order, each step saying what it does: the Debian packages (apt-get); the UI's npm packages
//! from the lockfile, its unit tests (vitest) and its build (the app embeds `ui/dist`); every
//! Rust test but the end-to-end ones; the server's integration suite again against a 3-node
//! cluster (`HARK_TEST_NODES=3`); the UI in a real browser (Debian Chromium), and Chromium's
//! own WebRTC in video calls with hark-cli (ui/tests/browser/interop.test.mjs); then the real
//! app end to end under `dbus-run-session -- xvfb-run`, driven by tauri-driver (installed from
//! crates into `target/tools`); then, as root, the packages built (`cargo xtask bundle`),
//! installed, run and purged. The first failing step's exit code is xtask's.
//!
//! Extra arguments go to `cargo test` unchanged and run only that (`cargo xtask test -p
//! hark-server`), after the packages and the UI build the desktop crate needs.

use std::process::Command;

use crate::workspace::{self, ChildOutcome};
use crate::{bundle, system_packages};

/// The server's integration tests that run against a 3-node cluster too: every one that works
/// through the protocol (the others test one process's storage, restarts and command line).
/// Each name is the test of hark-server alone, so the step can select the same packages as the
/// step before (same features: nothing is built again) and run only these.
const CLUSTER_SUITES: &[&str] = &["call_flows", "sessions", "hostile", "http_api", "tls"];

/// The WebDriver proxy for Tauri apps, pinned (STACK.md).
const TAURI_DRIVER_VERSION: &str = "2.1.0";

pub fn run(extra_args: &[String]) -> anyhow::Result<ChildOutcome> {
    // With what packing needs too: the package tests come last.
    let mut needed = system_packages::SYSTEM_PACKAGES.to_vec();
    needed.extend_from_slice(bundle::BUNDLE_PACKAGES);
    system_packages::ensure_installed(&needed)?;
    let root = workspace::root()?;

    let mut steps: Vec<(&str, Command)> = Vec::new();
    steps.push(("installing the UI's npm packages from ui/package-lock.json", workspace::npm_command(&["ci", "--no-audit", "--no-fund"])?));
    if extra_args.is_empty() {
        steps.push(("UI type check (svelte-check)", workspace::npm_command(&["run", "check"])?));
        steps.push(("UI unit tests (vitest)", workspace::npm_command(&["test"])?));
    }
    steps.push(("building the UI into ui/dist (the app embeds it)", workspace::npm_command(&["run", "build"])?));
    let mut cargo_test = workspace::cargo_command()?;
    cargo_test.args(["test", "--workspace", "--locked"]).env("RUST_BACKTRACE", "1");
    if extra_args.is_empty() {
        cargo_test.args(["--exclude", "hark-e2e"]);
    } else {
        cargo_test.args(extra_args);
    }
    steps.push(("every Rust test but the end-to-end ones", cargo_test));
    if extra_args.is_empty() {
        // The same test programs, built once: clients spread over three nodes on a throw-away
        // nats-server and PostgreSQL, each started by the tests.
        let mut cluster = workspace::cargo_command()?;
        cluster
            .args(["test", "--workspace", "--locked", "--exclude", "hark-e2e"])
            .args(CLUSTER_SUITES.iter().flat_map(|suite| ["--test", suite]))
            .env("HARK_TEST_NODES", "3")
            .env("RUST_BACKTRACE", "1");
        steps.push(("the server's integration suite again, against a 3-node cluster", cluster));
    }
    if extra_args.is_empty() {
        let mut build = workspace::cargo_command()?;
        build.args(["build", "--locked", "-p", "hark-desktop", "-p", "hark-cli", "-p", "hark-server"]);
        steps.push(("building hark-desktop, hark-cli and hark-server for the browser and end-to-end tests", build));
        steps.push((
            "the UI in Debian Chromium (playwright-core, IPC mocked), and Chromium's WebRTC calling hark-cli",
            workspace::npm_command(&["run", "test:browser"])?,
        ));
        let tauri_driver = tauri_driver_path()?;
        if !tauri_driver.exists() {
            steps.push(("installing tauri-driver into target/tools", install_tauri_driver()?));
        }
        let mut e2e = Command::new("dbus-run-session");
        e2e.args(["--", "xvfb-run", "-a", "-s", "-screen 0 1280x800x24"])
            .arg(workspace::cargo_program())
            .args(["test", "--locked", "-p", "hark-e2e", "--", "--nocapture"])
            .env("TAURI_DRIVER", &tauri_driver)
            .env("RUST_BACKTRACE", "1")
            .current_dir(&root);
        steps.push(("the real app end to end under Xvfb (screenshots in target/e2e/)", e2e));
    }
    for (what, mut command) in steps {
        println!("xtask: {what}: {}", workspace::describe(&command));
        match workspace::run_to_completion(&mut command)? {
            ChildOutcome::Success => {}
            failed => return Ok(failed),
        }
    }
    if extra_args.is_empty() {
        return installed_packages(&root);
    }
    Ok(ChildOutcome::Success)
}

/// Builds the packages (`cargo xtask bundle`) and installs, runs and purges them
/// (tests/tests/package.rs). Installing is system-wide, so this part runs only as root, as CI
/// runs; elsewhere it says so and is skipped.
fn installed_packages(root: &std::path::Path) -> anyhow::Result<ChildOutcome> {
    if !system_packages::is_root() {
        println!("xtask: the package tests install packages system-wide, so they run only as root (as in CI): skipped");
        return Ok(ChildOutcome::Success);
    }
    // The system's packages, the UI's npm packages and ui/dist are in place by now.
    println!("xtask: building the packages (cargo xtask bundle)");
    bundle::pack()?;
    let mut tests = Command::new("dbus-run-session");
    tests
        .args(["--", "xvfb-run", "-a", "-s", "-screen 0 1280x800x24"])
        .arg(workspace::cargo_program())
        .args(["test", "--locked", "-p", "hark-e2e", "--test", "package", "--", "--ignored", "--nocapture", "--test-threads=1"])
        .env("HARK_PACKAGES", root.join("target").join(bundle::OUT_DIR))
        .env("TAURI_DRIVER", tauri_driver_path()?)
        .env("RUST_BACKTRACE", "1")
        .current_dir(root);
    println!("xtask: the packages installed, run and purged: {}", workspace::describe(&tests));
    workspace::run_to_completion(&mut tests)
}


fn tauri_driver_path() -> anyhow::Result<std::path::PathBuf> {
    Ok(workspace::root()?.join("target").join("tools").join("bin").join("tauri-driver"))
}

fn install_tauri_driver() -> anyhow::Result<Command> {
    let mut install = workspace::cargo_command()?;
    install
        .args(["install", "--locked", "tauri-driver", "--version", TAURI_DRIVER_VERSION, "--root"])
        .arg(workspace::root()?.join("target").join("tools"));
    Ok(install)
}

/// tauri-driver's path, installing it first when missing.
pub fn tauri_driver() -> anyhow::Result<std::path::PathBuf> {
    let path = tauri_driver_path()?;
    if !path.exists() {
        let mut install = install_tauri_driver()?;
        println!("xtask: installing tauri-driver into target/tools: {}", workspace::describe(&install));
        if !install.status()?.success() {
            anyhow::bail!("installing tauri-driver failed");
        }
    }
    Ok(path)
}
