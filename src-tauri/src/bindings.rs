//! The UI's TypeScript types, generated from the Rust types. `HARK_WRITE_BINDINGS=1 cargo
//! test -p hark-desktop bindings` rewrites `ui/src/lib/bindings/`; without it the test fails
//! when the committed files differ from what the Rust types say.

use std::path::{Path, PathBuf};
use ts_rs::TS;

fn export_all(dir: &Path) {
    macro_rules! export {
        ($($t:ty),* $(,)?) => { $( <$t>::export_all_to(dir).unwrap(); )* };
    }
    export!(
        crate::api::ApiError,
        crate::api::SignInRequest,
        crate::api::Account,
        crate::api::AppInfo,
        crate::api::Settings,
        crate::api::IncomingCall,
        crate::api::CallReplay,
        crate::api::Mutes,
        crate::api::RingtoneOption,
        crate::api::LiveUpdate,
        hark_engine::engine::EngineEvent,
        hark_engine::sound_card::DeviceInfo,
        hark_protocol::CallRecord,
        hark_protocol::CallSummary,
        hark_protocol::Contact,
        hark_protocol::UserProfile,
    );
    // serde_json writes i64/u64 as JSON numbers (every value here is far below 2^53), but
    // ts-rs types them `bigint`, which `JSON.parse` never produces.
    for (name, text) in files(dir) {
        if text.contains("bigint") {
            std::fs::write(dir.join(name), text.replace("bigint", "number")).unwrap();
        }
    }
}

fn files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn bindings_are_current() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ui/src/lib/bindings");
    if std::env::var_os("HARK_WRITE_BINDINGS").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        export_all(&committed);
        return;
    }
    let fresh = tempfile::tempdir().unwrap();
    export_all(fresh.path());
    assert_eq!(files(&committed), files(fresh.path()), "ui/src/lib/bindings is stale: run HARK_WRITE_BINDINGS=1 cargo test -p hark-desktop bindings");
}
