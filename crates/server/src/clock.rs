//! Wall-clock time for the registry's timers: [`hark_clock`], shared with the engine.

pub use hark_clock::*;
