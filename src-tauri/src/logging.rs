//! Logging to stderr and to a daily file under the state folder (kept for a week).

use crate::store::AppDirs;

/// Starts logging; the guard keeps the file writer running and flushes it when dropped.
pub(crate) fn init_logging(dirs: &AppDirs) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::prelude::*;
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tao=warn,wry=warn".into());
    let logs = dirs.state.join("logs");
    // The appender prunes old files by listing the folder, which must exist first.
    let _ = std::fs::create_dir_all(&logs);
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("hark")
        .filename_suffix("log")
        .max_log_files(7)
        .build(&logs);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter());
    match appender {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let file = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer).with_filter(filter());
            tracing_subscriber::registry().with(stderr).with(file).init();
            Some(guard)
        }
        Err(error) => {
            tracing_subscriber::registry().with(stderr).init();
            tracing::warn!(%error, path = %logs.display(), "no log file");
            None
        }
    }
}
