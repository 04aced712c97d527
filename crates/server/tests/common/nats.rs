//! A throw-away nats-server for tests: Debian's binary (package `nats-server`), JetStream on, its
//! store in a temporary folder, listening on 127.0.0.1 at a free port. It can be killed (SIGKILL)
//! and started again on the same port and store, as an operator's restart would; it is killed
//! when the value is dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running (or killed) throw-away nats-server.
pub struct ThrowawayNats {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|path| path.exists())
        .expect("nats-server is installed (the test command installs package nats-server)")
}

impl ThrowawayNats {
    /// Starts one on a free port; returns once it says it is ready.
    pub fn start() -> ThrowawayNats {
        let store = tempfile::tempdir().expect("temp dir");
        let (child, port) = super::on_a_free_port("nats-server", |port| run(port, store.path()));
        ThrowawayNats { child: Some(child), port, store }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same port with an empty store, as after a lost disk.
    pub fn restart_without_its_store(&mut self) {
        self.kill();
        for entry in std::fs::read_dir(self.store.path()).expect("the store").flatten() {
            std::fs::remove_dir_all(entry.path()).or_else(|_| std::fs::remove_file(entry.path())).expect("emptied");
        }
        self.restart();
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(run(self.port, self.store.path()).unwrap_or_else(|why| panic!("nats-server did not start again: {why}")));
    }
}

/// Starts nats-server on `port` with its JetStream store in `store`; returns once it says it is
/// ready, or what it said before it ended.
fn run(port: u16, store: &std::path::Path) -> Result<Child, String> {
    let mut child = Command::new(binary())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut said = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("Server is ready") => break,
            Some(Ok(line)) => said.push(line),
            Some(Err(_)) | None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(said.join("\n"));
            }
        }
    }
    // Keep reading its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

impl Drop for ThrowawayNats {
    fn drop(&mut self) {
        self.kill();
    }
}
