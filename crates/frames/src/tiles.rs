//! The tiles: one slot per person shown, and one for ourselves ([`SELF_TILE`]), each holding only
//! its newest picture, ready to send.
//!
//! The work is done on the engine's decoder thread (or the camera's, for ourselves), once per
//! picture whoever watches: the picture is scaled to the largest size any page shows it at
//! (never up) and laid out as the page's entry for it, so a socket only hands the same bytes on. Nobody
//! watching costs nothing: the picture is dropped before it is touched.
//!
//! A remote person's tile also carries their video as it came, VP8, for pages that decode it
//! themselves (WebCodecs' `VideoDecoder`): about a hundredth of the bytes cross, and the app
//! decodes nothing for those pages (measured, docs/BENCHMARKS.md). Encoded frames cannot be
//! skipped like pictures, so the tile keeps a short [`Chain`] of them from the last keyframe,
//! and each page reads on from where it was; a page that fell off the chain starts again at a
//! keyframe.

use std::collections::VecDeque;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use hark_engine::video::{fitted_to_view, scaled_even, view_scale, ReceivedFrame, VideoSink};
use hark_video::I420Frame;
use tokio::sync::watch;

/// The tile of our own camera: a name no user id can have (they start with a letter or digit).
pub const SELF_TILE: &str = "_self";

/// At most this many tiles are kept (nine people, ourselves and room for the mini window's and
/// a reloaded page's names): a page cannot make the app hold memory without bound.
const MAX_TILES: usize = 64;

/// The bytes before the payload in each entry, after its tile's name, little-endian: width and
/// height (u16 each), the source's width and height (u16 each), sequence number (u32), the
/// entry's [`EntryKind`] (u8), three zero bytes, and the payload's length (u32). An I420 entry
/// of width and height 0 and no payload means "no picture now" (the person's video ended); the
/// page clears the tile.
pub const HEADER_LEN: usize = 20;

/// At most this many encoded frames are kept per tile for pages to read on from (three seconds
/// at 30 fps): a page further behind starts again at a keyframe.
pub const MAX_CHAIN: usize = 90;

/// What an entry's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// A picture's I420 planes (or none: the tile clears).
    I420 = 0,
    /// A VP8 keyframe: a page's decoder can start here.
    Vp8Key = 1,
    /// A VP8 frame that needs the frames before it, back to a keyframe.
    Vp8Delta = 2,
}

/// How a page wants a tile's pictures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Decoded pictures, I420, scaled to the box.
    #[default]
    I420,
    /// The person's VP8 as it came, when the tile has it (a remote person's); our own camera's
    /// tile sends I420 whatever a page asks.
    Vp8,
}

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

/// The box one page shows a tile in, in device pixels, and how it wants the pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shown {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
    pub codec: Codec,
}

impl Shown {
    fn visible(&self) -> bool {
        self.width > 0 && self.height > 0
    }
}

/// The size to send a `width` x `height` picture at for a box: as large as the box needs and no
/// larger than the picture (never scaled up), shape kept, even sides (I420's chroma is halved).
pub fn fitted_size(width: u32, height: u32, shown: (u32, u32), fit: Fit) -> (u32, u32) {
    match view_scale(width, height, shown, fit == Fit::Cover) {
        None => (0, 0),
        Some(scale) if scale >= 1.0 => (width, height),
        Some(scale) => scaled_even(width, height, scale),
    }
}

/// The header of an entry of `kind` whose picture is `size` (0x0 for "no picture"), made from
/// a `source` picture, numbered `sequence`, with a payload of `payload_len` bytes.
pub fn wire_header(kind: EntryKind, size: (u32, u32), source: (u32, u32), sequence: u32, payload_len: usize) -> [u8; HEADER_LEN] {
    let side = |n: u32| (n.min(u32::from(u16::MAX)) as u16).to_le_bytes();
    let mut header = [0u8; HEADER_LEN];
    header[0..2].copy_from_slice(&side(size.0));
    header[2..4].copy_from_slice(&side(size.1));
    header[4..6].copy_from_slice(&side(source.0));
    header[6..8].copy_from_slice(&side(source.1));
    header[8..12].copy_from_slice(&sequence.to_le_bytes());
    header[12] = kind as u8;
    header[16..20].copy_from_slice(&(payload_len.min(u32::MAX as usize) as u32).to_le_bytes());
    header
}

/// A tile's recent encoded frames, from a keyframe when there was one lately, each with its
/// place in the stream (`index`) so that each page reads on from where it was.
#[derive(Default)]
pub(crate) struct Chain {
    /// Entries; the last has index `next - 1`. Each says whether a decoder can start at it (a
    /// keyframe, or a clear).
    links: VecDeque<(bool, Bytes)>,
    next: u64,
}

/// What a page gets of a chain.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reading {
    pub entries: Vec<Bytes>,
    /// Where to read on from next time; `None`: waiting for a keyframe.
    pub cursor: Option<u64>,
}

impl Chain {
    /// Adds an entry; one a decoder can start at drops those before it (nobody needs them).
    fn push(&mut self, start: bool, entry: Bytes) {
        if start {
            self.links.clear();
        }
        self.links.push_back((start, entry));
        if self.links.len() > MAX_CHAIN {
            self.links.pop_front();
        }
        self.next += 1;
    }

    /// Frames went by that are not here: nobody can read on across them.
    fn break_off(&mut self) {
        self.links.clear();
        self.next += 1;
    }

    /// What a page whose next index is `cursor` (`None`: it has not started, or its decoder
    /// must start again) gets: the entries from there, or, when it fell off the chain, from the
    /// newest place a decoder can start at or after `fresh_from` (a decoder that failed does not
    /// start again on the frames it failed on); nothing while there is none (it waits for a
    /// keyframe).
    pub fn read(&self, cursor: Option<u64>, fresh_from: u64) -> Reading {
        let first = self.next - self.links.len() as u64;
        let from = match cursor {
            Some(at) if at >= first => Some((at - first) as usize),
            _ => self.links.iter().rposition(|(start, _)| *start).filter(|&at| first + at as u64 >= fresh_from),
        };
        match from {
            Some(from) => Reading { entries: self.links.iter().skip(from).map(|(_, e)| e.clone()).collect(), cursor: Some(self.next) },
            None => Reading { entries: Vec::new(), cursor: None },
        }
    }
}

/// One tile's slot.
pub(crate) struct Tile {
    /// The name's byte length and the name: the start of each entry about this tile.
    prefix: Vec<u8>,
    /// The newest entry, ready to send (`None` before the first picture).
    pub latest: watch::Sender<Option<Bytes>>,
    /// Whether the tile's pictures also come encoded (a remote person's): pages that decode VP8
    /// read [`Tile::chain`] instead of `latest`.
    pub encoded: AtomicBool,
    /// The encoded frames, and a count that moves with each.
    pub chain: Mutex<Chain>,
    pub chain_moved: watch::Sender<u64>,
    /// A page that decodes waits for a keyframe (the sink asks the sender for one).
    pub keyframe_wanted: AtomicBool,
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
        Tile {
            prefix,
            latest: watch::Sender::new(None),
            encoded: AtomicBool::new(false),
            chain: Mutex::default(),
            chain_moved: watch::Sender::new(0),
            keyframe_wanted: AtomicBool::new(false),
            shown: Mutex::default(),
            sequence: AtomicU32::new(0),
            writer: AtomicU64::new(0),
        }
    }

    /// An entry: this tile's name, a header for `payload` of `kind` at `size` from `source`, then
    /// `payload`.
    fn entry(&self, kind: EntryKind, size: (u32, u32), source: (u32, u32), payload: &[u8]) -> Bytes {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut entry = BytesMut::with_capacity(self.prefix.len() + HEADER_LEN + payload.len());
        entry.put_slice(&self.prefix);
        entry.put_slice(&wire_header(kind, size, source, sequence, payload.len()));
        entry.put_slice(payload);
        entry.freeze()
    }

    /// Whether pages showing it with `codec` get its encoded frames.
    pub fn sends_encoded(&self, codec: Codec) -> bool {
        codec == Codec::Vp8 && self.encoded.load(Ordering::Relaxed)
    }

    /// What a page reading on from `cursor` gets of the chain ([`Chain::read`]). A page left
    /// waiting marks the tile as wanting a keyframe, under the chain's lock so that a keyframe
    /// written meanwhile cannot be missed (the sink clears the mark under the same lock).
    pub fn read_chain(&self, cursor: Option<u64>, fresh_from: u64) -> Reading {
        let chain = lock(&self.chain);
        let reading = chain.read(cursor, fresh_from);
        if reading.cursor.is_none() {
            self.keyframe_wanted.store(true, Ordering::Relaxed);
        }
        reading
    }

    /// Where the chain's next entry will be: a decoder that fails now starts again there or later.
    pub fn chain_end(&self) -> u64 {
        lock(&self.chain).next
    }

    /// Adds an entry; a keyframe (`start`) answers whoever waited for one.
    fn chain_push(&self, start: bool, entry: Bytes) {
        let next = {
            let mut chain = lock(&self.chain);
            chain.push(start, entry);
            if start {
                self.keyframe_wanted.store(false, Ordering::Relaxed);
            }
            chain.next
        };
        self.chain_moved.send_replace(next);
    }

    fn chain_break(&self) {
        let next = {
            let mut chain = lock(&self.chain);
            chain.break_off();
            chain.next
        };
        self.chain_moved.send_replace(next);
    }

    pub fn show(&self, viewer: u64, shown: Shown) {
        lock(&self.shown).insert(viewer, shown);
    }

    pub fn hide(&self, viewer: u64) {
        lock(&self.shown).remove(&viewer);
    }

    /// The size to send a picture at: the largest any page that takes pictures needs; `None`
    /// when nobody shows it so.
    fn wanted_size(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        lock(&self.shown)
            .values()
            .filter(|s| !self.sends_encoded(s.codec))
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
    next_view: Arc<AtomicU64>,
}

impl FrameTiles {
    /// A sink that shows its pictures on the tile named `tile` (a user id, or [`SELF_TILE`]).
    pub fn sink(&self, tile: &str) -> TileSink {
        let id = self.next_sink.fetch_add(1, Ordering::Relaxed) + 1;
        TileSink { tile: self.tile(tile), id, last_number: None }
    }

    /// A sink for a remote person's video, which takes their VP8 as it came for the pages that
    /// decode it, and decoded pictures for the others.
    pub fn remote_sink(&self, tile: &str) -> TileSink {
        let sink = self.sink(tile);
        sink.tile.encoded.store(true, Ordering::Relaxed);
        // A new stream: whatever an earlier call waited for is moot.
        sink.tile.keyframe_wanted.store(false, Ordering::Relaxed);
        sink
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

/// Viewer numbers of the views inside the app ([`TileView`]) start here, far from the socket's
/// connections (counted from 1).
const FIRST_VIEW: u64 = 1 << 62;

impl FrameTiles {
    /// A view of the tile named `tile` from inside the app (the desktop's video layer, which
    /// draws outside the page): it says its box like a page does and reads the newest
    /// picture. `None` when there are too many tiles.
    pub fn view(&self, tile: &str) -> Option<TileView> {
        let viewer = FIRST_VIEW + self.next_view.fetch_add(1, Ordering::Relaxed);
        Some(TileView { tile: self.find(tile)?, viewer })
    }
}

/// One box that shows a tile inside the app; dropping it takes the box away.
pub struct TileView {
    tile: Arc<Tile>,
    viewer: u64,
}

impl TileView {
    /// Shows the tile in a `width` x `height` box (device pixels; 0 x 0 while the box is hidden,
    /// so nothing is decoded for it).
    pub fn show(&self, width: u32, height: u32, fit: Fit) {
        self.tile.show(self.viewer, Shown { width, height, fit, codec: Codec::I420 });
    }

    /// The tile's pictures from now on, starting with the one it holds.
    pub fn pictures(&self) -> Pictures {
        let mut latest = self.tile.latest.subscribe();
        latest.mark_changed();
        Pictures { latest }
    }
}

/// A tile's pictures as they come; one that comes while the last is still being handled
/// replaces the ones before it.
pub struct Pictures {
    latest: watch::Receiver<Option<Bytes>>,
}

impl Pictures {
    /// The newest picture since the last call: `Some(None)` when the tile cleared (the
    /// person's video ended). Waits until there is one; `None` only if the tile is gone.
    pub async fn next(&mut self) -> Option<Option<I420Frame>> {
        loop {
            self.latest.changed().await.ok()?;
            let Some(entry) = self.latest.borrow_and_update().clone() else { continue };
            if let Some(picture) = picture_in(&entry) {
                return Some(picture);
            }
        }
    }
}

impl Drop for TileView {
    fn drop(&mut self) {
        self.tile.hide(self.viewer);
    }
}

/// The picture an I420 entry carries: `Some(None)` for "no picture now", `None` for anything
/// that is not a whole I420 entry.
pub(crate) fn picture_in(entry: &[u8]) -> Option<Option<I420Frame>> {
    let name_len = usize::from(*entry.first()?);
    let header = entry.get(1 + name_len..1 + name_len + HEADER_LEN)?;
    let side = |at: usize| u32::from(u16::from_le_bytes([header[at], header[at + 1]]));
    let (width, height) = (side(0), side(2));
    let payload_len = u32::from_le_bytes([header[16], header[17], header[18], header[19]]) as usize;
    if header[12] != EntryKind::I420 as u8 {
        return None;
    }
    let payload = entry.get(1 + name_len + HEADER_LEN..)?;
    if payload.len() != payload_len {
        return None;
    }
    if width == 0 || height == 0 {
        return payload.is_empty().then_some(None);
    }
    I420Frame::from_bytes(width, height, payload.to_vec()).ok().map(Some)
}

/// Shows one person's pictures on their tile.
pub struct TileSink {
    tile: Arc<Tile>,
    id: u64,
    /// The number of the last encoded frame written, to see frames that went by.
    last_number: Option<u64>,
}

impl TileSink {
    /// Whether any page shows this tile now (a picture written otherwise is dropped untouched).
    pub fn is_shown(&self) -> bool {
        lock(&self.tile.shown).values().any(Shown::visible)
    }
}

impl VideoSink for TileSink {
    fn write_frame(&mut self, frame: &I420Frame) {
        let Some((width, height)) = self.tile.wanted_size(frame.width(), frame.height()) else { return };
        let picture = frame.at_size(width, height);
        let entry = self.tile.entry(EntryKind::I420, (width, height), (frame.width(), frame.height()), picture.as_bytes());
        self.tile.writer.store(self.id, Ordering::Relaxed);
        self.tile.latest.send_replace(Some(entry));
    }

    fn wants_pictures(&self) -> bool {
        lock(&self.tile.shown).values().any(|s| s.visible() && !self.tile.sends_encoded(s.codec))
    }

    fn wants_encoded(&self) -> bool {
        lock(&self.tile.shown).values().any(|s| s.visible() && self.tile.sends_encoded(s.codec))
    }

    fn shown_at(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        lock(&self.tile.shown)
            .values()
            .filter(|s| s.visible())
            .map(|s| fitted_to_view(width, height, (s.width, s.height), s.fit == Fit::Cover))
            .filter(|&(w, _)| w > 0)
            .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
    }

    fn write_encoded(&mut self, frame: &ReceivedFrame<'_>) {
        // Frames went by unwritten, or this sink's stream starts with a delta frame (nobody
        // decoded when its keyframe came): nobody may read on into it from what is there.
        let continues = self.last_number.is_some_and(|last| frame.number == last + 1);
        if !continues && !frame.keyframe {
            self.tile.chain_break();
        }
        self.last_number = Some(frame.number);
        let kind = if frame.keyframe { EntryKind::Vp8Key } else { EntryKind::Vp8Delta };
        let size = (frame.width, frame.height);
        let entry = self.tile.entry(kind, size, size, frame.data);
        self.tile.writer.store(self.id, Ordering::Relaxed);
        self.tile.chain_push(frame.keyframe, entry);
    }

    /// Only while a page decodes it: a mark left by a page that went (or was hidden) must not
    /// make the sender send keyframes for nobody.
    fn wants_keyframe(&self) -> bool {
        self.tile.keyframe_wanted.load(Ordering::Relaxed) && self.wants_encoded()
    }
}

impl Drop for TileSink {
    fn drop(&mut self) {
        if self.tile.writer.compare_exchange(self.id, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let clear = self.tile.entry(EntryKind::I420, (0, 0), (0, 0), &[]);
            self.tile.latest.send_replace(Some(clear.clone()));
            // Pages that decode read the chain: the clear goes there too, and is where the next
            // call's stream starts.
            self.tile.chain_push(true, clear);
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
        tile.show(3, Shown { width: 0, height: 0, fit: Fit::Contain, codec: Codec::I420 });
        assert!(!sink.is_shown(), "a hidden page's 0x0 shows nothing");
        tile.show(1, Shown { width: 320, height: 180, fit: Fit::Contain, codec: Codec::I420 });
        tile.show(2, Shown { width: 640, height: 360, fit: Fit::Contain, codec: Codec::I420 });
        assert!(sink.is_shown());
        sink.write_frame(&hark_video::pattern::draw(1280, 720, 1));
        let entry = tile.latest.borrow().clone().unwrap();
        assert_eq!(&entry[0..6], b"\x05alice", "the entry starts with the tile's name");
        let message = &entry[6..];
        assert_eq!(&message[0..4], &[128, 2, 104, 1], "640x360");
        assert_eq!(message.len(), HEADER_LEN + 640 * 360 * 3 / 2);
        assert_eq!(&message[4..8], &[0, 5, 208, 2], "the source was 1280x720");
        assert_eq!(message[12], EntryKind::I420 as u8);
        assert_eq!(&message[16..20], &((640 * 360 * 3 / 2) as u32).to_le_bytes(), "the payload's length");

        tile.hide(2);
        sink.write_frame(&hark_video::pattern::draw(1280, 720, 2));
        assert_eq!(tile.latest.borrow().as_ref().unwrap().len(), 6 + HEADER_LEN + 320 * 180 * 3 / 2);
    }

    #[test]
    fn a_view_in_the_app_is_a_viewer_like_a_page_and_reads_whole_pictures() {
        let tiles = FrameTiles::default();
        let mut sink = tiles.remote_sink("carol");
        let view = tiles.view("carol").unwrap();
        let mut pictures = view.tile.latest.subscribe();
        assert!(!sink.wants_pictures(), "a view that said no box yet wants nothing");
        view.show(0, 0, Fit::Contain);
        assert!(!sink.wants_pictures(), "a hidden box wants nothing");
        view.show(320, 180, Fit::Contain);
        assert!(sink.wants_pictures() && !sink.wants_encoded(), "the app's view takes decoded pictures");
        assert_eq!(sink.shown_at(1280, 720), Some((320, 180)));
        let sent = hark_video::pattern::draw(1280, 720, 7);
        sink.write_frame(&sent);
        assert!(pictures.has_changed().unwrap());
        let entry = pictures.borrow_and_update().clone().unwrap();
        let picture = picture_in(&entry).unwrap().unwrap();
        assert_eq!(picture, sent.scaled(320, 180), "the picture at the view's size");
        // Anything else is not a picture: the VP8 kinds, a torn payload, a bare name.
        let header = wire_header(EntryKind::Vp8Key, (2, 2), (2, 2), 0, 6);
        assert_eq!(picture_in(&[&b"\x01c"[..], &header, &[0; 6]].concat()), None);
        assert_eq!(picture_in(&entry[..entry.len() - 1]), None);
        assert_eq!(picture_in(b"\x05carol"), None);
        assert_eq!(picture_in(&[]), None);

        drop(view);
        assert!(!sink.wants_pictures(), "a dropped view takes its box away");
        drop(sink);
        let cleared = pictures.borrow_and_update().clone().unwrap();
        assert_eq!(picture_in(&cleared), Some(None), "the tile cleared: no picture now");
    }

    #[tokio::test]
    async fn a_view_reads_the_picture_it_finds_then_only_the_newest_of_those_that_came() {
        let tiles = FrameTiles::default();
        let mut sink = tiles.remote_sink("dave");
        let view = tiles.view("dave").unwrap();
        view.show(64, 36, Fit::Cover);
        sink.write_frame(&hark_video::pattern::draw(64, 36, 1));
        let mut pictures = view.pictures();
        assert_eq!(pictures.next().await, Some(Some(hark_video::pattern::draw(64, 36, 1))), "the picture already there");
        sink.write_frame(&hark_video::pattern::draw(64, 36, 2));
        sink.write_frame(&hark_video::pattern::draw(64, 36, 3));
        assert_eq!(pictures.next().await, Some(Some(hark_video::pattern::draw(64, 36, 3))), "two came: the newer");
        drop(sink);
        assert_eq!(pictures.next().await, Some(None), "then the tile cleared");
        assert!(!pictures.latest.has_changed().unwrap(), "nothing new: the next call waits");
    }

    #[test]
    fn the_last_writer_going_clears_the_tile_and_an_older_one_does_not() {
        let tiles = FrameTiles::default();
        let tile = tiles.find("bob").unwrap();
        tile.show(1, Shown { width: 64, height: 36, fit: Fit::Contain, codec: Codec::I420 });
        let old = tiles.sink("bob");
        let mut new = tiles.sink("bob");
        new.write_frame(&hark_video::pattern::draw(64, 36, 0));
        drop(old);
        assert_eq!(&tile.latest.borrow().as_ref().unwrap()[4..8], &[64, 0, 36, 0], "the newer sink's picture stays");
        drop(new);
        let cleared = tile.latest.borrow().clone().unwrap();
        assert_eq!((cleared.len(), &cleared[0..4], &cleared[4..12]), (4 + HEADER_LEN, &b"\x03bob"[..], &[0u8; 8][..]));
    }

    /// An encoded frame as the receiver hands it on: `number` in the stream, a keyframe or not.
    fn received(data: &[u8], keyframe: bool, number: u64) -> ReceivedFrame<'_> {
        ReceivedFrame { data, keyframe, width: 640, height: 360, number }
    }

    /// The kinds and payloads of a reading's entries.
    fn kinds(reading: &Reading) -> Vec<(u8, Vec<u8>)> {
        reading.entries.iter().map(|e| (e[1 + e[0] as usize + 12], e[1 + e[0] as usize + HEADER_LEN..].to_vec())).collect()
    }

    #[test]
    fn pages_that_decode_get_the_frames_as_they_came_and_the_app_decodes_nothing_for_them() {
        let tiles = FrameTiles::default();
        let mut sink = tiles.remote_sink("bob");
        let tile = tiles.find("bob").unwrap();
        assert!(!sink.wants_encoded() && !sink.wants_pictures(), "nobody watches: nothing is wanted");
        tile.show(1, Shown { width: 640, height: 360, fit: Fit::Contain, codec: Codec::Vp8 });
        assert!(sink.wants_encoded() && !sink.wants_pictures(), "one page decodes: no pictures are made");
        tile.show(2, Shown { width: 320, height: 180, fit: Fit::Cover, codec: Codec::I420 });
        assert!(sink.wants_encoded() && sink.wants_pictures(), "another takes pictures");
        sink.write_frame(&hark_video::pattern::draw(640, 360, 0));
        let picture = tile.latest.borrow().clone().unwrap();
        assert_eq!(&picture[4..8], &[64, 1, 180, 0], "pictures are sized for the page that takes them, not the one that decodes");
        // Our own camera's tile has no encoded frames: a page asking for VP8 gets pictures.
        let own = tiles.sink(SELF_TILE);
        tiles.find(SELF_TILE).unwrap().show(1, Shown { width: 64, height: 36, fit: Fit::Contain, codec: Codec::Vp8 });
        assert!(own.wants_pictures() && !own.wants_encoded());

        sink.write_encoded(&received(b"key", true, 1));
        sink.write_encoded(&received(b"d1", false, 2));
        let start = tile.read_chain(None, 0);
        assert_eq!(kinds(&start), [(1, b"key".to_vec()), (2, b"d1".to_vec())], "a new page starts at the keyframe");
        sink.write_encoded(&received(b"d2", false, 3));
        let on = tile.read_chain(start.cursor, 0);
        assert_eq!(kinds(&on), [(2, b"d2".to_vec())], "and reads on from where it was");
        assert_eq!(kinds(&tile.read_chain(on.cursor, 0)), [], "nothing new");

        // Frames went by unwritten (nobody wanted them): nobody reads on across the gap.
        sink.write_encoded(&received(b"d5", false, 5));
        let lost = tile.read_chain(on.cursor, 0);
        assert_eq!((kinds(&lost), lost.cursor), (vec![], None), "it waits for a keyframe");
        assert!(sink.wants_keyframe(), "a page waits: the sink asks the sender");
        tile.hide(1);
        tile.hide(2);
        assert!(!sink.wants_keyframe(), "nobody decodes now: no keyframes for nobody");
        tile.show(1, Shown { width: 640, height: 360, fit: Fit::Contain, codec: Codec::Vp8 });
        sink.write_encoded(&received(b"key2", true, 6));
        assert!(!sink.wants_keyframe(), "a keyframe came");
        assert_eq!(kinds(&tile.read_chain(None, 0)), [(1, b"key2".to_vec())]);

        // The call ends: the clear goes to decoding pages too.
        drop(sink);
        assert_eq!(kinds(&tile.read_chain(None, 0)), [(0, vec![])]);

        // The next call's stream starts with a delta (nobody decoded at its keyframe): a page
        // cannot start at the clear and read on into it; it waits for a keyframe.
        let mut next = tiles.remote_sink("bob");
        next.write_encoded(&received(b"d", false, 40));
        let waiting = tile.read_chain(None, 0);
        assert_eq!((kinds(&waiting), waiting.cursor), (vec![], None));
        assert!(next.wants_keyframe());
    }

    #[test]
    fn a_page_further_behind_than_the_chain_starts_again_at_a_keyframe() {
        let mut chain = Chain::default();
        chain.push(true, Bytes::from_static(b"k"));
        let cursor = chain.read(None, 0).cursor;
        for _ in 0..MAX_CHAIN {
            chain.push(false, Bytes::from_static(b"d"));
        }
        assert_eq!(chain.read(cursor, 0).entries.len(), MAX_CHAIN, "a page as far behind as the chain is long reads on");
        chain.push(false, Bytes::from_static(b"d"));
        // One more: the page's next frame fell off the front, and no keyframe is left to start at.
        assert_eq!(chain.read(cursor, 0), Reading { entries: vec![], cursor: None });
        chain.push(true, Bytes::from_static(b"k2"));
        chain.push(false, Bytes::from_static(b"d2"));
        let again = chain.read(cursor, 0);
        assert_eq!(again.entries, [Bytes::from_static(b"k2"), Bytes::from_static(b"d2")]);
        assert_eq!(again.cursor, Some(chain.next));
        // A decoder that failed on k2's chain does not start there again.
        assert_eq!(chain.read(None, chain.next), Reading { entries: vec![], cursor: None });
    }


    #[test]
    fn a_tile_says_the_largest_size_its_person_is_shown_at_fitted_to_the_picture() {
        let tiles = FrameTiles::default();
        let sink = tiles.remote_sink("bob");
        let tile = tiles.find("bob").unwrap();
        assert_eq!(sink.shown_at(1280, 720), None, "nobody shows it");
        tile.show(1, Shown { width: 718, height: 500, fit: Fit::Contain, codec: Codec::Vp8 });
        assert_eq!(sink.shown_at(1280, 720), Some((718, 402)), "contain: the picture's shape in the box, even sides");
        tile.show(2, Shown { width: 200, height: 200, fit: Fit::Cover, codec: Codec::I420 });
        assert_eq!(sink.shown_at(1280, 720), Some((718, 402)), "the largest view counts");
        tile.show(1, Shown { width: 0, height: 0, fit: Fit::Contain, codec: Codec::Vp8 });
        assert_eq!(sink.shown_at(1280, 720), Some((354, 200)), "cover: the box's short side filled");
        tile.show(3, Shown { width: 2560, height: 1440, fit: Fit::Contain, codec: Codec::Vp8 });
        assert_eq!(sink.shown_at(640, 360), Some((2560, 1440)), "larger than the picture: said as it is, the sender caps it");
        assert_eq!(sink.shown_at(0, 0), None, "no picture yet");
    }

}
