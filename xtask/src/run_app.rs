//! `cargo xtask run`: build and start Hark on this machine.
//!
//! For now Hark is only the signaling server: `hark-server serve` on 127.0.0.1:7600 with its
//! data (SQLite database and signing key) in the user's data folder. xtask prints how to connect,
//! then hands the terminal to the server, so Ctrl-C reaches the server and stops it.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::workspace::{self, ChildOutcome};

const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

/// Where the server listens and keeps its data.
struct ServerSettings {
    listen: String,
    data_dir: PathBuf,
}

pub fn run(args: &[String]) -> anyhow::Result<ChildOutcome> {
    let settings = parse_settings(args)?;
    create_private_dir(&settings.data_dir)?;

    print_how_to_connect(&settings);

    // Later: build the desktop app (src-tauri) here and start it alongside the server,
    // pointed at `settings.listen`; then wait for both and stop the server when the app exits.

    let mut server = workspace::cargo_command()?;
    server
        .args(["run", "--release", "-p", "hark-server", "--", "serve", "--listen"])
        .arg(&settings.listen)
        .arg("--data-dir")
        .arg(&settings.data_dir);
    println!("xtask: running {}", workspace::describe(&server));
    hand_over_to(server)
}

/// Replaces xtask with the server process (Unix), so signals such as Ctrl-C go straight to it.
#[cfg(unix)]
fn hand_over_to(mut command: std::process::Command) -> anyhow::Result<ChildOutcome> {
    use std::os::unix::process::CommandExt;
    let error = command.exec();
    Err(error).with_context(|| format!("could not start {}", workspace::describe(&command)))
}

/// Elsewhere: run the server as a child and wait; the console delivers Ctrl-C to both.
#[cfg(not(unix))]
fn hand_over_to(mut command: std::process::Command) -> anyhow::Result<ChildOutcome> {
    workspace::run_to_completion(&mut command)
}

fn parse_settings(args: &[String]) -> anyhow::Result<ServerSettings> {
    let mut listen = None;
    let mut data_dir = None;
    let mut remaining = args.iter();
    while let Some(arg) = remaining.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let slot = match flag {
            "--listen" => &mut listen,
            "--data-dir" => &mut data_dir,
            _ => bail!("unknown argument `{arg}` (expected --listen ADDR or --data-dir DIR)"),
        };
        let value = match inline_value {
            Some(value) => value,
            None => remaining
                .next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))?,
        };
        *slot = Some(value);
    }
    Ok(ServerSettings {
        listen: listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
        data_dir: match data_dir {
            Some(dir) => PathBuf::from(dir),
            None => default_data_dir()?,
        },
    })
}

/// Creates `dir` (and missing parents) readable by its owner only: it will hold the signing key.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("could not create {}", dir.display()))
}

/// `$XDG_DATA_HOME/hark/server`, else `$HOME/.local/share/hark/server`.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let data_home = match non_empty("XDG_DATA_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME").context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?)
            .join(".local/share"),
    };
    Ok(data_home.join("hark").join("server"))
}

fn print_how_to_connect(settings: &ServerSettings) {
    let listen = &settings.listen;
    let data_dir = settings.data_dir.display();
    println!(
        "\
xtask: building and starting the Hark signaling server (release build)
  listening on  {listen}
  data dir      {data_dir}   (hark.db and signing.key)

  base URL      http://{listen}
  WebSocket     ws://{listen}/v1/ws
  health        http://{listen}/healthz   metrics: http://{listen}/metrics

  register a user:
    curl -X POST http://{listen}/v1/register -H 'content-type: application/json' \\
         -d '{{\"user\":\"alice\",\"password\":\"correct horse battery\"}}'
  mint a token for a user (hark-server token alice --data-dir {data_dir}):
    cargo run --release -p hark-server -- token alice --data-dir {data_dir}

  Ctrl-C stops the server.
"
    );
}
