//! The tiles: one slot per person shown, and one for ourselves ([`SELF_TILE`]), each holding only
//! its newest picture, ready to send.
//!
//! The work is done on the engine's decoder thread (or the camera's, for ourselves), once per
//! picture whoever watches: the picture is scaled to the largest size any page shows it at
//! (never up) and laid out as the page's entry for it, so a socket only hands the same bytes on. Nobody
//! watching costs nothing: the picture is dropped before it is touched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use hark_engine::video::VideoSink;
use hark_video::I420Frame;
use tokio::sync::watch;

/// The tile of our own camera: a name no user id can have (they start with a letter or digit).
pub const SELF_TILE: &str = "_self";

/// At most this many tiles are kept (nine people, ourselves and room for the mini window's and
/// a reloaded page's names): a page cannot make the app hold memory without bound.
const MAX_TILES: usize = 64;

/// The bytes before the picture in each entry, after its tile's name: width, height, sequence
/// number, and the source's width and height (u16 each), little-endian. A width and height of 0
/// mean "no picture now" (the person's video ended); the page clears the tile.
pub const HEADER_LEN: usize = 16;

/// The longest tile name (user ids are shorter).
pub const MAX_NAME_LEN: usize = 64;

/// How a tile fits a picture in its box, as a page says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// All of the picture shows, with bars where the shapes differ.
    Contain,
    /// The picture fills the box; what sticks out is cut.
    Cover,
}

/// The box one page shows a tile in, in device pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shown {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
}

/// The size to send a `width` x `height` picture at for a box: as large as the box needs and no
/// larger than the picture (never scaled up), shape kept, even sides (I420's chroma is halved).
pub fn fitted_size(width: u32, height: u32, shown: (u32, u32), fit: Fit) -> (u32, u32) {
    let (box_w, box_h) = shown;
    if width == 0 || height == 0 || box_w == 0 || box_h == 0 {
        return (0, 0);
    }
    let (by_width, by_height) = (f64::from(box_w) / f64::from(width), f64::from(box_h) / f64::from(height));
    let scale = match fit {
        Fit::Contain => by_width.min(by_height),
        Fit::Cover => by_width.max(by_height),
    };
    if scale >= 1.0 {
        return (width, height);
    }
    // Rounded down: a picture never comes out larger than its box.
    let side = |n: u32| (((f64::from(n) * scale) / 2.0).floor() as u32 * 2).max(2);
    (side(width), side(height))
}

/// The header of a message carrying a `frame` (numbered `sequence`) scaled from a
/// `source_width` x `source_height` picture, or of one saying there is no picture (`None`).
pub fn wire_header(frame: Option<&I420Frame>, sequence: u32, source: (u32, u32)) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    let (width, height) = frame.map_or((0, 0), |f| (f.width(), f.height()));
    header[0..4].copy_from_slice(&width.to_le_bytes());
    header[4..8].copy_from_slice(&height.to_le_bytes());
    header[8..12].copy_from_slice(&sequence.to_le_bytes());
    header[12..14].copy_from_slice(&(source.0.min(u32::from(u16::MAX)) as u16).to_le_bytes());
    header[14..16].copy_from_slice(&(source.1.min(u32::from(u16::MAX)) as u16).to_le_bytes());
    header
}

/// One tile's slot.
pub(crate) struct Tile {
    /// The name's byte length and the name: the start of each entry about this tile.
    prefix: Vec<u8>,
    /// The newest entry, ready to send (`None` before the first picture).
    pub latest: watch::Sender<Option<Bytes>>,
    /// The box each connected page shows this tile in, by connection.
    shown: Mutex<HashMap<u64, Shown>>,
    sequence: AtomicU32,
    /// The sink that wrote last: only it clears the tile when it goes (a call's new sink for the
    /// same person may already be writing when the old one is dropped).
    writer: AtomicU64,
}

impl Tile {
    fn new(name: &str) -> Tile {
        let name = &name.as_bytes()[..name.len().min(MAX_NAME_LEN)];
        let prefix = [&[name.len() as u8][..], name].concat();
        Tile { prefix, latest: watch::Sender::new(None), shown: Mutex::default(), sequence: AtomicU32::new(0), writer: AtomicU64::new(0) }
    }

    /// An entry: this tile's name, `header`, then `planes`.
    fn entry(&self, header: &[u8; HEADER_LEN], planes: &[u8]) -> Bytes {
        let mut entry = BytesMut::with_capacity(self.prefix.len() + HEADER_LEN + planes.len());
        entry.put_slice(&self.prefix);
        entry.put_slice(header);
        entry.put_slice(planes);
        entry.freeze()
    }

    pub fn show(&self, viewer: u64, shown: Shown) {
        lock(&self.shown).insert(viewer, shown);
    }

    pub fn hide(&self, viewer: u64) {
        lock(&self.shown).remove(&viewer);
    }

    /// The size to send a picture at: the largest any page needs; `None` when nobody shows it.
    fn wanted_size(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        lock(&self.shown)
            .values()
            .map(|s| fitted_size(width, height, (s.width, s.height), s.fit))
            .filter(|&(w, h)| w > 0 && h > 0)
            .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
    }
}

/// Every tile, shared by the sinks and the socket.
#[derive(Clone, Default)]
pub struct FrameTiles {
    tiles: Arc<Mutex<HashMap<String, Arc<Tile>>>>,
    next_sink: Arc<AtomicU64>,
}

impl FrameTiles {
    /// A sink that shows its pictures on the tile named `tile` (a user id, or [`SELF_TILE`]).
    pub fn sink(&self, tile: &str) -> TileSink {
        let id = self.next_sink.fetch_add(1, Ordering::Relaxed) + 1;
        TileSink { tile: self.tile(tile), id }
    }

    /// The tile named `name`, made if new; `None` when there are too many.
    pub(crate) fn find(&self, name: &str) -> Option<Arc<Tile>> {
        let mut tiles = lock(&self.tiles);
        if let Some(tile) = tiles.get(name) {
            return Some(Arc::clone(tile));
        }
        if tiles.len() >= MAX_TILES {
            // Forget the tiles nobody writes or watches before refusing a new one.
            tiles.retain(|_, t| Arc::strong_count(t) > 1);
            if tiles.len() >= MAX_TILES {
                return None;
            }
        }
        Some(Arc::clone(tiles.entry(name.to_owned()).or_insert_with(|| Arc::new(Tile::new(name)))))
    }

    /// A sink's tile always exists (the engine makes at most nine sinks a call, plus ours); a
    /// full table gives a tile nobody can watch.
    fn tile(&self, name: &str) -> Arc<Tile> {
        self.find(name).unwrap_or_else(|| Arc::new(Tile::new(name)))
    }
}

/// Shows one person's pictures on their tile.
pub struct TileSink {
    tile: Arc<Tile>,
    id: u64,
}

impl TileSink {
    /// Whether any page shows this tile now (a picture written otherwise is dropped untouched).
    pub fn is_shown(&self) -> bool {
        lock(&self.tile.shown).values().any(|s| s.width > 0 && s.height > 0)
    }
}

impl VideoSink for TileSink {
    fn write_frame(&mut self, frame: &I420Frame) {
        let Some((width, height)) = self.tile.wanted_size(frame.width(), frame.height()) else { return };
        let scaled;
        let picture = if (width, height) == (frame.width(), frame.height()) {
            frame
        } else {
            scaled = frame.scaled(width, height);
            &scaled
        };
        let sequence = self.tile.sequence.fetch_add(1, Ordering::Relaxed);
        let entry = self.tile.entry(&wire_header(Some(picture), sequence, (frame.width(), frame.height())), picture.as_bytes());
        self.tile.writer.store(self.id, Ordering::Relaxed);
        self.tile.latest.send_replace(Some(entry));
    }
}

impl Drop for TileSink {
    fn drop(&mut self) {
        if self.tile.writer.compare_exchange(self.id, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let sequence = self.tile.sequence.fetch_add(1, Ordering::Relaxed);
            self.tile.latest.send_replace(Some(self.tile.entry(&wire_header(None, sequence, (0, 0)), &[])));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_sent_at_the_size_its_box_needs_and_never_larger() {
        // 720p into a 16:9 box of 640x360: halved.
        assert_eq!(fitted_size(1280, 720, (640, 360), Fit::Contain), (640, 360));
        // A box larger than the picture: as it is.
        assert_eq!(fitted_size(640, 360, (1920, 1080), Fit::Contain), (640, 360));
        // A 4:3 picture in a 16:9 box: contain fits the height, cover the width.
        assert_eq!(fitted_size(640, 480, (320, 180), Fit::Contain), (240, 180));
        assert_eq!(fitted_size(640, 480, (320, 180), Fit::Cover), (320, 240));
        // An upright picture keeps its shape; sides stay even.
        assert_eq!(fitted_size(360, 640, (301, 301), Fit::Contain), (168, 300));
        assert_eq!(fitted_size(1280, 720, (0, 0), Fit::Cover), (0, 0));
    }

    #[test]
    fn the_largest_box_shown_decides_and_nobody_watching_costs_nothing() {
        let tiles = FrameTiles::default();
        let mut sink = tiles.sink("alice");
        let tile = tiles.find("alice").unwrap();
        sink.write_frame(&hark_video::pattern::draw(1280, 720, 0));
        assert!(tile.latest.borrow().is_none(), "nobody shows it: nothing is made");

        assert!(!sink.is_shown());
        tile.show(3, Shown { width: 0, height: 0, fit: Fit::Contain });
        assert!(!sink.is_shown(), "a hidden page's 0x0 shows nothing");
        tile.show(1, Shown { width: 320, height: 180, fit: Fit::Contain });
        tile.show(2, Shown { width: 640, height: 360, fit: Fit::Contain });
        assert!(sink.is_shown());
        sink.write_frame(&hark_video::pattern::draw(1280, 720, 1));
        let entry = tile.latest.borrow().clone().unwrap();
        assert_eq!(&entry[0..6], b"\x05alice", "the entry starts with the tile's name");
        let message = &entry[6..];
        assert_eq!(&message[0..8], &[128, 2, 0, 0, 104, 1, 0, 0], "640x360");
        assert_eq!(message.len(), HEADER_LEN + 640 * 360 * 3 / 2);
        assert_eq!(&message[12..16], &[0, 5, 208, 2], "the source was 1280x720");

        tile.hide(2);
        sink.write_frame(&hark_video::pattern::draw(1280, 720, 2));
        assert_eq!(tile.latest.borrow().as_ref().unwrap().len(), 6 + HEADER_LEN + 320 * 180 * 3 / 2);
    }

    #[test]
    fn the_last_writer_going_clears_the_tile_and_an_older_one_does_not() {
        let tiles = FrameTiles::default();
        let tile = tiles.find("bob").unwrap();
        tile.show(1, Shown { width: 64, height: 36, fit: Fit::Contain });
        let old = tiles.sink("bob");
        let mut new = tiles.sink("bob");
        new.write_frame(&hark_video::pattern::draw(64, 36, 0));
        drop(old);
        assert_eq!(&tile.latest.borrow().as_ref().unwrap()[4..8], &[64, 0, 0, 0], "the newer sink's picture stays");
        drop(new);
        let cleared = tile.latest.borrow().clone().unwrap();
        assert_eq!((cleared.len(), &cleared[0..4], &cleared[4..12]), (4 + HEADER_LEN, &b"\x03bob"[..], &[0u8; 8][..]));
    }
}
