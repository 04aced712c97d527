//! `cargo xtask bundle`: Hark's installable packages, built offline into `target/bundle/`.
//!
//! - `hark_VERSION_amd64.deb` and `hark-VERSION-1.x86_64.rpm`, the desktop app: Tauri's bundler
//!   (the npm package `@tauri-apps/cli`, a prebuilt binary installed from ui/package-lock.json)
//!   packs the `desktop` profile's binary, stripped, with src-tauri/packaging's desktop entry
//!   (its `Exec` passes the link, `%u`, which the bundler's own entry drops) and AppStream file.
//!   The bundler always gzips a .deb's files, which leaves the app above 8 MiB, so the .deb is
//!   unpacked and packed again with xz, as Debian's own packages are.
//! - `hark-server_VERSION_amd64.deb`: the server as a systemd service, put together here with
//!   dpkg-deb from crates/server/packaging (no cargo-deb to build first).
//!
//! AppImage, Flatpak and Snap are not made: their tools download runtimes from outside the
//! package registries this project builds from.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::system_packages;
use crate::workspace;

/// Where the packages land, under the target directory.
pub const OUT_DIR: &str = "bundle";

/// The version every package carries: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What packing needs besides the build's packages: `strip` (binutils), `dpkg-deb` (dpkg) and
/// `dpkg-shlibdeps` (dpkg-dev), xz.
pub const BUNDLE_PACKAGES: &[&str] = &["binutils", "dpkg-dev", "xz-utils"];

/// The three packages' paths.
pub struct Packages {
    pub desktop_deb: PathBuf,
    pub desktop_rpm: PathBuf,
    pub server_deb: PathBuf,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = args.first() {
        bail!("`cargo xtask bundle` takes no arguments (got `{unknown}`)");
    }
    let packages = build()?;
    println!("xtask: the packages:");
    for path in [&packages.desktop_deb, &packages.desktop_rpm, &packages.server_deb] {
        let size = fs::metadata(path)?.len();
        println!("  {} ({:.2} MiB)", path.display(), size as f64 / (1024.0 * 1024.0));
    }
    Ok(())
}

/// Installs what packing needs and builds the UI, then [`pack`]s.
pub fn build() -> anyhow::Result<Packages> {
    let mut needed = system_packages::SYSTEM_PACKAGES.to_vec();
    needed.extend_from_slice(BUNDLE_PACKAGES);
    system_packages::ensure_installed(&needed)?;
    step("installing the UI's npm packages from ui/package-lock.json (the bundler among them)", workspace::npm_command(&["ci", "--no-audit", "--no-fund"])?)?;
    step("building the UI into ui/dist (the app embeds it)", workspace::npm_command(&["run", "build"])?)?;
    pack()
}

/// Builds the binaries and all three packages, once the system's packages, the UI's npm
/// packages and `ui/dist` are in place (`cargo xtask test` has done that by then).
pub fn pack() -> anyhow::Result<Packages> {
    let root = workspace::root()?;
    let target = root.join("target");
    // Apart: built together, cargo would give the app's embedded server the features the
    // hark-server program has (PostgreSQL, NATS), which the app does not use and its package
    // has no room for.
    for package in ["hark-desktop", "hark-server"] {
        let mut cargo = workspace::cargo_command()?;
        cargo.args(["build", "--profile", "desktop", "--locked", "-p", package]);
        step(&format!("building {package} (the `desktop` profile)"), cargo)?;
    }

    let out = target.join(OUT_DIR);
    fs::create_dir_all(&out)?;
    let scratch = target.join("bundle-work");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("clearing {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch)?;
    let copyright = scratch.join("copyright");
    fs::write(&copyright, debian_copyright(&fs::read_to_string(root.join("LICENSE")).context("reading LICENSE")?))?;

    let (desktop_deb, desktop_rpm) = desktop_packages(&root, &target.join("desktop").join("hark-desktop"), &scratch, &copyright, &out)?;
    let server_deb = server_package(&root, &target.join("desktop").join("hark-server"), &scratch, &copyright, &out)?;
    Ok(Packages { desktop_deb, desktop_rpm, server_deb })
}

/// The app's .deb and .rpm, by Tauri's bundler, the .deb repacked with xz.
fn desktop_packages(root: &Path, binary: &Path, scratch: &Path, copyright: &Path, out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    // The bundler packs `<cargo's target dir>/release/hark-desktop`; a target dir of its own
    // (CARGO_TARGET_DIR, which its `cargo metadata` honours) lets it pack the stripped copy of
    // the `desktop` profile's binary without a build of its own.
    let bundler_target = scratch.join("tauri");
    let release = bundler_target.join("release");
    fs::create_dir_all(&release)?;
    let mut strip = Command::new("strip");
    strip.arg("--strip-all").arg("-o").arg(release.join("hark-desktop")).arg(binary);
    step("stripping hark-desktop", strip)?;

    // The copyright file needs an absolute path, so it is added here rather than in
    // tauri.conf.json.
    let extra = format!(
        r#"{{"bundle":{{"linux":{{"deb":{{"files":{{"/usr/share/doc/hark/copyright":{}}}}}}}}}}}"#,
        json_string(&copyright.display().to_string())
    );
    let mut tauri = Command::new(root.join("ui").join("node_modules").join(".bin").join("tauri"));
    tauri
        .args(["bundle", "--ci", "--no-sign", "--bundles", "deb,rpm", "--config", &extra])
        .env("CARGO_TARGET_DIR", &bundler_target)
        .current_dir(root.join("src-tauri"));
    step("packing the app (Tauri's bundler: .deb and .rpm)", tauri)?;

    let bundles = release.join("bundle");
    let made_deb = only_file(&bundles.join("deb"), ".deb")?;
    let made_rpm = only_file(&bundles.join("rpm"), ".rpm")?;

    let unpacked = scratch.join("deb-root");
    let mut unpack = Command::new("dpkg-deb");
    unpack.arg("-R").arg(&made_deb).arg(&unpacked);
    step("unpacking the bundler's .deb", unpack)?;
    let deb = out.join(format!("hark_{VERSION}_amd64.deb"));
    pack_deb(&unpacked, &deb)?;
    let rpm = out.join(format!("hark-{VERSION}-1.x86_64.rpm"));
    fs::copy(&made_rpm, &rpm)?;
    Ok((deb, rpm))
}

/// The server's .deb, staged from crates/server/packaging.
fn server_package(root: &Path, binary: &Path, scratch: &Path, copyright: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let packaging = root.join("crates").join("server").join("packaging");
    let stage = scratch.join("server-root");
    let place = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        let to = stage.join(to);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        set_mode(&to, mode)
    };
    fs::create_dir_all(stage.join("usr/bin"))?;
    let mut strip = Command::new("strip");
    strip.arg("--strip-all").arg("-o").arg(stage.join("usr/bin/hark-server")).arg(binary);
    step("stripping hark-server", strip)?;
    // Debian 12 keeps packaged units in /lib (its /usr merge came later).
    place(&packaging.join("hark-server.service"), "lib/systemd/system/hark-server.service", 0o644)?;
    place(&packaging.join("server.toml"), "etc/hark/server.toml", 0o644)?;
    place(copyright, "usr/share/doc/hark-server/copyright", 0o644)?;
    gzip_into(&packaging.join("hark-server.1"), &stage.join("usr/share/man/man1/hark-server.1.gz"))?;
    gzip_into(&root.join("docs").join("PROTOCOL.md"), &stage.join("usr/share/doc/hark-server/PROTOCOL.md.gz"))?;
    for script in ["postinst", "prerm", "postrm"] {
        place(&packaging.join(script), &format!("DEBIAN/{script}"), 0o755)?;
    }
    fs::write(stage.join("DEBIAN/conffiles"), "/etc/hark/server.toml\n")?;

    // Versioned library dependencies, as dpkg-shlibdeps reads them off the binary.
    fs::create_dir_all(stage.join("debian"))?;
    fs::write(stage.join("debian/control"), "Source: hark\n\nPackage: hark-server\nArchitecture: any\n")?;
    let shlibs = Command::new("dpkg-shlibdeps")
        .args(["-O", "usr/bin/hark-server"])
        .current_dir(&stage)
        .output()
        .context("running dpkg-shlibdeps (Debian package dpkg-dev)")?;
    if !shlibs.status.success() {
        bail!("dpkg-shlibdeps failed: {}", String::from_utf8_lossy(&shlibs.stderr));
    }
    let libraries = String::from_utf8_lossy(&shlibs.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends=").map(str::to_owned))
        .context("dpkg-shlibdeps gave no shlibs:Depends")?;
    fs::remove_dir_all(stage.join("debian"))?;

    let installed_kib = tree_size(&stage)?.div_ceil(1024);
    let control = format!(
        "Package: hark-server\n\
         Version: {VERSION}\n\
         Architecture: amd64\n\
         Maintainer: The Hark developers <hark@invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {libraries}, adduser\n\
         Section: comm\n\
         Priority: optional\n\
         Description: Hark signaling server\n \
         The server behind Hark, the self-hostable softphone: accounts, contacts and presence,\n \
         the ringing and answering of calls, and call records, over signaling protocol v1.\n \
         Installed, it runs as the systemd service hark-server, as its own user, on\n \
         127.0.0.1:7600 with its data in /var/lib/hark; see hark-server(1).\n"
    );
    fs::write(stage.join("DEBIAN/control"), control)?;
    let deb = out.join(format!("hark-server_{VERSION}_amd64.deb"));
    pack_deb(&stage, &deb)?;
    Ok(deb)
}

/// `dpkg-deb --build` with xz at its best, every file owned by root.
fn pack_deb(tree: &Path, deb: &Path) -> anyhow::Result<()> {
    let mut pack = Command::new("dpkg-deb");
    pack.args(["--root-owner-group", "-Zxz", "-z9", "--build"]).arg(tree).arg(deb);
    step(&format!("packing {}", deb.file_name().and_then(|n| n.to_str()).unwrap_or("the .deb")), pack)
}

/// Runs one step, saying what it does; a failure ends the bundle.
fn step(what: &str, mut command: Command) -> anyhow::Result<()> {
    println!("xtask: {what}: {}", workspace::describe(&command));
    match workspace::run_to_completion(&mut command)? {
        workspace::ChildOutcome::Success => Ok(()),
        workspace::ChildOutcome::Failed(code) => bail!("{what} failed (exit code {code})"),
    }
}

/// The one file in `dir` whose name ends with `suffix`.
fn only_file(dir: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one {suffix} in {}, found {found:?}", dir.display()),
    }
}

fn gzip_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    // `-n`: no name or time stamp inside, so the same input packs to the same bytes.
    let output = Command::new("gzip").args(["-9", "-n", "-c"]).arg(from).output().context("running gzip")?;
    if !output.status.success() {
        bail!("gzip {} failed", from.display());
    }
    fs::write(to, output.stdout)?;
    set_mode(to, 0o644)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("setting the mode of {}", path.display()))
}

/// Bytes of every file under `dir` but DEBIAN/.
fn tree_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "DEBIAN" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tree_size(&entry.path())?;
        } else {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// `/usr/share/doc/PACKAGE/copyright` in Debian's machine-readable form, with the licence's
/// whole text (Debian's common-licenses has no AGPL to point at).
pub fn debian_copyright(license: &str) -> String {
    let mut text = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: Hark\n\
         \n\
         Files: *\n\
         Copyright: 2026 The Hark developers\n\
         License: AGPL-3.0-or-later\n",
    );
    for line in license.lines() {
        let line = line.trim_end();
        // An empty line would end the paragraph; the format writes it as a lone dot.
        text.push_str(if line.is_empty() { " ." } else { " " });
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copyright_file_keeps_paragraph_breaks_inside_the_licence() {
        let text = debian_copyright("Title\n\nFirst line\nsecond line\n");
        assert!(text.ends_with("License: AGPL-3.0-or-later\n Title\n .\n First line\n second line\n"), "{text}");
    }

    #[test]
    fn paths_become_json_strings() {
        assert_eq!(json_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
    }
}
