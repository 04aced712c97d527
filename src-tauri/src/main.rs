//! The `hark-desktop` binary: everything lives in the library so tests can reach it.

// No console window on Windows release builds; harmless elsewhere.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    hark_desktop::tune_webkit();
    hark_desktop::run();
}
