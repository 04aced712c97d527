//! `cargo xtask bench signaling --nodes N`: one hark-server beside a cluster of N, in one run on
//! this machine, with the cluster's nats-server and PostgreSQL here too.
//!
//! For each of the two set-ups, in turn: a hold run (sessions open at once, spread over the
//! nodes; RSS per session on each node), a flat-out run (1,000 pairs looping full setups) and a
//! paced run at 1,000 setups/s, where each pair's caller and callee are on different nodes (the
//! load generator gives session k to node k mod N). CPU per setup is split between the
//! hark-servers, nats-server and PostgreSQL (the postmaster and its backends), from /proc.
//!
//! The single server keeps its records in SQLite, as a single server does; the cluster's nodes
//! share one PostgreSQL (Debian's, started in a scratch folder with its default durability) and
//! one nats-server with JetStream (a scratch store).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{cpu_seconds, rss_kib, wait_for, LoadReport, Loadgen, Machine, Process, Scratch, Server};

/// Sessions of the setup runs: 1,000 pairs.
const SETUP_SESSIONS: usize = 2_000;
/// The paced runs' rate, at which the latency target applies.
const PACED_RATE: f64 = 1_000.0;
/// invite -> incoming p99 target on the cluster at [`PACED_RATE`], caller and callee on
/// different nodes.
const TARGET_P99_MS: f64 = 15.0;

pub const SECTION_TITLE: &str = "## Signaling on several nodes (cargo xtask bench signaling --nodes 3)";

/// What `--nodes` runs with.
pub struct ClusterOptions {
    pub nodes: usize,
    pub hold_sessions: usize,
    pub duration_s: f64,
    pub record: bool,
}

/// A set-up's processes whose CPU is counted.
struct Counted {
    servers: Vec<u32>,
    nats: Option<u32>,
    postgres: Option<PathBuf>,
}

/// CPU seconds so far: hark-servers, nats-server, PostgreSQL.
fn cpu_of(counted: &Counted) -> Result<[f64; 3]> {
    let mut servers = 0.0;
    for pid in &counted.servers {
        servers += cpu_seconds(*pid)?;
    }
    let nats = counted.nats.map(cpu_seconds).transpose()?.unwrap_or(0.0);
    let postgres = match &counted.postgres {
        Some(data) => postgres_cpu(data)?,
        None => 0.0,
    };
    Ok([servers, nats, postgres])
}

/// CPU seconds of a PostgreSQL's postmaster and every process it started (its backends).
fn postgres_cpu(data: &Path) -> Result<f64> {
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).context("reading postmaster.pid")?;
    let postmaster: u32 = pid_file.lines().next().and_then(|l| l.trim().parse().ok()).context("unreadable postmaster.pid")?;
    let mut total = cpu_seconds(postmaster)?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if parent == Some(postmaster) {
            // A backend that ended between the listing and the read counts nothing.
            total += cpu_seconds(pid).unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// What one set-up measured.
struct Setup {
    nodes: usize,
    /// Per node: sessions it held and its RSS growth in KiB.
    held: Vec<(i64, i64)>,
    hold_errors: u64,
    flat: LoadReport,
    flat_cpu: [f64; 3],
    paced: LoadReport,
    paced_cpu: [f64; 3],
}

pub fn run(options: ClusterOptions, server_bin: &Path, loadgen_bin: &Path, root: &Path, command_line: &str) -> Result<()> {
    let mut scratch = Scratch::new()?;
    let outcome = (|| -> Result<(Setup, Setup)> {
        let single = {
            let dir = scratch.path.join("single");
            std::fs::create_dir_all(&dir)?;
            let config = bench_config(&dir)?;
            let server = Server::start_with(server_bin, &dir, &config, &[])?;
            let secret_file = dir.join("signing.key");
            wait_for(Duration::from_secs(10), || secret_file.exists())?;
            eprintln!("bench: one node (SQLite), pid {}", server.pid());
            let counted = Counted { servers: vec![server.pid()], nats: None, postgres: None };
            measure(vec![server], &counted, loadgen_bin, secret_file, &options)?
        };
        let nats = Nats::start(&scratch.path.join("nats"))?;
        let postgres = Postgres::start(&scratch.path.join("postgres"))?;
        let key = scratch.path.join("signing.key");
        std::fs::write(&key, "the-cluster-benchmarks-shared-signing-key-0123456789")?;
        set_owner_only(&key)?;
        let mut servers = Vec::new();
        for n in 0..options.nodes {
            let dir = scratch.path.join(format!("node{n}"));
            std::fs::create_dir_all(&dir)?;
            let config = bench_config(&dir)?;
            let extra = [
                "--nats".to_owned(),
                nats.url(),
                "--database".to_owned(),
                postgres.url(),
                "--signing-key".to_owned(),
                key.display().to_string(),
                "--node-id".to_owned(),
                format!("node{n}"),
            ];
            servers.push(Server::start_with(server_bin, &dir, &config, &extra)?);
        }
        eprintln!("bench: {} nodes, nats-server pid {}, PostgreSQL in {}", options.nodes, nats.process.pid(), postgres.data.display());
        let counted = Counted {
            servers: servers.iter().map(Server::pid).collect(),
            nats: Some(nats.process.pid()),
            postgres: Some(postgres.data.clone()),
        };
        let cluster = measure(servers, &counted, loadgen_bin, key, &options)?;
        drop(postgres);
        drop(nats);
        Ok((single, cluster))
    })();
    let (single, cluster) = match outcome {
        Ok(setups) => setups,
        Err(e) => {
            scratch.keep = true;
            return Err(e.context(format!("logs in {}", scratch.path.display())));
        }
    };
    let report = render(&single, &cluster, &options, &Machine::read(), command_line);
    println!("\n{report}");
    if options.record {
        let path = root.join("docs/BENCHMARKS.md");
        super::record(&path, &report)?;
        eprintln!("bench: recorded in {}", path.display());
    }
    Ok(())
}

fn set_owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn bench_config(dir: &Path) -> Result<PathBuf> {
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        "# Written by `cargo xtask bench signaling --nodes`: limits out of the benchmark's way.\n\
         connections_per_source = 1000000\n\
         [rate_limits]\ninvites_per_minute = 1000000\nlogins_per_minute = 1000000\n",
    )?;
    Ok(config)
}

/// The hold, flat-out and paced runs against `servers`.
fn measure(mut servers: Vec<Server>, counted: &Counted, loadgen_bin: &Path, secret_file: PathBuf, options: &ClusterOptions) -> Result<Setup> {
    let loadgen = Loadgen {
        bin: loadgen_bin.to_owned(),
        url: servers.iter().map(|s| format!("ws://{}/v1/ws", s.addr)).collect::<Vec<_>>().join(","),
        secret_file,
    };
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<u64> = servers.iter().map(|s| rss_kib(s.pid())).collect::<Result<_>>()?;
    eprintln!("bench: hold run, {} sessions over {} node(s)", options.hold_sessions, servers.len());
    let mut command = loadgen.command("h", 1, 0, options.hold_sessions);
    command.args(["--hold", "3600"]);
    let mut holder = Process::spawn("hark-loadgen", &mut command)?;
    holder.wait_line(Duration::from_secs(600), |line| line.strip_prefix("sessions-up ").map(str::to_owned))?;
    // RSS settles within a few seconds once the sessions are up.
    std::thread::sleep(Duration::from_secs(5));
    let mut held = Vec::new();
    for (server, before) in servers.iter().zip(&before) {
        let sessions = metric(&server.metrics()?, "hark_sessions").unwrap_or(0.0) as i64;
        held.push((sessions, rss_kib(server.pid())? as i64 - *before as i64));
    }
    holder.signal("-TERM");
    let json = holder.wait_line(Duration::from_secs(60), |line| line.starts_with('{').then(|| line.to_owned()))?;
    holder.stop(Duration::from_secs(10))?;
    let hold_errors = LoadReport::parse(&json)?.errors;
    std::thread::sleep(Duration::from_secs(2));

    let mut drive = |prefix: &str, subnet: u8, rate: f64| -> Result<(LoadReport, [f64; 3])> {
        let mut command = loadgen.command(prefix, subnet, 0, SETUP_SESSIONS);
        command.args(["--rate", &rate.to_string(), "--duration", &options.duration_s.to_string()]);
        let mut process = Process::spawn("hark-loadgen", &mut command)?;
        let before = cpu_of(counted)?;
        let json = process.wait_line(Duration::from_secs_f64(options.duration_s + 300.0), |line| line.starts_with('{').then(|| line.to_owned()))?;
        let after = cpu_of(counted)?;
        process.stop(Duration::from_secs(10))?;
        for server in &mut servers {
            server.check_alive()?;
        }
        Ok((LoadReport::parse(&json)?, [after[0] - before[0], after[1] - before[1], after[2] - before[2]]))
    };
    eprintln!("bench: flat-out run, {} pairs, {} s", SETUP_SESSIONS / 2, options.duration_s);
    let (flat, flat_cpu) = drive("f", 2, 0.0)?;
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("bench: paced run, {PACED_RATE} setups/s, {} s", options.duration_s);
    let (paced, paced_cpu) = drive("p", 3, PACED_RATE)?;
    let nodes = servers.len();
    for mut server in servers {
        server.stop()?;
    }
    Ok(Setup { nodes, held, hold_errors, flat, flat_cpu, paced, paced_cpu })
}

/// The value of an unlabelled metric in a Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// A nats-server with JetStream, its store in `dir`, on a free loopback port.
struct Nats {
    process: Process,
    port: u16,
}

impl Nats {
    fn start(dir: &Path) -> Result<Nats> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("nats.log"))?;
        let process = Process::spawn(
            "nats-server",
            Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir)
                .stderr(log),
        )?;
        wait_for(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok()).context("nats-server did not listen")?;
        Ok(Nats { process, port })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Debian's PostgreSQL in a scratch folder, as the `postgres` account when run as root (it
/// refuses root), stopped when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(dir: &Path) -> Result<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL's server is not installed (package postgresql; cargo xtask test installs it)")?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .context("no initdb under /usr/lib/postgresql")?;
        std::fs::create_dir_all(dir)?;
        let root = crate::system_packages::is_root();
        if root {
            let status = Command::new("chown").args(["postgres:postgres"]).arg(dir).status()?;
            if !status.success() {
                bail!("chown postgres {} failed", dir.display());
            }
        }
        let as_owner = |program: &str| {
            let mut command = if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            command.stdout(std::process::Stdio::null());
            command
        };
        let data = dir.join("data");
        let status = as_owner("initdb").args(["--auth=trust", "--username=hark", "--encoding=UTF8", "--no-locale", "-D"]).arg(&data).status()?;
        if !status.success() {
            bail!("initdb failed");
        }
        let port = free_port()?;
        let options = format!("-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=200", data.display());
        let status = as_owner("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-o", &options, "start"])
            .status()?;
        if !status.success() {
            bail!("pg_ctl start failed (log: {})", data.join("server.log").display());
        }
        Ok(Postgres { bin, data, port })
    }

    fn url(&self) -> String {
        format!("postgres://hark@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = if crate::system_packages::is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = stop.args(["-D"]).arg(&self.data).args(["-m", "fast", "stop"]).stdout(std::process::Stdio::null()).status();
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.2} ms"))
}

fn render(single: &Setup, cluster: &Setup, options: &ClusterOptions, machine: &Machine, command_line: &str) -> String {
    let setting = format!(
        "one hark-server (SQLite) and then {} nodes on one nats-server {} and one PostgreSQL, all on this machine with the load generator; {} s per setup run",
        cluster.nodes,
        nats_version(),
        options.duration_s
    );
    let mut out = super::section_opening(SECTION_TITLE, &setting, machine, command_line);
    let mut row = |figure: String, result: String, target: &str, verdict: &str| {
        out.push_str(&format!("| {figure} | {result} | {target} | {verdict} |\n"));
    };
    for (name, setup) in [("1 node", single), (&*format!("{} nodes", cluster.nodes), cluster)] {
        row(
            format!("{name}: call setups/s flat out ({} pairs)", SETUP_SESSIONS / 2),
            format!("{:.0} ({} errors)", setup.flat.setups_per_s, setup.flat.errors),
            "",
            "",
        );
    }
    row(
        "flat out, 3 nodes / 1 node".into(),
        format!("{:.2}×", cluster.flat.setups_per_s / single.flat.setups_per_s.max(1.0)),
        "",
        "",
    );
    for (name, setup) in [("1 node", single), (&*format!("{} nodes", cluster.nodes), cluster)] {
        let met = if setup.nodes > 1 {
            match setup.paced.incoming_p99_ms {
                Some(p99) if p99 <= TARGET_P99_MS => "met",
                _ => "missed",
            }
        } else {
            ""
        };
        row(
            format!("{name}: invite → incoming p50 / p99 at {PACED_RATE:.0} setups/s{}", if setup.nodes > 1 { " (caller and callee on different nodes)" } else { "" }),
            format!(
                "{} / {} ({:.0} setups/s reached, {} errors)",
                ms(setup.paced.incoming_p50_ms),
                ms(setup.paced.incoming_p99_ms),
                setup.paced.setups_per_s,
                setup.paced.errors
            ),
            if setup.nodes > 1 { "p99 ≤ 15 ms" } else { "" },
            met,
        );
    }
    for (name, setup) in [("1 node", single), (&*format!("{} nodes", cluster.nodes), cluster)] {
        let per_node: Vec<String> = setup
            .held
            .iter()
            .map(|(sessions, kib)| format!("{:.1} KiB ({sessions} sessions)", *kib as f64 / (*sessions).max(1) as f64))
            .collect();
        row(
            format!("{name}: RSS growth per session held, each node ({} sessions in all)", options.hold_sessions),
            format!("{}{}", per_node.join(", "), if setup.hold_errors > 0 { format!("; {} errors", setup.hold_errors) } else { String::new() }),
            "",
            "",
        );
    }
    for (name, setup) in [("1 node", single), (&*format!("{} nodes", cluster.nodes), cluster)] {
        let runs = [(format!("at {PACED_RATE:.0}/s"), &setup.paced, setup.paced_cpu), ("flat out".to_owned(), &setup.flat, setup.flat_cpu)];
        for (when, run, cpu) in runs {
            let setups = run.setups.max(1) as f64;
            let [servers, nats, postgres] = cpu.map(|seconds| seconds / setups * 1e6);
            row(format!("{name}: CPU per setup {when}: hark-server(s) / nats-server / PostgreSQL"), format!("{servers:.0} / {nats:.0} / {postgres:.0} µs"), "", "");
        }
    }
    out
}

fn nats_version() -> String {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().trim_start_matches("nats-server: ").to_owned())
        .unwrap_or_default()
}
