//! The `hark-desktop` binary: everything lives in the library so tests can reach it.

// No console window on Windows release builds; harmless elsewhere.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // `--version` and `--help` answer before any window, log or WebKit setting exists.
    if let Some(text) = hark_desktop::command_line_answer(std::env::args_os().skip(1).filter_map(|arg| arg.into_string().ok())) {
        println!("{text}");
        return;
    }
    hark_desktop::tune_webkit();
    hark_desktop::run();
}
