//! hark-engine: everything a Hark client does but the UI (what TUICallEngine is to TUICallKit).
//!
//! [`core`] is the pure call state machine; drivers around it own the IO.
#![forbid(unsafe_code)]

pub mod audio;
pub mod call_log;
pub mod call_quality;
pub mod camera;
pub mod core;
pub mod echo;
pub mod engine;
pub mod frame_assembly;
pub mod jitter;
pub mod keyframe_requests;
pub mod media;
pub mod media_watchdog;
pub mod peer;
pub mod policy;
pub mod proxy;
pub mod red;
pub mod ringtone;
pub mod round_trips;
pub mod signaling;
pub mod sound_card;
pub mod turn_stream;
pub mod video;
pub mod video_receive;
pub mod video_send;
pub mod voice_processing;

pub use crate::engine::{Engine, EngineConfig, EngineError, EngineEvent, VideoConfig};
pub use crate::policy::CallPolicy;
/// Call-level time, injectable ([`Engine::start_with_clock`]); media keeps real time.
pub use hark_clock as clock;
