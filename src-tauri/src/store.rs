//! Where the app keeps things, and the two small files it keeps there.
//!
//! Folders follow the XDG base directories: settings and the remembered session in
//! `$XDG_CONFIG_HOME/hark`, the built-in server's database in `$XDG_DATA_HOME/hark/server`, the
//! log in `$XDG_STATE_HOME/hark/logs`. The session file holds a token (never the password) and is
//! readable by its owner only. A setting that cannot be read is reported and takes its default,
//! keeping the others, rather than stopping the app.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::Settings;

/// The app's folders.
#[derive(Debug, Clone)]
pub struct AppDirs {
    /// Settings and session.
    pub config: PathBuf,
    /// The built-in server's data.
    pub data: PathBuf,
    /// Logs.
    pub state: PathBuf,
}

impl AppDirs {
    /// From the XDG variables, with their documented fallbacks under `$HOME`.
    pub fn from_env() -> AppDirs {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let base = |var: &str, fallback: &str| {
            std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute()).unwrap_or_else(|| home.join(fallback)).join("hark")
        };
        AppDirs { config: base("XDG_CONFIG_HOME", ".config"), data: base("XDG_DATA_HOME", ".local/share"), state: base("XDG_STATE_HOME", ".local/state") }
    }

    fn settings_file(&self) -> PathBuf {
        self.config.join("settings.json")
    }

    fn session_file(&self) -> PathBuf {
        self.config.join("session.json")
    }
}

/// A signed-in session worth resuming at the next launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    /// Server base URL, or `None` for the built-in server (whose port may change).
    pub server: Option<String>,
    /// User id.
    pub user: String,
    /// The token.
    pub token: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
}

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct StoreError {
    path: String,
    source: std::io::Error,
}

/// The settings, or `defaults` when there are none. Each setting is read on its own: one
/// value this version cannot read (a newer app's choice, a hand edit) falls back to its default
/// and keeps every other. (`defaults` are [`Settings::default`] but where the administrator's
/// policy sets a default.) Whenever anything falls back (that value, or a file that is not JSON
/// at all), the file is first kept beside as `settings.json.unreadable`: the next save writes
/// only what this version knows.
pub fn load_settings(dirs: &AppDirs, defaults: Settings) -> Settings {
    let path = dirs.settings_file();
    let (settings, whole) = match read_json::<serde_json::Value>(&path) {
        Some(value) => settings_from(value, defaults),
        None => (defaults, !path.exists()),
    };
    if !whole {
        let kept = path.with_extension("json.unreadable");
        if let Err(error) = std::fs::copy(&path, &kept) {
            tracing::warn!(path = %kept.display(), %error, "could not keep the settings file aside");
        }
    }
    settings
}

/// The saved server (`None`: the built-in one, or no settings), read alone: the policy that
/// decides how the rest is read needs it first.
pub fn saved_server(dirs: &AppDirs) -> Option<String> {
    read_json::<serde_json::Value>(&dirs.settings_file())?.get("server")?.as_str().map(str::to_owned)
}

/// Settings from a parsed file, setting by setting over `defaults`, and whether all of it was
/// read (keys this version does not know count as not read).
fn settings_from(value: serde_json::Value, defaults: Settings) -> (Settings, bool) {
    let serde_json::Value::Object(fields) = value else {
        tracing::warn!("the settings file is not an object; using defaults");
        return (defaults, false);
    };
    let Ok(serde_json::Value::Object(mut read)) = serde_json::to_value(&defaults) else { return (defaults, false) };
    let mut whole = true;
    for (key, value) in fields {
        if !read.contains_key(&key) {
            tracing::warn!(setting = %key, "a setting this version does not know");
            whole = false;
            continue;
        }
        let mut trial = read.clone();
        trial.insert(key.clone(), value);
        match serde_json::from_value::<Settings>(serde_json::Value::Object(trial.clone())) {
            Ok(_) => read = trial,
            Err(error) => {
                tracing::warn!(setting = %key, %error, "unreadable setting; keeping its default");
                whole = false;
            }
        }
    }
    (serde_json::from_value(serde_json::Value::Object(read)).unwrap_or(defaults), whole)
}

/// Writes the settings.
pub fn save_settings(dirs: &AppDirs, settings: &Settings) -> Result<(), StoreError> {
    write_json(&dirs.settings_file(), settings, false)
}

/// The remembered session, if any and not expired at `now_ms`.
pub fn load_session(dirs: &AppDirs, now_ms: i64) -> Option<SavedSession> {
    read_json::<SavedSession>(&dirs.session_file()).filter(|s| s.expires_at > now_ms)
}

/// Remembers a session (owner-only file).
pub fn save_session(dirs: &AppDirs, session: &SavedSession) -> Result<(), StoreError> {
    write_json(&dirs.session_file(), session, true)
}

/// Forgets the session (signing out).
pub fn forget_session(dirs: &AppDirs) {
    let _ = std::fs::remove_file(dirs.session_file());
}

/// The user id of the remembered or last session, to fill the sign-in form.
pub fn last_user(dirs: &AppDirs) -> Option<String> {
    std::fs::read_to_string(dirs.config.join("last_user")).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Remembers the last user id.
pub fn save_last_user(dirs: &AppDirs, user: &str) {
    if let Err(error) = std::fs::create_dir_all(&dirs.config).and_then(|()| std::fs::write(dirs.config.join("last_user"), user)) {
        tracing::warn!(%error, "could not remember the last user");
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "could not read; using defaults");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "unreadable; using defaults");
            None
        }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T, owner_only: bool) -> Result<(), StoreError> {
    let fail = |source| StoreError { path: path.display().to_string(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| fail(std::io::Error::other(e)))?;
    // Write a sibling and rename it over, so a crash never leaves half a file.
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if owner_only {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = owner_only;
    {
        use std::io::Write;
        let mut file = options.open(&temporary).map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
    }
    std::fs::rename(&temporary, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> AppDirs {
        AppDirs { config: root.join("config"), data: root.join("data"), state: root.join("state") }
    }

    #[test]
    fn settings_round_trip_and_corrupt_file_gives_defaults() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        assert_eq!(load_settings(&dirs, Settings::default()), Settings::default());
        let ringtone = crate::api::RingtoneSetting::Custom { path: "/tmp/x.wav".into() };
        let settings = Settings { ringtone: ringtone.clone(), language: "zh".into(), ..Settings::default() };
        save_settings(&dirs, &settings).unwrap();
        assert_eq!(load_settings(&dirs, Settings::default()), settings);
        // A file written before the ringtone was typed still reads, with its other settings.
        std::fs::write(dirs.settings_file(), r#"{"ringtone":"custom:/tmp/x.wav","language":"zh"}"#).unwrap();
        assert_eq!(load_settings(&dirs, Settings::default()), Settings { ringtone, language: "zh".into(), ..Settings::default() });
        std::fs::write(dirs.settings_file(), "{not json").unwrap();
        assert_eq!(load_settings(&dirs, Settings::default()), Settings::default());
        assert_eq!(std::fs::read_to_string(dirs.config.join("settings.json.unreadable")).unwrap(), "{not json", "kept for the person to recover");
        std::fs::write(dirs.settings_file(), "[1, 2]").unwrap();
        assert_eq!(load_settings(&dirs, Settings::default()), Settings::default());
    }

    #[test]
    fn one_unreadable_setting_keeps_the_others() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        // A newer app's resolution, a volume out of range and a key this version does not know.
        std::fs::create_dir_all(&dirs.config).unwrap();
        std::fs::write(
            dirs.settings_file(),
            r#"{"language":"zh","video_resolution":"4k","ringtone_volume":900,"camera_off_at_start":true,"future_switch":1,"server":"https://hark.example"}"#,
        )
        .unwrap();
        let read = load_settings(&dirs, Settings::default());
        assert_eq!(
            read,
            Settings { language: "zh".into(), camera_off_at_start: true, server: Some("https://hark.example".into()), ..Settings::default() },
            "the two unreadable values fall back, the rest are kept"
        );
        let kept = std::fs::read_to_string(dirs.config.join("settings.json.unreadable")).unwrap();
        assert!(kept.contains(r#""video_resolution":"4k""#) && kept.contains("future_switch"), "what fell back is kept aside: {kept}");
        // A file read whole is not copied aside.
        std::fs::remove_file(dirs.config.join("settings.json.unreadable")).unwrap();
        save_settings(&dirs, &read).unwrap();
        assert_eq!(load_settings(&dirs, Settings::default()), read);
        assert!(!dirs.config.join("settings.json.unreadable").exists());
    }

    #[test]
    fn a_policy_default_is_what_a_person_who_chose_nothing_gets() {
        use crate::api::IncomingPresentation::{Banner, FullScreen};
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        let defaults = Settings { incoming: FullScreen, ..Settings::default() };
        assert_eq!(load_settings(&dirs, defaults.clone()).incoming, FullScreen, "no settings yet");
        assert_eq!(saved_server(&dirs), None);
        std::fs::create_dir_all(&dirs.config).unwrap();
        std::fs::write(dirs.settings_file(), r#"{"language":"zh","server":"https://hark.example"}"#).unwrap();
        assert_eq!(load_settings(&dirs, defaults.clone()), Settings { language: "zh".into(), server: Some("https://hark.example".into()), ..defaults.clone() });
        assert_eq!(saved_server(&dirs).as_deref(), Some("https://hark.example"));
        std::fs::write(dirs.settings_file(), r#"{"incoming":"banner"}"#).unwrap();
        assert_eq!(load_settings(&dirs, defaults).incoming, Banner, "the person's own choice stands");
    }

    #[test]
    fn a_session_is_owner_only_and_expires() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        let session = SavedSession { server: None, user: "alice".into(), token: "t".into(), expires_at: 2_000 };
        save_session(&dirs, &session).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dirs.session_file()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load_session(&dirs, 1_999), Some(session));
        assert_eq!(load_session(&dirs, 2_000), None);
        forget_session(&dirs);
        assert_eq!(load_session(&dirs, 0), None);
    }
}
