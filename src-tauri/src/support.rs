//! Help for a person reporting a problem: problem reports left by a panic, the diagnostics text
//! that Settings copies, and the log folder.
//!
//! A panic anywhere (a crash, or a task that died) writes `crash-<unix seconds>.txt` into the
//! log folder with the message, the place and a backtrace, before the default hook runs. The
//! next start offers the newest report not shown yet once (`take_crash_report`), and renames it
//! to `….shown.txt` so it is offered once. The diagnostics say what a bug report needs
//! (versions, desktop, devices, the server, the last warnings) and never a token, a password or
//! a session description: log lines that mention one are left out whole.

use std::path::{Path, PathBuf};

use hark_engine::sound_card::DeviceInfo;

use crate::api::{CrashReport, Settings};

/// Report files: `crash-<unix seconds>.txt`; a shown one ends `.shown.txt`.
const PREFIX: &str = "crash-";
const SHOWN: &str = ".shown.txt";

/// How many warning and error lines of the log the diagnostics carry.
const LAST_PROBLEMS: usize = 20;

/// Words whose lines never leave the machine in the diagnostics.
const SECRET_WORDS: &[&str] = &["token", "password", "secret", "sdp", "candidate", "credential"];

/// Writes a report into `logs` at every panic, then runs the hook that was there (which prints
/// the panic to stderr).
pub fn install_crash_reports(logs: PathBuf) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        let report = format!(
            "Hark {} stopped at {place} (thread {thread}):\n{message}\n\nUnix time: {at}\nBacktrace:\n{}\n",
            env!("CARGO_PKG_VERSION"),
            std::backtrace::Backtrace::force_capture()
        );
        // Nothing can be reported about a report that cannot be written: the hook below still
        // prints the panic.
        let _ = std::fs::create_dir_all(&logs).and_then(|()| std::fs::write(logs.join(format!("{PREFIX}{at}.txt")), report));
        previous(info);
    }));
}

/// The newest report in `logs` not offered yet, marked as offered. Older unshown ones are
/// marked too: one notice says Hark stopped, however many times.
pub fn take_crash_report(logs: &Path) -> Option<CrashReport> {
    let mut unshown: Vec<(u64, PathBuf)> = std::fs::read_dir(logs)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let seconds = name.strip_prefix(PREFIX)?.strip_suffix(".txt")?.parse::<u64>().ok()?;
            Some((seconds, path))
        })
        .collect();
    unshown.sort();
    let (at, newest) = unshown.last().cloned()?;
    let text = std::fs::read_to_string(&newest).ok()?;
    let summary = text.lines().take(2).collect::<Vec<_>>().join(" ");
    for (_, path) in &unshown {
        if let Err(error) = std::fs::rename(path, shown_path(path)) {
            tracing::warn!(%error, path = %path.display(), "could not mark a problem report as shown");
        }
    }
    Some(CrashReport { at_ms: i64::try_from(at.saturating_mul(1000)).unwrap_or(i64::MAX), summary, file: shown_path(&newest).display().to_string() })
}

/// `crash-N.txt` once offered: `crash-N.shown.txt`.
fn shown_path(report: &Path) -> PathBuf {
    report.with_extension(SHOWN.trim_start_matches('.'))
}

/// What a bug report needs, as text to paste.
pub fn diagnostics(settings: &Settings, server: &str, policy: &str, devices: &[DeviceInfo], cameras: &[hark_engine::camera::CameraInfo], log: &str) -> String {
    let mut text = String::new();
    let mut line = |key: &str, value: &str| {
        text.push_str(key);
        text.push_str(": ");
        text.push_str(value);
        text.push('\n');
    };
    line("Hark", env!("CARGO_PKG_VERSION"));
    line("System", &os_name());
    line("Desktop", &format!("{} ({})", env_or("XDG_CURRENT_DESKTOP", "none"), env_or("XDG_SESSION_TYPE", "unknown session")));
    line("Server", server);
    // The proxy's address, never its credentials.
    let proxy = match hark_engine::proxy::ProxySetting::from_text(&settings.proxy) {
        hark_engine::proxy::ProxySetting::FromEnvironment => "the environment's, if any".to_owned(),
        hark_engine::proxy::ProxySetting::Direct => "none".to_owned(),
        hark_engine::proxy::ProxySetting::Http(address) => {
            hark_engine::proxy::HttpProxy::parse(&address).map_or_else(|_| "an address that cannot be used".to_owned(), |proxy| proxy.address())
        }
    };
    line("Proxy", &proxy);
    line("Policy", policy);
    line("Microphone", settings.microphone.as_deref().unwrap_or("default"));
    line("Speaker", settings.speaker.as_deref().unwrap_or("default"));
    line("Camera", &settings.camera.map_or("default".into(), |n| format!("/dev/video{n}")));
    line("Video resolution", &format!("{:?}", settings.video_resolution));
    line("Voice processing", &format!("echo cancellation {}, noise suppression {}", settings.echo_cancellation, settings.noise_suppression));
    text.push_str("Sound devices:\n");
    for device in devices {
        let default = if device.is_default { " (default)" } else { "" };
        text.push_str(&format!("  {:?} {}: {}{default}\n", device.direction, device.id, device.name));
    }
    text.push_str("Cameras:\n");
    for camera in cameras {
        text.push_str(&format!("  /dev/video{}: {}\n", camera.index, camera.name));
    }
    text.push_str(&format!("Last warnings and errors (at most {LAST_PROBLEMS}):\n"));
    for problem in last_problems(log) {
        text.push_str("  ");
        text.push_str(problem);
        text.push('\n');
    }
    text
}

/// The last warning and error lines of `log`, less any that mention a secret.
fn last_problems(log: &str) -> Vec<&str> {
    let mut problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| {
            let lower = l.to_lowercase();
            !SECRET_WORDS.iter().any(|word| lower.contains(word))
        })
        .collect();
    let keep_from = problems.len().saturating_sub(LAST_PROBLEMS);
    problems.drain(..keep_from);
    problems
}

/// The newest log file's text in `logs` (the appender writes one a day).
pub fn newest_log(logs: &Path) -> String {
    let newest = std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max();
    newest.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
}

/// Shows `folder` in the desktop's file manager. `xdg-open` runs on a thread of its own: with no
/// desktop environment it waits for the program it started.
pub fn open_folder(folder: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    let mut child = std::process::Command::new("xdg-open")
        .arg(folder)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::spawn(move || child.wait());
    Ok(())
}

fn env_or(name: &str, otherwise: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| otherwise.into())
}

fn os_name() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .unwrap_or_else(|| std::env::consts::OS.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_report_is_offered_once_and_older_ones_are_marked_with_it() {
        let logs = tempfile::tempdir().expect("a folder");
        std::fs::write(logs.path().join("crash-100.txt"), "Hark 0.1.0 stopped at a.rs:1\nold\n").expect("written");
        std::fs::write(logs.path().join("crash-200.txt"), "Hark 0.1.0 stopped at b.rs:2\nnew\n").expect("written");
        std::fs::write(logs.path().join("hark.2026-12-03.log"), "not a report").expect("written");
        let report = take_crash_report(logs.path()).expect("a report");
        assert_eq!(report.at_ms, 200_000);
        assert_eq!(report.summary, "Hark 0.1.0 stopped at b.rs:2 new");
        assert!(report.file.ends_with("crash-200.shown.txt"), "{}", report.file);
        assert!(logs.path().join("crash-100.shown.txt").exists());
        assert_eq!(take_crash_report(logs.path()), None, "offered once");
    }

    #[test]
    fn a_panic_leaves_a_report_with_its_message_and_place() {
        let logs = tempfile::tempdir().expect("a folder");
        install_crash_reports(logs.path().to_owned());
        let outcome = std::thread::Builder::new().name("doomed".into()).spawn(|| panic!("the test's own panic")).expect("a thread").join();
        let _ = std::panic::take_hook();
        assert!(outcome.is_err());
        let report = take_crash_report(logs.path()).expect("a report");
        assert!(report.summary.contains("support.rs"), "{}", report.summary);
        assert!(report.summary.contains("thread doomed"), "{}", report.summary);
        let text = std::fs::read_to_string(&report.file).expect("the report");
        assert!(text.contains("the test's own panic"));
        assert!(text.contains("Backtrace:"));
    }

    #[test]
    fn diagnostics_carry_the_last_problems_but_no_secret() {
        let mut log = String::new();
        for n in 0..30 {
            log.push_str(&format!("2026-12-03T10:00:{n:02}Z  WARN hark_engine: problem {n}\n"));
        }
        log.push_str("2026-12-03T10:01:00Z  INFO hark_desktop: fine\n");
        log.push_str("2026-12-03T10:01:01Z ERROR hark_engine: offer failed sdp=v=0...\n");
        log.push_str("2026-12-03T10:01:02Z  WARN hark_engine: bad Token abc.def\n");
        log.push_str("2026-12-03T10:01:03Z ERROR hark_engine: the last one\n");
        let device = DeviceInfo { id: "alsa:default".into(), name: "Default".into(), direction: hark_engine::sound_card::Direction::Input, is_default: true };
        let text = diagnostics(&Settings::default(), "built into this app", "none", &[device], &[], &log);
        assert!(text.starts_with(concat!("Hark: ", env!("CARGO_PKG_VERSION"), "\n")), "{text}");
        assert!(text.contains("Server: built into this app\n"));
        assert!(text.contains("Input alsa:default: Default (default)"), "{text}");
        assert!(text.contains("the last one"));
        assert!(!text.contains("problem 10\n") && text.contains("problem 11\n"), "only the last 20 problems: {text}");
        assert!(!text.contains("INFO"));
        let lower = text.to_lowercase();
        assert!(!lower.contains("sdp") && !lower.contains("token"), "{text}");
        assert!(text.contains("Proxy: the environment's, if any\n"), "{text}");

        let proxied = Settings { proxy: "http://ann:secret@proxy.corp:3128".into(), ..Settings::default() };
        let text = diagnostics(&proxied, "https://hark.corp", "none", &[], &[], "");
        assert!(text.contains("Proxy: proxy.corp:3128\n") && !text.contains("secret") && !text.contains("ann"), "{text}");
    }
}
