//! A throw-away PostgreSQL for tests: Debian's server binaries (package `postgresql`), a fresh
//! cluster in a temporary folder, listening on 127.0.0.1 at a free port, fsync off. It stops
//! (immediately; nothing in it is worth keeping) when the value is dropped.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to, and runs as, the
//! `postgres` account the package creates.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::Connection;

/// A running throw-away cluster.
pub struct ThrowawayPostgres {
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    port: u16,
}

/// The newest installed server's programs (`/usr/lib/postgresql/<major>/bin`).
fn server_bin() -> PathBuf {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server is installed (/usr/lib/postgresql; the test command installs package postgresql)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    majors.sort();
    majors.pop().expect("a PostgreSQL server under /usr/lib/postgresql").1
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program args…`, as the `postgres` account when we are root.
fn as_cluster_owner(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(output.status.success(), "{what} failed: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    output
}

impl ThrowawayPostgres {
    /// Creates a cluster and starts it; returns once it accepts connections (`pg_ctl -w`).
    pub fn start() -> ThrowawayPostgres {
        let bin = server_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        if running_as_root() {
            // The cluster's owner must reach its folder.
            let owner = Command::new("id").args(["-u", "postgres"]).output().expect("id postgres");
            let group = Command::new("id").args(["-g", "postgres"]).output().expect("id -g postgres");
            let number = |o: Output| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().expect("the postgres account exists");
            std::os::unix::fs::chown(dir.path(), Some(number(owner)), Some(number(group))).expect("chown the temp dir");
        }
        let mut initdb = as_cluster_owner(&bin.join("initdb"));
        initdb.args(["--no-sync", "--auth=trust", "--username=hark", "--encoding=UTF8", "--no-locale", "-D"]).arg(&data);
        run(initdb, "initdb");
        let ((), port) = super::on_a_free_port("PostgreSQL", |port| {
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                data.display()
            );
            let mut start = as_cluster_owner(&bin.join("pg_ctl"));
            start.args(["-w", "-t", "60", "-D"]).arg(&data).args(["-l"]).arg(data.join("server.log")).args(["-o", &options, "start"]);
            let output = start.output().expect("pg_ctl start");
            if output.status.success() {
                return Ok(());
            }
            let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
            Err(format!("{}\n{log}", String::from_utf8_lossy(&output.stderr)))
        });
        ThrowawayPostgres { bin, data, _dir: dir, port }
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://hark@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await.expect("connect to the cluster");
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.expect("CREATE DATABASE");
        admin.close().await.expect("close");
        self.url(name)
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let mut stop = as_cluster_owner(&self.bin.join("pg_ctl"));
        stop.args(["-D"]).arg(&self.data).args(["-m", "immediate", "stop"]);
        let _ = stop.output();
    }
}

/// One throw-away cluster for the whole test program, stopped and removed when the program
/// exits (a static is never dropped, so an exit handler does what `Drop` would).
pub fn shared() -> &'static ThrowawayPostgres {
    static SHARED: std::sync::OnceLock<ThrowawayPostgres> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        extern "C" fn stop_shared() {
            if let Some(postgres) = SHARED.get() {
                let mut stop = as_cluster_owner(&postgres.bin.join("pg_ctl"));
                stop.args(["-D"]).arg(&postgres.data).args(["-m", "immediate", "stop"]);
                let _ = stop.output();
                let _ = std::fs::remove_dir_all(postgres._dir.path());
            }
        }
        // SAFETY: registers a plain function with no arguments, as atexit expects.
        unsafe { libc::atexit(stop_shared) };
        ThrowawayPostgres::start()
    })
}

/// A fresh database on the shared cluster; its URL.
pub async fn fresh_database() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared().create_database(&format!("t{}_{n}", std::process::id())).await
}
