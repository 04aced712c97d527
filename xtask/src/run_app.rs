//! `cargo xtask run`: build and start Hark on this machine.
//!
//! By default that is the desktop app: xtask installs the Debian packages and the UI's npm
//! packages, builds the UI and `hark-desktop` (the `desktop` profile: release, optimised for
//! size), and starts it. With no server
//! configured the app runs its own hark-server on 127.0.0.1:7600 (data in the XDG data folder)
//! and the echo test service, so a new user can sign up and call `echo` at once.
//!
//! `--headless` runs the same thing without a display: `hark-server serve` on 127.0.0.1:7600
//! with its data (SQLite database, signing key, a config making `echo` a service account) in the
//! user's data folder, and `hark-cli echo` signed in as `echo` with a password generated on first
//! run (the same folder and password file the app's built-in server uses). xtask prints how to
//! call echo, then waits; Ctrl-C reaches every process of the terminal and stops them all.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::system_packages;
use crate::workspace::{self, ChildOutcome};

const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

/// Where the server listens and keeps its data.
struct ServerSettings {
    listen: String,
    data_dir: PathBuf,
}

pub fn run(args: &[String]) -> anyhow::Result<ChildOutcome> {
    if args.first().map(String::as_str) == Some("--headless") {
        return run_headless(&args[1..]);
    }
    if let Some(arg) = args.first() {
        bail!("unknown argument `{arg}` (expected nothing, or --headless [--listen ADDR] [--data-dir DIR])");
    }
    system_packages::ensure_installed(system_packages::SYSTEM_PACKAGES)?;
    let root = workspace::root()?;
    for (what, args) in [("installing the UI's npm packages", &["ci", "--no-audit", "--no-fund"][..]), ("building the UI", &["run", "build"][..])] {
        let mut npm = workspace::npm_command(args)?;
        println!("xtask: {what}: {}", workspace::describe(&npm));
        if let ChildOutcome::Failed(code) = workspace::run_to_completion(&mut npm)? {
            return Ok(ChildOutcome::Failed(code));
        }
    }
    let mut build = workspace::cargo_command()?;
    build.args(["build", "--profile", "desktop", "--locked", "-p", "hark-desktop"]);
    println!("xtask: building the app: {}", workspace::describe(&build));
    if let ChildOutcome::Failed(code) = workspace::run_to_completion(&mut build)? {
        return Ok(ChildOutcome::Failed(code));
    }
    let mut app = std::process::Command::new(root.join("target/desktop/hark-desktop"));
    println!(
        "xtask: starting Hark ({}). With no server configured it runs its own on {DEFAULT_LISTEN} \
         and the echo test service: sign up, then dial `echo`.",
        workspace::describe(&app)
    );
    workspace::run_to_completion(&mut app)
}

fn run_headless(args: &[String]) -> anyhow::Result<ChildOutcome> {
    let settings = parse_settings(args)?;
    create_private_dir(&settings.data_dir)?;

    let config = settings.data_dir.join("server.toml");
    if !config.exists() {
        std::fs::write(&config, "# Written by cargo xtask run; see README.md for every key.\nservice_accounts = [\"echo\"]\n")
            .with_context(|| format!("could not write {}", config.display()))?;
    }
    let echo_password = echo_password(&settings.data_dir)?;

    let mut build = workspace::cargo_command()?;
    build.args(["build", "--release", "-p", "hark-server", "-p", "hark-cli"]);
    println!("xtask: running {}", workspace::describe(&build));
    if let ChildOutcome::Failed(code) = workspace::run_to_completion(&mut build)? {
        return Ok(ChildOutcome::Failed(code));
    }
    let binaries = workspace::root()?.join("target/release");
    let mut server = std::process::Command::new(binaries.join("hark-server"));
    server.args(["serve", "--listen", &settings.listen, "--config"]).arg(&config).arg("--data-dir").arg(&settings.data_dir);
    println!("xtask: starting {}", workspace::describe(&server));
    let mut server = server.spawn().context("could not start hark-server")?;
    wait_until_listening(&settings.listen)?;

    let mut echo = std::process::Command::new(binaries.join("hark-cli"));
    echo.args(["--server", &format!("http://{}", settings.listen), "--user", "echo", "--password", &echo_password])
        .args(["--register", "--mic", "silence", "--speaker", "none", "--bind", "127.0.0.1:0", "--bind", "0.0.0.0:0", "echo"]);
    println!("xtask: starting the echo service (hark-cli echo)");
    let mut echo = echo.spawn().context("could not start the echo service")?;
    print_how_to_connect(&settings);

    let status = server.wait().context("waiting for hark-server")?;
    let _ = echo.kill();
    let _ = echo.wait();
    Ok(if status.success() { ChildOutcome::Success } else { ChildOutcome::Failed(status.code().unwrap_or(1).clamp(1, 255) as u8) })
}

/// The echo account's password: generated once (from the kernel's random source) and kept
/// owner-only in the data dir, so nobody else can sign in as the echo service.
fn echo_password(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let path = data_dir.join("echo.password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    let mut bytes = [0u8; 18];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    writeln!(options.open(&path).with_context(|| format!("could not write {}", path.display()))?, "{password}")?;
    Ok(password)
}

/// Polls the server's health endpoint for up to 30 s.
fn wait_until_listening(listen: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(listen) {
            let _ = write!(stream, "GET /healthz HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            if stream.read_to_string(&mut answer).is_ok() && answer.contains("200") {
                return Ok(());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("hark-server did not answer on {listen} within 30 s")
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
xtask: Hark is running: the signaling server and the echo test service
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

  call the echo test service with your microphone and speaker (you hear yourself 1 s later):
    cargo run --release -p hark-cli -- --server http://{listen} --user alice \\
        --password 'correct horse battery' --register --bind 127.0.0.1:0 call echo

  Ctrl-C stops the server and the echo service.
"
    );
}
