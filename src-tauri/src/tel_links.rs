//! "Open tel: links with Hark": makes Hark this user's handler for `tel:` links, and gives them
//! back when turned off. `tel:` is shared with other dialers, so nothing system-wide is touched:
//! a hidden desktop entry of our own (`$XDG_DATA_HOME/applications/hark-tel.desktop`) and the
//! `x-scheme-handler/tel=` line of the user's `$XDG_CONFIG_HOME/mimeapps.list`, which is what
//! `xdg-open` and `xdg-mime query default` read. The handler that line named before is kept in
//! `$XDG_CONFIG_HOME/hark/tel-handler-before` and written back when the setting goes off; if the
//! person has since chosen another dialer themselves, that choice is left alone.

use std::io;
use std::path::{Path, PathBuf};

/// Our desktop entry's file name, which the mimeapps line names.
pub const ENTRY: &str = "hark-tel.desktop";
/// The scheme's MIME type.
const TEL: &str = "x-scheme-handler/tel";
/// The section of `mimeapps.list` that says which application opens a type.
const DEFAULTS_SECTION: &str = "[Default Applications]";

/// The files the setting touches, for the user whose Hark folders are `config` and `data`
/// (`$XDG_CONFIG_HOME/hark`, `$XDG_DATA_HOME/hark`).
#[derive(Debug, Clone)]
pub struct TelPlaces {
    /// Our desktop entry.
    pub entry: PathBuf,
    /// The user's `mimeapps.list`.
    pub mimeapps: PathBuf,
    /// The handler before ours (the file's text: a desktop entry, or empty for none).
    pub before: PathBuf,
}

impl TelPlaces {
    /// The places for the folders Hark keeps its own files in.
    pub fn for_dirs(config: &Path, data: &Path) -> TelPlaces {
        let config_home = config.parent().unwrap_or(config);
        let data_home = data.parent().unwrap_or(data);
        TelPlaces { entry: data_home.join("applications").join(ENTRY), mimeapps: config_home.join("mimeapps.list"), before: config.join("tel-handler-before") }
    }
}

/// Our entry's text, starting `program`.
pub fn entry(program: &Path) -> String {
    format!(
        "[Desktop Entry]\n\
         Type=Application\n\
         Name=Hark\n\
         Comment=Calls tel: numbers with Hark\n\
         Exec={} %u\n\
         Icon=hark-desktop\n\
         Terminal=false\n\
         NoDisplay=true\n\
         MimeType={TEL};\n",
        exec_word(program)
    )
}

/// `program` as the `Exec=` line's first word: bare when it needs no quoting, because
/// `xdg-open` with no desktop environment runs that word as written, quotes and all.
fn exec_word(program: &Path) -> String {
    let text = program.to_string_lossy();
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c)) {
        text.into_owned()
    } else {
        crate::autostart::exec_quoted(program)
    }
}

/// Registers Hark for `tel:` (when `on`) or gives the links back.
pub fn apply(places: &TelPlaces, program: &Path, on: bool) -> io::Result<()> {
    let list = read_or_empty(&places.mimeapps)?;
    let current = default_in(&list, TEL);
    if on {
        write_creating(&places.entry, &entry(program))?;
        // Only the first time: turning it on twice must not remember ourselves.
        if current.as_deref() != Some(ENTRY) && !places.before.exists() {
            write_creating(&places.before, current.as_deref().unwrap_or(""))?;
        }
        write_creating(&places.mimeapps, &with_default(&list, TEL, Some(ENTRY)))
    } else {
        if current.as_deref() == Some(ENTRY) {
            let before = read_or_empty(&places.before)?;
            let before = before.trim();
            write_creating(&places.mimeapps, &with_default(&list, TEL, (!before.is_empty()).then_some(before)))?;
        }
        remove_if_there(&places.before)?;
        remove_if_there(&places.entry)
    }
}

/// The handler `text` (a `mimeapps.list`) names for `mime` in its defaults section.
pub fn default_in(text: &str, mime: &str) -> Option<String> {
    let mut in_defaults = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_defaults = line == DEFAULTS_SECTION;
        } else if in_defaults {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == mime {
                    return Some(value.trim().to_owned()).filter(|v| !v.is_empty());
                }
            }
        }
    }
    None
}

/// `text` with `mime`'s default set to `handler` (or its line removed for `None`), every other
/// line as it was; the section is added when missing.
pub fn with_default(text: &str, mime: &str, handler: Option<&str>) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let is_ours = |line: &str| line.split_once('=').is_some_and(|(key, _)| key.trim() == mime);
    let mut section = None;
    let mut in_defaults = false;
    let mut found = None;
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_defaults = trimmed == DEFAULTS_SECTION;
            if in_defaults && section.is_none() {
                section = Some(index);
            }
        } else if in_defaults && found.is_none() && is_ours(trimmed) {
            found = Some(index);
        }
    }
    let line = handler.map(|handler| format!("{mime}={handler}"));
    match (found, line, section) {
        (Some(index), Some(line), _) => lines[index] = line,
        (Some(index), None, _) => {
            lines.remove(index);
        }
        (None, Some(line), Some(index)) => lines.insert(index + 1, line),
        (None, Some(line), None) => {
            if lines.last().is_some_and(|last| !last.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(DEFAULTS_SECTION.to_owned());
            lines.push(line);
        }
        (None, None, _) => {}
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn read_or_empty(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        other => other,
    }
}

fn write_creating(path: &Path, text: &str) -> io::Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    std::fs::write(path, text)
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTHERS: &str = "# mine\n[Added Associations]\nx-scheme-handler/tel=other-dialer.desktop;\n\n[Default Applications]\ntext/html=firefox.desktop\nx-scheme-handler/tel=other-dialer.desktop\n";

    #[test]
    fn the_tel_line_is_read_only_in_the_defaults_section() {
        assert_eq!(default_in(OTHERS, TEL).as_deref(), Some("other-dialer.desktop"));
        assert_eq!(default_in("[Added Associations]\nx-scheme-handler/tel=x.desktop\n", TEL), None);
        assert_eq!(default_in("", TEL), None);
    }

    #[test]
    fn setting_the_tel_line_keeps_every_other_line() {
        let ours = with_default(OTHERS, TEL, Some(ENTRY));
        assert_eq!(ours, OTHERS.replace("tel=other-dialer.desktop\n", "tel=hark-tel.desktop\n"));
        assert!(ours.contains("[Added Associations]\nx-scheme-handler/tel=other-dialer.desktop;"), "other sections are not ours");
        assert_eq!(with_default(&ours, TEL, None), "# mine\n[Added Associations]\nx-scheme-handler/tel=other-dialer.desktop;\n\n[Default Applications]\ntext/html=firefox.desktop\n");
        assert_eq!(with_default("", TEL, Some(ENTRY)), "[Default Applications]\nx-scheme-handler/tel=hark-tel.desktop\n");
        assert_eq!(with_default("[Default Applications]\ntext/html=f.desktop", TEL, Some(ENTRY)), "[Default Applications]\nx-scheme-handler/tel=hark-tel.desktop\ntext/html=f.desktop\n");
        assert_eq!(with_default("[Other]\na=b\n", TEL, Some(ENTRY)), "[Other]\na=b\n\n[Default Applications]\nx-scheme-handler/tel=hark-tel.desktop\n");
    }

    fn places(root: &Path) -> TelPlaces {
        TelPlaces::for_dirs(&root.join("config/hark"), &root.join("data/hark"))
    }

    #[test]
    fn turning_it_on_and_off_gives_the_links_back() {
        let root = tempfile::tempdir().unwrap();
        let places = places(root.path());
        assert_eq!(places.mimeapps, root.path().join("config/mimeapps.list"));
        assert_eq!(places.entry, root.path().join("data/applications/hark-tel.desktop"));
        std::fs::create_dir_all(places.mimeapps.parent().unwrap()).unwrap();
        std::fs::write(&places.mimeapps, OTHERS).unwrap();
        let program = Path::new("/opt/my apps/hark-desktop");
        apply(&places, program, true).unwrap();
        apply(&places, program, true).unwrap();
        assert_eq!(default_in(&std::fs::read_to_string(&places.mimeapps).unwrap(), TEL).as_deref(), Some(ENTRY));
        let entry = std::fs::read_to_string(&places.entry).unwrap();
        assert!(entry.contains("Exec=\"/opt/my apps/hark-desktop\" %u\n") && entry.contains("MimeType=x-scheme-handler/tel;\n"), "{entry}");
        apply(&places, program, false).unwrap();
        assert_eq!(std::fs::read_to_string(&places.mimeapps).unwrap(), OTHERS, "the dialer before is back, twice on did not lose it");
        assert!(!places.entry.exists() && !places.before.exists());
    }

    #[test]
    fn with_no_dialer_before_off_leaves_none_and_a_later_choice_stands() {
        let root = tempfile::tempdir().unwrap();
        let places = places(root.path());
        let program = Path::new("/usr/bin/hark-desktop");
        apply(&places, program, true).unwrap();
        assert!(std::fs::read_to_string(&places.entry).unwrap().contains("\nExec=/usr/bin/hark-desktop %u\n"), "a plain path stays bare");
        apply(&places, program, false).unwrap();
        assert_eq!(default_in(&std::fs::read_to_string(&places.mimeapps).unwrap(), TEL), None);
        // The person picks another dialer while ours is on: turning ours off leaves theirs.
        apply(&places, program, true).unwrap();
        let list = std::fs::read_to_string(&places.mimeapps).unwrap();
        std::fs::write(&places.mimeapps, with_default(&list, TEL, Some("chosen.desktop"))).unwrap();
        apply(&places, program, false).unwrap();
        assert_eq!(default_in(&std::fs::read_to_string(&places.mimeapps).unwrap(), TEL).as_deref(), Some("chosen.desktop"));
    }
}
