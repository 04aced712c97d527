//! The installable packages, installed for real: `cargo xtask test` builds them (`cargo xtask
//! bundle`) and runs these tests as root inside `dbus-run-session -- xvfb-run`, with
//! `HARK_PACKAGES` naming the folder that holds them.
//!
//! - The app's .deb: its size, fields and files; installed with `apt-get install ./…` (its
//!   dependencies resolved by apt); the desktop entry validated and registered for `hark:`; the
//!   installed binary's `--version`; its first window under Xvfb, screenshot; a `hark:` link
//!   opened with `xdg-open` reaching the running app and, confirmed, calling the echo service
//!   (the call runs, then is hung up), and one opened through GIO (what GNOME
//!   does) starting it cold with the link; "start at login" turned on, off and on in Settings
//!   (its autostart entry written and removed), and the entry's command starting Hark in the
//!   tray with no window; "Open tel: links with Hark" taking `tel:` from the user's other dialer
//!   (`xdg-mime`), a `tel:` number opened with `xdg-open` offered as a call, and the dialer given
//!   back; an administrator's `/etc/hark/policy.toml` followed by the installed app (read at
//!   launch, the locked setting shown locked with the reason); then purged, and the system's
//!   files compared with before it came: nothing of it is left outside the user's own data.
//! - The app's .rpm, as far as Debian allows: `rpm -qlp` and `--requires`, and its desktop entry.
//! - The server's .deb: installed, its user, data folder and enabled service; the service's
//!   command run as its user answers on 127.0.0.1:7600 and signs in an account made with
//!   `hark-server user add`; removed (the data stays), purged (the data still stays), and purged
//!   with `HARK_SERVER_PURGE_DATA=yes` (it goes).
//!
//! They change the machine (that is what they test), so they are ignored by a plain `cargo test`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use hark_e2e::{sign_up, target_dir, timer_seconds, wait_for, AppUnderTest};

const SHORT: Duration = Duration::from_secs(20);
/// A call's setup and teardown.
const CALL: Duration = Duration::from_secs(40);
/// The bound on the app's .deb.
const MAX_DEB_BYTES: u64 = 8 * 1024 * 1024;
/// Icon sizes the app ships (assets/icons, tauri.conf.json).
const ICON_SIZES: &[u32] = &[16, 24, 32, 48, 64, 128, 256, 512];

fn packages_dir() -> Result<PathBuf> {
    std::env::var_os("HARK_PACKAGES")
        .map(PathBuf::from)
        .context("HARK_PACKAGES is not set: `cargo xtask test` builds the packages and runs this test")
}

/// The one file in the packages folder starting with `prefix` and ending with `suffix`.
fn package(prefix: &str, suffix: &str) -> Result<PathBuf> {
    let dir = packages_dir()?;
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix)))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one {prefix}*{suffix} in {}, found {found:?}", dir.display()),
    }
}

/// Runs a command to success and gives its standard output.
fn output(program: &str, args: &[&str]) -> Result<String> {
    output_with(Command::new(program).args(args))
}

fn output_with(command: &mut Command) -> Result<String> {
    let out = command.stdin(Stdio::null()).output().with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apt_get(args: &[&str]) -> Result<String> {
    output_with(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// A copy of `deb` where apt's unprivileged download user can read it (it warns otherwise).
fn readable_copy(deb: &Path) -> Result<(tempfile::TempDir, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("hark-package").tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.path().join(deb.file_name().context("a package file name")?);
    std::fs::copy(deb, &copy)?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644))?;
    Ok((dir, copy))
}

/// Every path under the system's folders for programs and their settings. (/var is left out:
/// apt and dpkg keep their records there, and the X server its keymaps.)
fn system_files() -> Result<BTreeSet<PathBuf>> {
    fn walk(dir: &Path, into: &mut BTreeSet<PathBuf>) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
        for entry in entries.flatten() {
            let path = entry.path();
            into.insert(path.clone());
            if entry.file_type()?.is_dir() {
                walk(&path, into)?;
            }
        }
        Ok(())
    }
    let mut all = BTreeSet::new();
    for root in ["/usr", "/etc", "/opt", "/lib"] {
        if !Path::new(root).is_symlink() {
            walk(Path::new(root), &mut all)?;
        }
    }
    Ok(all)
}

/// What both of the app's packages install: the binary, the desktop entry, AppStream, every
/// icon, and the licence where each kind of system keeps it.
fn app_files(licence: &str) -> Vec<String> {
    let mut files: Vec<String> = ["/usr/bin/hark-desktop", "/usr/share/applications/Hark.desktop", "/usr/share/metainfo/org.hark.desktop.metainfo.xml", "/usr/share/doc/hark/policy.toml.example", licence]
        .map(str::to_owned)
        .into();
    files.extend(ICON_SIZES.iter().map(|s| format!("/usr/share/icons/hicolor/{s}x{s}/apps/hark-desktop.png")));
    files
}

fn ensure_root() -> Result<()> {
    let id = output("id", &["-u"])?;
    ensure!(id.trim() == "0", "the package tests install packages, so they run as root (cargo xtask test runs them so)");
    Ok(())
}

#[test]
#[ignore = "installs packages as root: cargo xtask test builds them and runs this"]
fn the_app_package_installs_opens_links_and_purges_clean() -> Result<()> {
    ensure_root()?;
    let deb = package("hark_", "_amd64.deb")?;
    let size = std::fs::metadata(&deb)?.len();
    println!("{}: {size} bytes ({:.2} MiB)", deb.display(), size as f64 / 1048576.0);
    ensure!(size <= MAX_DEB_BYTES, "the app's .deb is {size} bytes, over 8 MiB");

    let fields = output("dpkg-deb", &["-f", &deb.display().to_string(), "Package", "Depends", "Recommends"])?;
    println!("{fields}");
    ensure!(fields.contains("Package: hark\n"), "package name: {fields}");
    for needed in ["libwebkit2gtk-4.1-0", "libgtk-3-0", "libvpx7", "libasound2", "xdg-utils", "libayatana-appindicator3-1"] {
        ensure!(fields.contains(needed), "Depends lacks {needed}: {fields}");
    }
    let contents = output("dpkg-deb", &["-c", &deb.display().to_string()])?;
    for path in app_files("/usr/share/doc/hark/copyright") {
        ensure!(contents.lines().any(|line| line.ends_with(&format!(".{path}"))), "the .deb lacks {path}:\n{contents}");
    }

    // A first install and purge bring in the dependencies, which apt leaves behind on purpose;
    // the comparison that counts is around the second.
    let (_copy_dir, copy) = readable_copy(&deb)?;
    let copy = copy.display().to_string();
    apt_get(&["install", "-y", &copy])?;
    apt_get(&["purge", "-y", "hark"])?;
    let before = system_files()?;

    apt_get(&["install", "-y", &copy])?;
    let outcome = installed_app_works();
    let purged = apt_get(&["purge", "-y", "hark"]);
    outcome?;
    purged?;
    let after = system_files()?;
    let left: Vec<_> = after.difference(&before).collect();
    ensure!(left.is_empty(), "left after the purge: {left:?}");
    let gone: Vec<_> = before.difference(&after).collect();
    ensure!(gone.is_empty(), "the install and purge removed: {gone:?}");
    let cache = std::fs::read_to_string("/usr/share/applications/mimeinfo.cache").unwrap_or_default();
    ensure!(!cache.contains("Hark.desktop"), "the purged app is still a handler in mimeinfo.cache");
    Ok(())
}

/// The checks on the installed app, between its install and its purge.
fn installed_app_works() -> Result<()> {
    let entry = std::fs::read_to_string("/usr/share/applications/Hark.desktop")?;
    println!("{entry}");
    ensure!(entry.lines().any(|l| l == "Exec=hark-desktop %u"), "the desktop entry drops links: {entry}");
    ensure!(entry.lines().any(|l| l == "MimeType=x-scheme-handler/hark;"), "no hark: handler in: {entry}");
    output("desktop-file-validate", &["/usr/share/applications/Hark.desktop"])?;
    let handler = output("xdg-mime", &["query", "default", "x-scheme-handler/hark"])?;
    ensure!(handler.trim() == "Hark.desktop", "xdg-mime names {handler:?} for hark: links");
    let version = output("hark-desktop", &["--version"])?;
    ensure!(version.trim() == format!("hark-desktop {}", env!("CARGO_PKG_VERSION")), "--version said {version:?}");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run_installed_app())
}

async fn run_installed_app() -> Result<()> {
    let shots = target_dir().join("e2e");
    std::fs::create_dir_all(&shots)?;
    let tauri_driver = std::env::var_os("TAURI_DRIVER").map(PathBuf::from).context("TAURI_DRIVER is not set")?;
    let installed = Path::new("/usr/bin/hark-desktop");

    let app = AppUnderTest::prepare(&tauri_driver)?;
    let web = app.session(installed).await?;
    web.wait("[data-testid=signin-form]", Duration::from_secs(30)).await?;
    let first = shots.join("package-01-first-window.png");
    hark_e2e::capture_screen(&first)?;
    ensure!(distinct_colours(&first)? > 8, "the installed app's first window looks blank ({})", first.display());
    sign_up(&web, "alice", "alice's password 1", None).await?;

    // A link clicked while Hark runs: xdg-open (no desktop environment: its generic path, which
    // runs the entry's Exec with the link and waits for it) starts a second instance, which
    // hands the link over and exits.
    let mut open = app.command(Path::new("timeout"));
    open.args(["30", "xdg-open", "hark:call/echo"]).env("BROWSER", "false").env_remove("XDG_CURRENT_DESKTOP");
    output_with(&mut open)?;
    web.wait_text("[data-testid=link-users]", SHORT, |t| t == "echo").await?;
    hark_e2e::capture_screen(&shots.join("package-02-link-offered.png"))?;
    // Yes: the installed app calls the echo service, and the call runs until we hang up.
    web.click_css("[data-testid=link-call]", SHORT).await?;
    web.wait_text("[data-testid=call-timer]", CALL, |t| timer_seconds(t).is_some_and(|s| s >= 1)).await?;
    hark_e2e::capture_screen(&shots.join("package-02b-echo-call.png"))?;
    web.click_css("[data-testid=hangup]", SHORT).await?;
    wait_for("the call view to close", CALL, || async { Ok(web.find("[data-testid=call-view]").await?.is_none().then_some(())) }).await?;

    // "Start Hark when I log in" writes an autostart entry for the installed binary, and
    // turning it off takes it away; "then wait in the tray" is saved beside it.
    let autostart = app.home.path().join("config/autostart/hark-desktop.desktop");
    let entry_is = |present: bool| {
        let autostart = autostart.clone();
        move || {
            let autostart = autostart.clone();
            async move { Ok((autostart.exists() == present).then_some(())) }
        }
    };
    web.click_css("[data-testid=nav-settings]", SHORT).await?;
    web.click_css("[data-testid=start-at-login]", SHORT).await?;
    wait_for("the autostart entry", SHORT, entry_is(true)).await?;
    web.click_css("[data-testid=start-at-login]", SHORT).await?;
    wait_for("the autostart entry to go", SHORT, entry_is(false)).await?;
    web.click_css("[data-testid=start-at-login]", SHORT).await?;
    wait_for("the autostart entry again", SHORT, entry_is(true)).await?;
    web.click_css("[data-testid=start-hidden]", SHORT).await?;
    let settings = app.home.path().join("config/hark/settings.json");
    wait_for("start hidden to be saved", SHORT, || async {
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap_or_default()).unwrap_or_default();
        Ok((saved["start_hidden"] == true).then_some(()))
    })
    .await?;

    // "Open tel: links with Hark" takes tel: from the dialer this user had, a tel: number
    // opened then reaches Hark as a call to offer, and turning it off gives tel: back.
    // (xdg-mime only names a handler whose entry is there and whose program runs.)
    let applications = app.home.path().join("data/applications");
    std::fs::create_dir_all(&applications)?;
    std::fs::write(applications.join("other-dialer.desktop"), "[Desktop Entry]\nType=Application\nName=Other dialer\nExec=true %u\nNoDisplay=true\nMimeType=x-scheme-handler/tel;\n")?;
    std::fs::write(app.home.path().join("config/mimeapps.list"), "[Default Applications]\nx-scheme-handler/tel=other-dialer.desktop\n")?;
    ensure!(tel_handler(&app)? == "other-dialer.desktop", "the other dialer is not set up");
    web.click_css("[data-testid=tel-links]", SHORT).await?;
    wait_for("Hark to take tel: links", SHORT, || async { Ok((tel_handler(&app)? == "hark-tel.desktop").then_some(())) }).await?;
    let mut open = app.command(Path::new("timeout"));
    open.args(["30", "xdg-open", "tel:+1-555-0104"]).env("BROWSER", "false").env_remove("XDG_CURRENT_DESKTOP");
    output_with(&mut open)?;
    web.wait_text("[data-testid=link-users]", SHORT, |t| t == "15550104").await?;
    web.click_css("[data-testid=link-cancel]", SHORT).await?;
    web.click_css("[data-testid=tel-links]", SHORT).await?;
    wait_for("tel: links to go back", SHORT, || async { Ok((tel_handler(&app)? == "other-dialer.desktop").then_some(())) }).await?;
    ensure!(!app.home.path().join("data/applications/hark-tel.desktop").exists(), "Hark's tel: entry stayed");

    web.quit().await;
    wait_for("the app to quit", SHORT, || async { Ok((!app_running()).then_some(())) }).await?;

    // A cold start through GIO, as GNOME opens links: it runs the entry's Exec with `%u`
    // filled in and returns, and the app reads the link at launch.
    // (The app inherits xdg-open's output, so that is not captured: reading it would wait for
    // the app to end.)
    let mut gio = app.command(Path::new("xdg-open"));
    gio.arg("hark:call/echo").env("XDG_CURRENT_DESKTOP", "GNOME").env("BROWSER", "false");
    let opened = gio.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    ensure!(opened.success(), "xdg-open through GIO failed: {opened}");
    let cold = wait_for("the app started by GIO to take its link", SHORT, || async {
        Ok(app.log().lines().any(|l| l.contains("a hark: link came") && l.contains("the launch")).then_some(()))
    })
    .await;
    let _ = Command::new("pkill").args(["-x", "hark-desktop"]).status();
    cold?;
    wait_for("the cold-started app to end", SHORT, || async { Ok((!app_running()).then_some(())) }).await?;

    // A login: the desktop runs the entry's command. Hark starts and waits in the tray (it has
    // one: closing is not quitting here) with no window.
    let entry = std::fs::read_to_string(&autostart)?;
    ensure!(entry.lines().any(|l| l == "Exec=\"/usr/bin/hark-desktop\" --at-login"), "the autostart entry: {entry}");
    let mut login = app.command(installed);
    login.arg("--at-login").env_remove("HARK_QUIT_ON_CLOSE").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let started = hark_e2e::Guarded(login.spawn()?);
    wait_for("the login start to wait in the tray", SHORT, || async {
        Ok(app.log().contains("started at login: waiting in the tray").then_some(()))
    })
    .await?;
    let windows = Command::new("xdotool").args(["search", "--onlyvisible", "--name", "^Hark$"]).output()?;
    ensure!(windows.stdout.is_empty(), "a login start showed the window: {}", String::from_utf8_lossy(&windows.stdout));
    drop(started);
    wait_for("the login-started app to end", SHORT, || async { Ok((!app_running()).then_some(())) }).await?;

    // An administrator's policy: the installed app reads it at launch and shows the lock.
    let etc_hark_was_there = Path::new("/etc/hark").exists();
    std::fs::create_dir_all("/etc/hark")?;
    std::fs::write(POLICY, "reason = \"Acme IT says so\"\nvideo = false\ndefault_incoming = \"full_screen\"\nlock_incoming = true\n")?;
    let followed = follows_the_policy(&app, installed).await;
    std::fs::remove_file(POLICY)?;
    if !etc_hark_was_there {
        std::fs::remove_dir("/etc/hark")?;
    }
    followed
}

/// Where an administrator puts the policy.
const POLICY: &str = "/etc/hark/policy.toml";

/// The installed app, started with [`POLICY`] in place, reads it and shows the presentation it
/// locks as chosen, locked, with the administrator's reason.
async fn follows_the_policy(app: &AppUnderTest, installed: &Path) -> Result<()> {
    let web = app.session(installed).await?;
    let outcome = async {
        wait_for("the policy in the log", SHORT, || async {
            Ok(app.log().lines().any(|l| l.contains("the administrator's policy") && l.contains(POLICY) && l.contains("video=false") && l.contains("incoming_locked=true")).then_some(()))
        })
        .await?;
        web.click_css("[data-testid=nav-settings]", SHORT).await?;
        wait_for("the incoming presentation locked at full screen", SHORT, || async {
            let locked = web
                .execute("const e = document.querySelector('[data-testid=incoming-full_screen]'); return !!e && e.checked && e.disabled && document.body.textContent.includes('Acme IT says so');")
                .await?;
            Ok((locked == serde_json::Value::Bool(true)).then_some(()))
        })
        .await?;
        hark_e2e::capture_screen(&target_dir().join("e2e").join("package-03-policy-locks.png"))
    }
    .await;
    web.quit().await;
    wait_for("the app under the policy to quit", SHORT, || async { Ok((!app_running()).then_some(())) }).await?;
    outcome
}

/// The user's `tel:` handler, as `xdg-mime` names it.
fn tel_handler(app: &AppUnderTest) -> Result<String> {
    let mut query = app.command(Path::new("xdg-mime"));
    query.args(["query", "default", "x-scheme-handler/tel"]).env_remove("XDG_CURRENT_DESKTOP");
    Ok(output_with(&mut query)?.trim().to_owned())
}

fn app_running() -> bool {
    Command::new("pgrep").args(["-x", "hark-desktop"]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// How many different colours a PNG holds (a blank window has one or two).
fn distinct_colours(png_path: &Path) -> Result<usize> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path)?));
    let mut reader = decoder.read_info()?;
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels)?;
    let step = info.color_type.samples();
    let colours: BTreeSet<&[u8]> = pixels[..info.buffer_size()].chunks_exact(step).collect();
    Ok(colours.len())
}

#[test]
#[ignore = "needs the packages: cargo xtask test builds them and runs this"]
fn the_app_rpm_holds_the_app_and_names_its_libraries() -> Result<()> {
    let rpm = package("hark-", ".x86_64.rpm")?;
    let rpm = rpm.display().to_string();
    let files = output("rpm", &["-qlp", &rpm])?;
    for path in app_files("/usr/share/licenses/hark/LICENSE") {
        ensure!(files.lines().any(|line| line == path), "the .rpm lacks {path}:\n{files}");
    }
    let requires = output("rpm", &["-qp", "--requires", &rpm])?;
    for needed in ["libvpx.so.7()(64bit)", "libasound.so.2()(64bit)", "xdg-utils", "libwebkit2gtk-4.1.so.0()(64bit)"] {
        ensure!(requires.lines().any(|l| l.trim() == needed), "the .rpm does not require {needed}:\n{requires}");
    }
    let entry = output_with(Command::new("sh").args(["-c", "rpm2cpio \"$1\" | cpio -i --quiet --to-stdout ./usr/share/applications/Hark.desktop", "-", &rpm]))?;
    ensure!(entry.lines().any(|l| l == "Exec=hark-desktop %u"), "the .rpm's desktop entry drops links: {entry}");
    Ok(())
}

#[test]
#[ignore = "installs packages as root: cargo xtask test builds them and runs this"]
fn the_server_package_runs_as_its_own_user_and_keeps_data_unless_asked() -> Result<()> {
    ensure_root()?;
    let deb = package("hark-server_", "_amd64.deb")?;
    let contents = output("dpkg-deb", &["-c", &deb.display().to_string()])?;
    for path in [
        "./usr/bin/hark-server",
        "./lib/systemd/system/hark-server.service",
        "./etc/hark/server.toml",
        "./usr/share/man/man1/hark-server.1.gz",
        "./usr/share/doc/hark-server/copyright",
    ] {
        ensure!(contents.lines().any(|line| line.ends_with(path)), "the server .deb lacks {path}:\n{contents}");
    }
    let user_was_there = output("getent", &["passwd", "hark"]).is_ok();
    let (_copy_dir, copy) = readable_copy(&deb)?;
    let copy = copy.display().to_string();

    apt_get(&["install", "-y", &copy])?;
    let outcome = installed_server_works();
    if outcome.is_err() {
        let _ = Command::new("apt-get").args(["purge", "-y", "hark-server"]).env("HARK_SERVER_PURGE_DATA", "yes").status();
    }
    outcome?;

    apt_get(&["remove", "-y", "hark-server"])?;
    ensure!(!Path::new("/usr/bin/hark-server").exists(), "the binary outlived its removal");
    ensure!(Path::new("/var/lib/hark").read_dir()?.next().is_some(), "removing lost the accounts and records");
    ensure!(Path::new("/etc/hark/server.toml").exists(), "removing (not purging) lost the admin's configuration");

    apt_get(&["purge", "-y", "hark-server"])?;
    ensure!(!Path::new("/etc/hark/server.toml").exists(), "the configuration outlived the purge");
    ensure!(!Path::new("/etc/systemd/system/multi-user.target.wants/hark-server.service").exists(), "the service is still enabled");
    ensure!(Path::new("/var/lib/hark").read_dir()?.next().is_some(), "a plain purge deleted the accounts and records");

    apt_get(&["install", "-y", &copy])?;
    output_with(Command::new("apt-get").args(["purge", "-y", "hark-server"]).env("HARK_SERVER_PURGE_DATA", "yes").env("DEBIAN_FRONTEND", "noninteractive"))?;
    ensure!(!Path::new("/var/lib/hark").exists(), "HARK_SERVER_PURGE_DATA=yes left /var/lib/hark");
    if !user_was_there {
        // Debian's packages leave their system users; the test leaves the machine as it found it.
        // (`userdel`, from passwd, which every Debian has; it takes the user's own group too.)
        output("userdel", &["hark"])?;
        ensure!(output("getent", &["group", "hark"]).is_err(), "the hark group outlived its user");
    }
    Ok(())
}

fn installed_server_works() -> Result<()> {
    let passwd = output("getent", &["passwd", "hark"])?;
    ensure!(passwd.contains(":/var/lib/hark:") && passwd.trim_end().ends_with("nologin"), "the hark user: {passwd}");
    let data = output("stat", &["-c", "%U %G %a", "/var/lib/hark"])?;
    ensure!(data.trim() == "hark hark 700", "/var/lib/hark is {data}");
    let enabled = std::fs::read_link("/etc/systemd/system/multi-user.target.wants/hark-server.service").context("the service is not enabled")?;
    ensure!(enabled == Path::new("/lib/systemd/system/hark-server.service"), "the enable link points at {}", enabled.display());
    output("systemd-analyze", &["verify", "/lib/systemd/system/hark-server.service"])?;

    // The unit's own command, as its user (systemd is not PID 1 in a container).
    let unit = std::fs::read_to_string("/lib/systemd/system/hark-server.service")?;
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).context("no ExecStart")?;
    let mut words = exec.split_whitespace();
    let program = words.next().context("an empty ExecStart")?;
    let log = tempfile::NamedTempFile::new()?;
    // setpriv becomes the server (runuser would fork it, and killing runuser leave it running).
    let mut server = Command::new("setpriv");
    server.args(["--reuid", "hark", "--regid", "hark", "--init-groups", "--", program]).args(words).stdout(Stdio::null()).stderr(log.reopen()?);
    let server = hark_e2e::Guarded(server.spawn()?);
    let outcome = serve_and_sign_in();
    drop(server);
    outcome.with_context(|| format!("the server's log: {}", std::fs::read_to_string(log.path()).unwrap_or_default()))
}

fn serve_and_sign_in() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let http = reqwest::Client::new();
        wait_for("the installed server on 127.0.0.1:7600", SHORT, || async {
            Ok(http.get("http://127.0.0.1:7600/healthz").send().await.ok().filter(|r| r.status().is_success()).map(|_| ()))
        })
        .await?;
        let mut add = Command::new("runuser");
        add.args(["-u", "hark", "--", "hark-server", "user", "add", "alice", "--data-dir", "/var/lib/hark"]).stdin(Stdio::piped());
        let mut adding = add.spawn()?;
        {
            use std::io::Write;
            adding.stdin.take().context("stdin")?.write_all(b"alice's password 1\n")?;
        }
        ensure!(adding.wait()?.success(), "hark-server user add failed");
        let answer = http.post("http://127.0.0.1:7600/v1/login").json(&serde_json::json!({"user": "alice", "password": "alice's password 1"})).send().await?;
        ensure!(answer.status().is_success(), "login answered {}", answer.status());
        let body: serde_json::Value = answer.json().await?;
        ensure!(body["token"].as_str().is_some_and(|t| !t.is_empty()), "no token in {body}");
        Ok(())
    })
}
