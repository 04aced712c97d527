//! hark-video: Hark's video building blocks, free of any runtime.
//!
//! - [`frame`]: pictures in I420, the one format every path speaks, and scaling;
//! - [`convert`]: camera pixels (MJPEG, YUYV, NV12) to I420;
//! - [`vp8`]: VP8 encoding and decoding over libvpx, with realtime settings, forced keyframes and
//!   live bitrate changes;
//! - [`y4m`]: YUV4MPEG2 files, what a `file:` camera plays and a recording writes;
//! - [`pattern`]: a moving test picture that carries its frame number in pixels that survive
//!   lossy coding, so a far end can check what it decoded.
//!
//! The engine's video actors and synthetic cameras are built from these; nothing here knows about
//! calls, threads or time. All unsafe code is in [`vp8`], at the libvpx boundary.
#![deny(missing_docs)]

pub mod convert;
pub mod frame;
pub mod pattern;
pub mod vp8;
pub mod y4m;

pub use frame::I420Frame;

/// What went wrong with a picture, a codec or a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    /// A picture size that cannot be used here (zero, odd for the encoder, or not the size
    /// expected).
    #[error("unusable picture size {width}x{height}")]
    BadSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// libvpx refused: not VP8, or a frame that does not follow from the ones before.
    #[error("VP8: {0}")]
    Codec(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// A Y4M file that is not well formed.
    #[error("not a usable Y4M file: {0}")]
    BadY4m(String),
    /// A Y4M file of a kind not taken (only 4:2:0 at 8 bits is).
    #[error("unsupported Y4M: {0}")]
    Unsupported(String),
    /// A Y4M file that ends inside its header or a frame.
    #[error("the Y4M file ends inside a frame")]
    Truncated,
}
