//! The administrator's policy file, read once at launch, and what it does to the settings.
//!
//! An IT admin ships `/etc/hark/policy.toml` (`HARK_POLICY_FILE` names another, for tests) with
//! flat keys: `reason`, `server`, `builtin_server`, `video`, `invite_more`, `relay_only`,
//! `custom_ringtones`, `default_incoming` and `lock_incoming` (README, "Policies for
//! deployments"). The shell enforces the server, the settings and the presentation; the engine
//! gets the call half ([`hark_engine::CallPolicy`]) and enforces it whatever the page asks.
//!
//! A broken file never means no policy: a value that cannot be read leaves its lock at the safest
//! reading (video off, invitations off, relay only, no ringtone files, the built-in server off,
//! the server kept where it is). A file that is not valid TOML is read line by line, so one bad
//! line costs only the lock it names; a line that names nothing costs every lock the readable
//! lines did not set. A file that cannot be read at all puts every lock at its safest.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::api::{ApiError, AppErrorCode, IncomingPresentation, Policy, RingtoneSetting, Settings};

/// Where an administrator puts the policy.
pub const SYSTEM_FILE: &str = "/etc/hark/policy.toml";
/// Names another policy file (tests, or a per-seat deployment tool).
pub const FILE_VARIABLE: &str = "HARK_POLICY_FILE";

/// The policy file this launch reads.
pub fn file() -> PathBuf {
    std::env::var_os(FILE_VARIABLE).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(SYSTEM_FILE))
}

/// Reads the policy at `path`: none when there is no file. `current_server` is the saved server
/// (`None`: the built-in one), where a server lock that cannot be read keeps the person.
pub fn read(path: &Path, current_server: Option<&str>) -> Policy {
    let shown = path.display().to_string();
    let mut policy = match std::fs::read(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Policy::default(),
        Err(error) => unreadable(current_server, format!("{shown} could not be read ({error}); every lock is at its safest")),
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse(&text, current_server),
            Err(_) => unreadable(current_server, format!("{shown} is not UTF-8 text; every lock is at its safest")),
        },
    };
    policy.file = Some(shown);
    policy
}

/// A policy of which nothing could be read.
fn unreadable(current_server: Option<&str>, problem: String) -> Policy {
    let mut policy = resolve(Reading::default(), &Doubts { every_lock: true, keys: HashSet::new() }, current_server);
    policy.problems.insert(0, problem);
    policy
}

/// What the file's readable lines said, key by key.
#[derive(Default)]
struct Reading {
    reason: Option<String>,
    server: Option<String>,
    builtin_server: Option<bool>,
    video: Option<bool>,
    invite_more: Option<bool>,
    relay_only: Option<bool>,
    custom_ringtones: Option<bool>,
    default_incoming: Option<IncomingPresentation>,
    lock_incoming: Option<bool>,
    problems: Vec<String>,
}

/// Locks whose value may have been in a part of the file that could not be read.
struct Doubts {
    /// A broken line named no key: any lock not read may be in it.
    every_lock: bool,
    /// Keys with a value that could not be read, or on a broken line.
    keys: HashSet<String>,
}

impl Doubts {
    fn about(&self, key: &str) -> bool {
        self.every_lock || self.keys.contains(key)
    }
}

/// Reads the text of a policy file.
pub fn parse(text: &str, current_server: Option<&str>) -> Policy {
    let mut doubts = Doubts { every_lock: false, keys: HashSet::new() };
    let mut reading = Reading::default();
    let entries: Vec<(String, toml::Value)> = match text.parse::<toml::Table>() {
        Ok(table) => table.into_iter().collect(),
        Err(error) => {
            reading.problems.push(format!("the file is not valid TOML ({}); it was read line by line", error.message().trim()));
            salvage(text, &mut reading.problems, &mut doubts)
        }
    };
    for (key, value) in entries {
        read_entry(&mut reading, &mut doubts, &key, value);
    }
    resolve(reading, &doubts, current_server)
}

/// The `key = value` lines that read on their own; each line that does not is a problem, and a
/// doubt about the key it seems to name (or about every lock, when it names none).
fn salvage(text: &str, problems: &mut Vec<String>, doubts: &mut Doubts) -> Vec<(String, toml::Value)> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.parse::<toml::Table>() {
            Ok(table) => entries.extend(table),
            Err(_) => {
                let key = trimmed.split_once('=').map(|(key, _)| key.trim().trim_matches('"').to_owned()).filter(|key| !key.is_empty());
                match key {
                    Some(key) => {
                        problems.push(format!("line {}: the value of `{key}` could not be read", number + 1));
                        doubts.keys.insert(key);
                    }
                    None => {
                        problems.push(format!("line {}: not a `key = value` line", number + 1));
                        doubts.every_lock = true;
                    }
                }
            }
        }
    }
    entries
}

fn read_entry(reading: &mut Reading, doubts: &mut Doubts, key: &str, value: toml::Value) {
    let mut bad = |reading: &mut Reading, expected: &str| {
        reading.problems.push(format!("`{key}` should be {expected}; it is read at its safest"));
        doubts.keys.insert(key.to_owned());
    };
    let switch = |value: &toml::Value| value.as_bool();
    match key {
        "reason" => match value.as_str() {
            Some(reason) if !reason.trim().is_empty() => reading.reason = Some(reason.trim().to_owned()),
            _ => reading.problems.push("`reason` should be some words in quotes".into()),
        },
        "server" => match value.as_str().map(|url| url.trim().trim_end_matches('/')) {
            Some(url) if crate::app_state::secure_or_loopback(url) => reading.server = Some(url.to_owned()),
            _ => bad(reading, "an https:// URL (or http:// on this machine)"),
        },
        "default_incoming" => match value.as_str() {
            Some("banner") => reading.default_incoming = Some(IncomingPresentation::Banner),
            Some("full_screen") => reading.default_incoming = Some(IncomingPresentation::FullScreen),
            _ => bad(reading, "\"banner\" or \"full_screen\""),
        },
        "builtin_server" | "video" | "invite_more" | "relay_only" | "custom_ringtones" | "lock_incoming" => {
            let Some(on) = switch(&value) else { return bad(reading, "true or false") };
            let slot = match key {
                "builtin_server" => &mut reading.builtin_server,
                "video" => &mut reading.video,
                "invite_more" => &mut reading.invite_more,
                "relay_only" => &mut reading.relay_only,
                "custom_ringtones" => &mut reading.custom_ringtones,
                _ => &mut reading.lock_incoming,
            };
            *slot = Some(on);
        }
        other => reading.problems.push(format!("`{other}` is not a policy this version knows; it is ignored")),
    }
}

/// The policy the reading and its doubts come to: a lock read is as read, a lock in doubt is at
/// its safest, a lock the file does not mention allows.
fn resolve(reading: Reading, doubts: &Doubts, current_server: Option<&str>) -> Policy {
    // `open`: the value with no policy; its opposite is the safest.
    let lock = |read: Option<bool>, key: &str, open: bool| read.unwrap_or(if doubts.about(key) { !open } else { open });
    let (server_locked, server) = match reading.server {
        Some(url) => (true, Some(url)),
        None if doubts.about("server") => (true, current_server.map(|url| url.trim_end_matches('/').to_owned())),
        None => (false, None),
    };
    // A server lock decides whether the built-in server is allowed: it is, only when it is the
    // server locked to.
    let builtin_server = if server_locked { server.is_none() } else { lock(reading.builtin_server, "builtin_server", true) };
    let incoming_locked = lock(reading.lock_incoming, "lock_incoming", false);
    let default_incoming = match (reading.default_incoming, incoming_locked) {
        (None, true) => Some(IncomingPresentation::Banner),
        (chosen, _) => chosen,
    };
    Policy {
        file: None,
        reason: reading.reason,
        server_locked,
        server,
        builtin_server,
        video: lock(reading.video, "video", true),
        invite_more: lock(reading.invite_more, "invite_more", true),
        relay_only: lock(reading.relay_only, "relay_only", false),
        custom_ringtones: lock(reading.custom_ringtones, "custom_ringtones", true),
        default_incoming,
        incoming_locked,
        problems: reading.problems,
    }
}

impl Policy {
    /// The engine's half.
    pub fn calls(&self) -> hark_engine::CallPolicy {
        hark_engine::CallPolicy { video: self.video, invite_more: self.invite_more, relay_only: self.relay_only, custom_ringtones: self.custom_ringtones }
    }

    /// The settings a person who has chosen nothing has.
    pub fn default_settings(&self) -> Settings {
        Settings { incoming: self.default_incoming.unwrap_or_default(), ..Settings::default() }
    }

    /// Brings saved settings within the policy: the locked server and presentation, and the
    /// default ringtone in place of a file the policy does not allow.
    pub fn clamp(&self, settings: &mut Settings) {
        if self.server_locked {
            settings.server = self.server.clone();
        }
        if self.incoming_locked {
            settings.incoming = self.default_incoming.unwrap_or_default();
        }
        if !self.custom_ringtones && matches!(settings.ringtone, RingtoneSetting::Custom { .. }) {
            settings.ringtone = Settings::default().ringtone;
        }
    }

    /// Whether the person may change `before` into `after`.
    pub fn check_change(&self, before: &Settings, after: &Settings) -> Result<(), ApiError> {
        if self.incoming_locked && after.incoming != before.incoming {
            return Err(self.forbidden("how incoming calls are shown is set by the administrator's policy"));
        }
        if !self.custom_ringtones && after.ringtone != before.ringtone && matches!(after.ringtone, RingtoneSetting::Custom { .. }) {
            return Err(self.forbidden("ringtone files are turned off by the administrator's policy"));
        }
        Ok(())
    }

    /// Whether signing in to `server` (`None`: the built-in one) is allowed.
    pub fn check_server(&self, server: Option<&str>) -> Result<(), ApiError> {
        let server = server.map(|url| url.trim().trim_end_matches('/'));
        if self.server_locked && server != self.server.as_deref() {
            let only = self.server.as_deref().unwrap_or("the server built into the app");
            return Err(self.forbidden(&format!("the administrator's policy allows only {only}")));
        }
        if server.is_none() && !self.builtin_server {
            return Err(self.forbidden("the built-in server is turned off by the administrator's policy"));
        }
        Ok(())
    }

    /// One line for "Copy diagnostics": where the policy is and what it locks.
    pub fn summary(&self) -> String {
        let Some(file) = &self.file else { return "none".into() };
        let mut locks = Vec::new();
        if self.server_locked {
            locks.push(format!("server locked to {}", self.server.as_deref().unwrap_or("the built-in one")));
        } else if !self.builtin_server {
            locks.push("no built-in server".into());
        }
        for (allowed, what) in [(self.video, "video"), (self.invite_more, "invite more"), (self.custom_ringtones, "ringtone files")] {
            if !allowed {
                locks.push(format!("{what} off"));
            }
        }
        if self.relay_only {
            locks.push("relay only".into());
        }
        if self.incoming_locked {
            locks.push("incoming presentation locked".into());
        }
        let locks = if locks.is_empty() { "nothing locked".to_owned() } else { locks.join(", ") };
        match self.problems.len() {
            0 => format!("{file}: {locks}"),
            n => format!("{file}: {locks}; {n} unreadable part(s), read at their safest"),
        }
    }

    fn forbidden(&self, words: &str) -> ApiError {
        let message = match &self.reason {
            Some(reason) => format!("{words} ({reason})"),
            None => words.to_owned(),
        };
        ApiError::new(AppErrorCode::ForbiddenByPolicy, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAFEST: (bool, bool, bool, bool) = (false, false, true, false);

    fn locks(policy: &Policy) -> (bool, bool, bool, bool) {
        (policy.video, policy.invite_more, policy.relay_only, policy.custom_ringtones)
    }

    #[test]
    fn no_file_is_no_policy_and_an_empty_file_locks_nothing() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(read(&root.path().join("policy.toml"), None), Policy::default());
        std::fs::write(root.path().join("policy.toml"), "# nothing yet\n").unwrap();
        let empty = read(&root.path().join("policy.toml"), None);
        assert_eq!(empty, Policy { file: Some(root.path().join("policy.toml").display().to_string()), ..Policy::default() });
    }

    #[test]
    fn a_whole_policy_reads_as_written() {
        let policy = parse(
            r#"
            reason = "Acme IT: calls stay on our server"
            server = "https://hark.acme.example/"
            video = false
            invite_more = false
            relay_only = true
            custom_ringtones = false
            default_incoming = "full_screen"
            lock_incoming = true
            "#,
            None,
        );
        assert_eq!(policy.problems, Vec::<String>::new());
        assert_eq!(policy.reason.as_deref(), Some("Acme IT: calls stay on our server"));
        assert!(policy.server_locked && policy.server.as_deref() == Some("https://hark.acme.example"));
        assert!(!policy.builtin_server, "a locked server turns the built-in one off");
        assert_eq!(locks(&policy), SAFEST);
        assert_eq!((policy.default_incoming, policy.incoming_locked), (Some(IncomingPresentation::FullScreen), true));
        assert_eq!(
            Policy { file: Some("/etc/hark/policy.toml".into()), ..policy.clone() }.summary(),
            "/etc/hark/policy.toml: server locked to https://hark.acme.example, video off, invite more off, ringtone files off, relay only, incoming presentation locked"
        );
        assert_eq!(Policy::default().summary(), "none");
        let calls = policy.calls();
        assert!(!calls.video && !calls.invite_more && calls.relay_only && !calls.custom_ringtones);
    }

    #[test]
    fn the_readme_example_reads_whole() {
        let readme = include_str!("../../README.md");
        let section = readme.find("### Policies for deployments").expect("README has the policy section");
        let start = section + readme[section..].find("```toml\n").expect("a TOML example") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("closed");
        let policy = parse(&readme[start..end], None);
        assert_eq!(policy.problems, Vec::<String>::new());
        assert!(policy.server_locked && policy.reason.is_some() && policy.incoming_locked);
        assert_eq!(locks(&policy), SAFEST);
        // And the packaged example, every line commented out, locks nothing.
        let example = parse(include_str!("../packaging/policy.toml.example"), None);
        assert_eq!(example, Policy::default());
    }

    #[test]
    fn a_default_is_not_a_lock_and_unknown_keys_are_only_reported() {
        let policy = parse("default_incoming = \"full_screen\"\nenable_fax = true\n", Some("https://a.example"));
        assert_eq!((policy.default_incoming, policy.incoming_locked), (Some(IncomingPresentation::FullScreen), false));
        assert_eq!(policy.default_settings().incoming, IncomingPresentation::FullScreen);
        assert_eq!(locks(&policy), (true, true, false, true));
        assert!(!policy.server_locked && policy.builtin_server);
        assert_eq!(policy.problems.len(), 1);
        assert!(policy.problems[0].contains("enable_fax"), "{:?}", policy.problems);
    }

    #[test]
    fn a_bad_value_leaves_its_lock_at_the_safest_and_the_others_as_written() {
        let policy = parse("video = \"no\"\ninvite_more = true\nserver = \"http://hark.acme.example\"\ndefault_incoming = \"popup\"\n", Some("https://saved.example/"));
        assert!(!policy.video, "an unreadable video switch is off");
        assert!(policy.invite_more);
        assert!(!policy.relay_only && policy.custom_ringtones, "locks the file does not mention allow");
        assert!(policy.server_locked && policy.server.as_deref() == Some("https://saved.example"), "a server that may not be used keeps the saved one");
        assert_eq!(policy.default_incoming, None, "a bad default is no default");
        assert_eq!(policy.problems.len(), 3, "{:?}", policy.problems);
    }

    #[test]
    fn a_file_that_is_not_toml_is_read_line_by_line() {
        // An unclosed quote on the video line, and a stray word.
        let text = "relay_only = false\nvideo = \"false\ninvite_more = true\n";
        let policy = parse(text, None);
        assert!(!policy.video, "the broken line's lock is at its safest");
        assert!(policy.invite_more && !policy.relay_only, "the lines that read on their own count");
        assert!(policy.custom_ringtones && !policy.server_locked, "locks no line named allow");
        assert!(policy.problems.iter().any(|p| p.contains("line 2") && p.contains("video")), "{:?}", policy.problems);

        let nameless = parse("video = true\n[[[\n", Some("https://saved.example"));
        assert!(policy.problems[0].contains("not valid TOML"));
        assert!(nameless.video, "read before the broken line");
        assert_eq!((nameless.invite_more, nameless.relay_only, nameless.custom_ringtones), (false, true, false), "a line naming nothing puts every unread lock at its safest");
        assert!(nameless.server_locked && nameless.server.as_deref() == Some("https://saved.example") && !nameless.builtin_server);
        assert!(nameless.incoming_locked && nameless.default_incoming == Some(IncomingPresentation::Banner));
    }

    #[test]
    fn a_file_that_cannot_be_read_locks_everything_where_it_is() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("policy.toml");
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let remote = read(&path, Some("https://saved.example"));
        assert_eq!(locks(&remote), SAFEST);
        assert!(remote.server_locked && remote.server.as_deref() == Some("https://saved.example") && !remote.builtin_server);
        assert!(remote.problems[0].contains("not UTF-8"), "{:?}", remote.problems);
        // On the built-in server, that is where the person stays.
        let builtin = read(&path, None);
        assert!(builtin.server_locked && builtin.server.is_none() && builtin.builtin_server);
        // A folder where the file should be cannot be read either.
        let folder = read(root.path(), None);
        assert_eq!(locks(&folder), SAFEST);
        assert!(folder.problems[0].contains("could not be read"), "{:?}", folder.problems);
    }

    #[test]
    fn settings_are_kept_within_the_policy() {
        let policy = parse("server = \"https://hark.acme.example\"\ncustom_ringtones = false\nlock_incoming = true\nreason = \"Acme IT\"", None);
        let mut settings = Settings {
            server: None,
            incoming: IncomingPresentation::FullScreen,
            ringtone: RingtoneSetting::Custom { path: "/home/a/song.ogg".into() },
            ..Settings::default()
        };
        policy.clamp(&mut settings);
        assert_eq!(settings.server.as_deref(), Some("https://hark.acme.example"));
        assert_eq!(settings.incoming, IncomingPresentation::Banner);
        assert_eq!(settings.ringtone, Settings::default().ringtone);

        let mut changed = settings.clone();
        changed.incoming = IncomingPresentation::FullScreen;
        let refused = policy.check_change(&settings, &changed).unwrap_err();
        assert_eq!(refused.code, AppErrorCode::ForbiddenByPolicy.into());
        assert!(refused.message.contains("Acme IT"), "the reason goes with the refusal: {}", refused.message);
        let mut changed = settings.clone();
        changed.ringtone = RingtoneSetting::Custom { path: "/tmp/x.wav".into() };
        assert!(policy.check_change(&settings, &changed).is_err());
        let mut changed = settings.clone();
        changed.ringtone = RingtoneSetting::Bundled { name: "chime".into() };
        changed.language = "zh".into();
        assert_eq!(policy.check_change(&settings, &changed), Ok(()), "unlocked settings change freely");

        assert_eq!(policy.check_server(Some("https://hark.acme.example/")), Ok(()));
        assert!(policy.check_server(Some("https://other.example")).is_err());
        assert!(policy.check_server(None).is_err());
        let no_builtin = parse("builtin_server = false", None);
        assert!(no_builtin.check_server(None).is_err());
        assert_eq!(no_builtin.check_server(Some("https://any.example")), Ok(()));
        assert_eq!(Policy::default().check_server(None), Ok(()));
    }
}
