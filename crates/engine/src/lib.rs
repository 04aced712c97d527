//! hark-engine: everything a Hark client does but the UI (what TUICallEngine is to TUICallKit).
//!
//! [`core`] is the pure call state machine; drivers around it own the IO.
#![forbid(unsafe_code)]

pub mod core;
