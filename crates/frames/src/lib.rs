//! Pictures from the engine to the app's web view.
//!
//! The engine decodes each remote person's video (and gives our own camera's pictures) to a
//! [`hark_engine::video::VideoSink`]; the app's sinks are [`TileSink`]s, which keep only the newest
//! picture of each tile, already scaled to the size the page shows it at, and already laid out as
//! the message the page gets. The page reads them from the [`FrameSocket`]: a WebSocket on
//! 127.0.0.1, on a port chosen at launch, that asks for a per-launch token and the app's own
//! origin, one connection per page for all its tiles. The page asks for each batch of pictures
//! after it drew the last one, so a slow page skips pictures and never queues them.
//!
//! Why a WebSocket and raw I420, not Tauri's IPC: measured on WebKitGTK with software GL, Tauri's
//! IPC costs about three times a loopback WebSocket to move the same bytes, and a 2D canvas fed
//! `VideoFrame`s from I420 draws for a third of what WebGL costs (docs/ARCHITECTURE.md).

mod socket;
mod tiles;

pub use socket::{FrameSocket, SocketError, MAX_CONNECTIONS, MAX_TILES_PER_PAGE};
pub use tiles::{fitted_size, wire_header, Codec, EntryKind, Fit, FrameTiles, Pictures, TileSink, TileView, HEADER_LEN, MAX_CHAIN, MAX_NAME_LEN, SELF_TILE};
