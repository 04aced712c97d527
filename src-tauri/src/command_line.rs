//! What `hark-desktop` answers on the command line without starting: `--version` (how an
//! installed package is checked) and `--help`. Any other argument, a `hark:` link among them,
//! starts the app.

const HELP: &str = "\
usage: hark-desktop [hark:LINK | tel:NUMBER]

Starts Hark, the desktop softphone. A hark: link is offered as a call once you are signed in:
  hark:call/alice          call alice
  hark:call/alice?video    a video call
  hark:call/alice,bob      a group call (at most eight people)
  tel:4021                 call user 4021 (Settings: \"Open tel: links with Hark\")
When Hark already runs, the link goes to the running app.

An administrator's policy in /etc/hark/policy.toml (or the file HARK_POLICY_FILE names) can
lock the server, video, inviting more people, relay-only media, ringtone files and how
incoming calls show; see the README.

  -V, --version   print the version and exit
  -h, --help      print this text and exit";

/// The text to print before exiting, when the arguments ask for one instead of the app.
pub fn answer<I: IntoIterator<Item = String>>(args: I) -> Option<String> {
    args.into_iter().find_map(|arg| match arg.as_str() {
        "--version" | "-V" => Some(format!("hark-desktop {}", env!("CARGO_PKG_VERSION"))),
        "--help" | "-h" => Some(HELP.to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(args: &[&str]) -> Option<String> {
        answer(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn version_and_help_are_answered_and_links_start_the_app() {
        assert_eq!(answer_to(&["--version"]).as_deref(), Some(concat!("hark-desktop ", env!("CARGO_PKG_VERSION"))));
        assert_eq!(answer_to(&["-V"]), answer_to(&["--version"]));
        assert!(answer_to(&["--help"]).is_some_and(|text| text.contains("hark:call/alice")));
        assert_eq!(answer_to(&["hark:call/alice"]), None);
        assert_eq!(answer_to(&[]), None);
    }
}
