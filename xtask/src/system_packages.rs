//! The Debian packages Hark's build and tests need, and installing the missing ones.
//!
//! A package counts as present when `dpkg-query` reports it "install ok installed". Only missing
//! packages are installed: `apt-get update` once, then one `apt-get install`. `sudo` is used
//! only when xtask is not root and `sudo` exists; as root (containers, CI) apt-get runs directly.

use std::process::Command;

use anyhow::{bail, Context};

use crate::workspace::{self, ChildOutcome};

/// Debian packages needed to build and test the workspace.
/// build-essential: the C compiler and linker Rust uses; pkg-config: finds system libraries;
/// cmake: builds the libopus that the `opus` crate bundles; libasound2-dev: cpal's ALSA backend;
/// libvpx-dev: the VP8 codec; libclang-dev: bindgen for the camera's V4L2 bindings;
/// pulseaudio and libasound2-plugins: a null-sink sound server for the real-audio-path test;
/// coturn: the TURN server of the relay test; tinyproxy: the proxy of the proxy test.
pub const SYSTEM_PACKAGES: &[&str] = &[
    // Rust crates that build C (opus, the sound and web views' -sys crates).
    "build-essential",
    "pkg-config",
    "cmake",
    "libasound2-dev",
    // VP8 (hark-video links Debian's libvpx through env-libvpx-sys).
    "libvpx-dev",
    // The camera: nokhwa's V4L2 bindings are generated at build time by bindgen, which loads libclang.
    "libclang-dev",
    // The desktop app (Tauri on WebKitGTK): build and run.
    "libwebkit2gtk-4.1-dev",
    "libsoup-3.0-dev",
    "libayatana-appindicator3-dev",
    "librsvg2-dev",
    "libxdo-dev",
    "libssl-dev",
    // Tests: a real audio path, a real TURN relay, a real browser, the app under a virtual X
    // server driven through WebKit's WebDriver, with a session bus.
    "pulseaudio",
    "libasound2-plugins",
    "coturn",
    "chromium",
    "webkit2gtk-driver",
    "xvfb",
    "xauth",
    "x11-apps",
    // A window manager and ways to minimise and close through it (the mini window, the tray).
    "openbox",
    "xdotool",
    "wmctrl",
    "dbus",
    "dbus-x11",
    // Video over a real lossy, capped path: a network namespace (ip) with nftables rules.
    "iproute2",
    "nftables",
    // Signaling through a real HTTP proxy (CONNECT), as from an office network.
    "tinyproxy",
    // The server's storage contract, run against a throw-away PostgreSQL as well as SQLite, and
    // delivery between servers through a throw-away nats-server.
    "postgresql",
    "nats-server",
    // The packages' tests: links opened as desktops do (xdg-open, GIO's `gio open`), desktop
    // entries checked and indexed, the .rpm read (rpm, rpm2cpio, cpio), the server's unit checked
    // (systemd-analyze; systemd itself is not started).
    "xdg-utils",
    "libglib2.0-bin",
    "desktop-file-utils",
    "rpm",
    "cpio",
    "systemd",
];

pub fn ensure_installed(packages: &[&str]) -> anyhow::Result<()> {
    if !workspace::is_on_path("dpkg-query") {
        println!(
            "xtask: dpkg-query not found (not Debian?); make sure these are installed: {}",
            packages.join(" ")
        );
        return Ok(());
    }
    let mut missing = Vec::new();
    for &package in packages {
        if !is_installed(package)? {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }

    let missing = missing.join(" ");
    println!("xtask: installing {missing} (Debian packages the build and tests need, not installed yet)");
    run_as_root(&["apt-get", "update"])?;
    let mut install = vec!["apt-get", "install", "-y", "--no-install-recommends"];
    install.extend(missing.split(' '));
    run_as_root(&install)
}

fn is_installed(package: &str) -> anyhow::Result<bool> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .with_context(|| format!("could not run dpkg-query for {package}"))?;
    // dpkg-query exits non-zero for a package it has never heard of: that is "missing", not an error.
    Ok(output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "install ok installed")
}

/// Runs an apt-get command non-interactively, through sudo when needed and available.
fn run_as_root(apt_args: &[&str]) -> anyhow::Result<()> {
    let mut command = if !is_root() && workspace::is_on_path("sudo") {
        let mut sudo = Command::new("sudo");
        sudo.arg("DEBIAN_FRONTEND=noninteractive").args(apt_args);
        sudo
    } else {
        let mut direct = Command::new(apt_args[0]);
        direct.args(&apt_args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        direct
    };
    println!("xtask: running {}", workspace::describe(&command));
    match workspace::run_to_completion(&mut command)? {
        ChildOutcome::Success => Ok(()),
        ChildOutcome::Failed(code) => bail!("{} failed with exit code {code}", workspace::describe(&command)),
    }
}

pub fn is_root() -> bool {
    // std has no getuid; /proc/self/status carries "Uid:\treal\teffective\t…" on Linux.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|effective| effective == "0"))
        })
        .unwrap_or(false)
}
