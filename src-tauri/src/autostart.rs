//! "Start Hark when I log in": an XDG autostart entry, `$XDG_CONFIG_HOME/autostart/
//! hark-desktop.desktop`, which desktops run at login. It starts this very binary with
//! [`AT_LOGIN`], so a launch can tell a login from a person opening Hark: only a login start
//! honours "start hidden in the tray"; an icon clicked always shows the window.
//!
//! The entry is written when the setting is turned on, and again at each launch while it is on
//! (so it follows the binary when Hark moves, say from a build to a package), and removed when
//! it is turned off. Only our own file is touched.

use std::io;
use std::path::{Path, PathBuf};

/// The argument the autostart entry launches Hark with.
pub const AT_LOGIN: &str = "--at-login";

/// The autostart folder of the user whose settings live in `config` (`$XDG_CONFIG_HOME/hark`).
pub fn entry_path(config: &Path) -> PathBuf {
    config.parent().unwrap_or(config).join("autostart").join("hark-desktop.desktop")
}

/// The entry's text for the binary at `program`.
pub fn entry(program: &Path) -> String {
    format!(
        "[Desktop Entry]\n\
         Type=Application\n\
         Name=Hark\n\
         Comment=Waits for calls from login on\n\
         Exec={} {AT_LOGIN}\n\
         Icon=hark-desktop\n\
         Terminal=false\n\
         X-GNOME-Autostart-enabled=true\n",
        exec_quoted(program)
    )
}

/// Writes the entry (when `on`) or removes it; removing one that is not there is fine.
pub fn apply(config: &Path, program: &Path, on: bool) -> io::Result<()> {
    let path = entry_path(config);
    if on {
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(&path, entry(program))
    } else {
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// [`apply`] for the running binary.
pub fn apply_for_this_program(config: &Path, on: bool) -> io::Result<()> {
    apply(config, &std::env::current_exe()?, on)
}

/// Whether this launch came from the autostart entry.
pub fn launched_at_login<I: IntoIterator<Item = String>>(args: I) -> bool {
    args.into_iter().any(|arg| arg == AT_LOGIN)
}

/// `program` as the first word of an `Exec=` line: quoted, with the characters the Desktop
/// Entry spec escapes inside quotes escaped (a path may hold spaces or anything else).
pub(crate) fn exec_quoted(program: &Path) -> String {
    let mut quoted = String::from("\"");
    for c in program.to_string_lossy().chars() {
        if matches!(c, '"' | '`' | '$' | '\\') {
            quoted.push('\\');
        }
        // `%` is a field code in Exec lines; `%%` is a literal one.
        if c == '%' {
            quoted.push('%');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turning_it_on_writes_an_entry_that_starts_this_binary_at_login_and_off_removes_it() {
        let home = tempfile::tempdir().expect("a temporary folder");
        let config = home.path().join("config").join("hark");
        let program = Path::new("/opt/my apps/hark-desktop");
        apply(&config, program, true).expect("written");
        let path = home.path().join("config/autostart/hark-desktop.desktop");
        let text = std::fs::read_to_string(&path).expect("the entry");
        assert!(text.lines().any(|l| l == "Exec=\"/opt/my apps/hark-desktop\" --at-login"), "{text}");
        assert!(text.starts_with("[Desktop Entry]\n"));
        apply(&config, program, false).expect("removed");
        assert!(!path.exists());
        apply(&config, program, false).expect("removing it again is no error");
    }

    #[test]
    fn odd_characters_in_the_path_are_escaped() {
        assert_eq!(exec_quoted(Path::new("/a\"b$c%d")), "\"/a\\\"b\\$c%%d\"");
    }

    #[test]
    fn only_the_login_argument_marks_a_login_start() {
        assert!(launched_at_login(["--at-login".to_owned()]));
        assert!(!launched_at_login(["hark:call/alice".to_owned()]));
    }

    #[test]
    fn a_folder_in_the_way_is_an_error_not_a_panic() {
        let home = tempfile::tempdir().expect("a temporary folder");
        let config = home.path().join("hark");
        std::fs::create_dir_all(home.path().join("autostart/hark-desktop.desktop")).expect("a folder where the file goes");
        assert!(apply(&config, Path::new("/usr/bin/hark-desktop"), true).is_err());
        assert!(apply(&config, Path::new("/usr/bin/hark-desktop"), false).is_err());
    }
}
