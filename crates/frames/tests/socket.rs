//! The frame socket with real WebSocket clients on loopback: who gets in, what they get, that a
//! page that does not keep up gets the newest picture rather than a queue, and that what moved
//! while it drew comes in one batch.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hark_engine::video::VideoSink;
use hark_frames::{FrameSocket, FrameTiles, HEADER_LEN, MAX_CONNECTIONS, MAX_TILES_PER_PAGE, SELF_TILE};
use hark_video::{pattern, I420Frame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const ORIGIN: &str = "tauri://localhost";
const PATIENCE: Duration = Duration::from_secs(5);

type Page = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Running {
    port: u16,
    token: String,
    tiles: FrameTiles,
}

fn start() -> Running {
    let socket = FrameSocket::bind(vec![ORIGIN.into()]).unwrap();
    let (port, token) = (socket.port(), socket.token().to_owned());
    assert_eq!(socket.csp_source(), format!("ws://127.0.0.1:{port}"));
    let tiles = FrameTiles::default();
    socket.serve(tiles.clone()).unwrap();
    Running { port, token, tiles }
}

impl Running {
    async fn open_at(&self, path: &str, token: &str, origin: Option<&str>) -> Result<Page, Error> {
        let mut request = format!("ws://127.0.0.1:{}{path}?token={token}", self.port).into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
    }

    async fn open_as(&self, token: &str, origin: Option<&str>) -> Result<Page, Error> {
        self.open_at("/page", token, origin).await
    }

    async fn open(&self) -> Page {
        self.open_as(&self.token, Some(ORIGIN)).await.unwrap()
    }
}

async fn say(page: &mut Page, json: &str) {
    page.send(Message::Text(json.into())).await.unwrap();
}

async fn show(page: &mut Page, tile: &str, width: u32, height: u32) {
    say(page, &format!(r#"{{"type":"show","tile":"{tile}","width":{width},"height":{height},"fit":"contain"}}"#)).await;
}

/// One tile's entry in a batch: its name, size, sequence number and payload.
type Entry = (String, u32, u32, u32, Vec<u8>);

/// Reads a batch the way the page does: entries one after another, each as long as its header
/// says; the kind of each (0 I420, 1 VP8 keyframe, 2 VP8 delta) goes to `kinds`.
fn entries_and_kinds(mut data: &[u8], kinds: &mut Vec<u8>) -> Vec<Entry> {
    let mut entries = Vec::new();
    while !data.is_empty() {
        let name_len = usize::from(data[0]);
        let name = String::from_utf8(data[1..1 + name_len].to_vec()).unwrap();
        let header = &data[1 + name_len..1 + name_len + HEADER_LEN];
        let half = |i: usize| u32::from(u16::from_le_bytes(header[i..i + 2].try_into().unwrap()));
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
        let (width, height, kind, length) = (half(0), half(2), header[12], word(16) as usize);
        if kind == 0 {
            assert_eq!(length as u32, width * height + 2 * width.div_ceil(2) * height.div_ceil(2), "an I420 entry's length is its planes'");
        }
        let start = 1 + name_len + HEADER_LEN;
        entries.push((name, width, height, word(8), data[start..start + length].to_vec()));
        kinds.push(kind);
        data = &data[start + length..];
    }
    entries
}

fn entries(data: &[u8]) -> Vec<Entry> {
    entries_and_kinds(data, &mut Vec::new())
}

/// The next batch.
async fn next_batch(page: &mut Page) -> Vec<Entry> {
    loop {
        match tokio::time::timeout(PATIENCE, page.next()).await.expect("a batch in time") {
            Some(Ok(Message::Binary(data))) => return entries(&data),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

/// The next batch's only picture: its size, sequence number and planes.
async fn next_picture(page: &mut Page) -> (u32, u32, u32, Vec<u8>) {
    let mut batch = next_batch(page).await;
    assert_eq!(batch.len(), 1, "one tile moved");
    let (_, width, height, sequence, planes) = batch.remove(0);
    (width, height, sequence, planes)
}

/// Writes pictures (`write` makes each) until the page gets one, for at most [`PATIENCE`]: the
/// size a page says reaches the socket a moment after it is sent, and pictures before that are
/// made for nobody.
async fn until_picture(page: &mut Page, mut write: impl FnMut()) -> (u32, u32, u32, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no picture reached the page");
        write();
        if let Ok(picture) = tokio::time::timeout(Duration::from_millis(100), next_picture(page)).await {
            return picture;
        }
    }
}

/// Whether anything arrives within `wait`.
async fn quiet(page: &mut Page, wait: Duration) -> bool {
    tokio::time::timeout(wait, page.next()).await.is_err()
}

fn status_of(result: Result<Page, Error>) -> u16 {
    match result {
        Err(Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("refused without an HTTP answer: {other}"),
        Ok(_) => panic!("let in"),
    }
}

#[tokio::test]
async fn only_the_app_with_this_launchs_token_gets_in() {
    let running = start();
    assert_eq!(status_of(running.open_as("0000", Some(ORIGIN)).await), 403, "wrong token");
    assert_eq!(status_of(running.open_as("", Some(ORIGIN)).await), 403, "no token");
    assert_eq!(status_of(running.open_as(&running.token, Some("http://evil.example")).await), 403, "another origin");
    assert_eq!(status_of(running.open_as(&running.token, None).await), 403, "no origin (not a browser page)");
    assert_eq!(status_of(running.open_at("/tiles/alice", &running.token, Some(ORIGIN)).await), 404, "not the page's path");
    // Another socket's token does not open this one.
    let other = start();
    assert_eq!(status_of(running.open_as(&other.token, Some(ORIGIN)).await), 403);
    running.open().await;
}

#[tokio::test]
async fn a_page_gets_the_picture_at_its_tiles_size_with_the_right_pixels() {
    let running = start();
    let mut page = running.open().await;
    let mut sink = running.tiles.sink("alice");
    show(&mut page, "alice", 640, 360).await;
    let sent = pattern::draw(1280, 720, 7);
    let (width, height, _, planes) = until_picture(&mut page, || sink.write_frame(&sent)).await;
    assert_eq!((width, height), (640, 360), "scaled to the box, not sent at 720p");
    assert_eq!(planes, sent.scaled(640, 360).as_bytes(), "the pixels are the picture's");
    assert_eq!(pattern::read_number(&I420Frame::from_bytes(640, 360, planes).unwrap()), Some(7));
}

#[tokio::test]
async fn a_slow_page_gets_the_newest_picture_and_no_queue() {
    let running = start();
    let mut page = running.open().await;
    show(&mut page, SELF_TILE, 320, 180).await;
    let mut sink = running.tiles.sink(SELF_TILE);
    let mut number = 0;
    let first = until_picture(&mut page, || {
        sink.write_frame(&pattern::draw(320, 180, number));
        number += 1;
    })
    .await;
    let first_number = pattern::read_number(&I420Frame::from_bytes(320, 180, first.3.clone()).unwrap()).unwrap();
    // The page is "drawing": ten pictures come and it has not asked for the next one.
    for _ in 0..10 {
        sink.write_frame(&pattern::draw(320, 180, number));
        number += 1;
    }
    assert!(quiet(&mut page, Duration::from_millis(300)).await, "nothing is sent until the page asks");
    say(&mut page, r#"{"type":"next"}"#).await;
    let (.., sequence, planes) = next_picture(&mut page).await;
    assert_eq!(pattern::read_number(&I420Frame::from_bytes(320, 180, planes).unwrap()), Some(number - 1), "the newest");
    // Sequence numbers count the pictures made, as the pattern's numbers do: all those between
    // the first and the newest (ten or more) were skipped.
    assert_eq!(sequence - first.2, number - 1 - first_number, "the ones between were skipped");
    assert!(sequence - first.2 >= 10);
    say(&mut page, r#"{"type":"next"}"#).await;
    assert!(quiet(&mut page, Duration::from_millis(300)).await, "no queue behind it");
}

#[tokio::test]
async fn the_tiles_that_moved_while_the_page_drew_come_in_one_batch() {
    let running = start();
    let mut page = running.open().await;
    let (mut alice, mut bob, mut carol) = (running.tiles.sink("alice"), running.tiles.sink("bob"), running.tiles.sink("carol"));
    show(&mut page, "bob", 32, 18).await;
    show(&mut page, "carol", 64, 36).await;
    // Shown and then hidden: carol's pictures are not the page's any more.
    say(&mut page, r#"{"type":"hide","tile":"carol"}"#).await;
    show(&mut page, "alice", 64, 36).await;
    // The page's messages are read in order: once alice's picture comes, all of them were.
    until_picture(&mut page, || alice.write_frame(&pattern::draw(64, 36, 0))).await;
    // The page is drawing alice: both people move meanwhile, alice twice.
    for n in 1..=2 {
        alice.write_frame(&pattern::draw(64, 36, n));
    }
    bob.write_frame(&pattern::draw(64, 36, 5));
    carol.write_frame(&pattern::draw(64, 36, 9));
    say(&mut page, r#"{"type":"next"}"#).await;
    let mut batch = next_batch(&mut page).await;
    batch.sort();
    let said: Vec<(&str, u32, u32, Option<u32>)> =
        batch.iter().map(|(name, w, h, _, planes)| (name.as_str(), *w, *h, pattern::read_number(&I420Frame::from_bytes(*w, *h, planes.clone()).unwrap()))).collect();
    assert_eq!(said, [("alice", 64, 36, Some(2)), ("bob", 32, 18, None)], "the newest of each shown tile, in one message, each at its size");
    say(&mut page, r#"{"type":"next"}"#).await;
    assert!(quiet(&mut page, Duration::from_millis(300)).await, "nothing left behind");
}

#[tokio::test]
async fn a_page_that_goes_stops_its_tiles_pictures_and_a_huge_box_is_taken_at_the_limit() {
    let running = start();
    let mut page = running.open().await;
    let mut sink = running.tiles.sink("dave");
    show(&mut page, "dave", 100_000, 100_000).await;
    let (width, height, ..) = until_picture(&mut page, || sink.write_frame(&pattern::draw(64, 36, 0))).await;
    assert_eq!((width, height), (64, 36), "shown at its own size, the connection kept");
    assert!(sink.is_shown());
    drop(page);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while sink.is_shown() {
        assert!(tokio::time::Instant::now() < deadline, "the tile is still shown after its page went");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_tile_clears_when_the_video_ends_and_bad_messages_close_the_page() {
    let running = start();
    let mut page = running.open().await;
    show(&mut page, "bob", 64, 36).await;
    let mut sink = running.tiles.sink("bob");
    until_picture(&mut page, || sink.write_frame(&pattern::draw(64, 36, 0))).await;
    say(&mut page, r#"{"type":"next"}"#).await;
    drop(sink);
    let (width, height, _, planes) = next_picture(&mut page).await;
    assert_eq!((width, height, planes.len()), (0, 0, 0), "no picture now");

    for bad in [r#"{"type":"show","tile":"bob","width":"lots"}"#, r#"{"type":"show","tile":"../etc","width":1,"height":1,"fit":"cover"}"#, r#"{"type":"size","width":1,"height":1,"fit":"cover"}"#] {
        let mut page = running.open().await;
        say(&mut page, bad).await;
        match tokio::time::timeout(PATIENCE, page.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008, "{bad}"),
            other => panic!("expected a policy close for {bad}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connections_and_the_tiles_of_one_page_are_bounded() {
    let running = start();
    let mut page = running.open().await;
    for n in 0..MAX_TILES_PER_PAGE {
        show(&mut page, &format!("user{n}"), 16, 16).await;
    }
    show(&mut page, "one-too-many", 16, 16).await;
    match tokio::time::timeout(PATIENCE, page.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1013, "try again later"),
        other => panic!("expected a close, got {other:?}"),
    }

    let mut pages = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        pages.push(running.open().await);
    }
    assert!(running.open_as(&running.token, Some(ORIGIN)).await.is_err(), "one too many is dropped");
    drop(pages.pop());
    // The freed place is taken once the socket noticed the close.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while running.open_as(&running.token, Some(ORIGIN)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the place was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads batches (asking for each) until `count` entries came, with their kinds.
async fn next_entries(page: &mut Page, count: usize) -> Vec<(u8, Entry)> {
    let mut got = Vec::new();
    while got.len() < count {
        let data = loop {
            match tokio::time::timeout(PATIENCE, page.next()).await.expect("a batch in time") {
                Some(Ok(Message::Binary(data))) => break data,
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        };
        let mut kinds = Vec::new();
        let entries = entries_and_kinds(&data, &mut kinds);
        got.extend(kinds.into_iter().zip(entries));
        say(page, r#"{"type":"next"}"#).await;
    }
    got
}

#[tokio::test]
async fn a_page_that_decodes_gets_the_vp8_in_order_from_a_keyframe_and_starts_again_when_behind() {
    use hark_engine::video::ReceivedFrame;
    use hark_video::vp8::{EncoderSettings, Vp8Decoder, Vp8Encoder};
    let running = start();
    let mut page = running.open().await;
    let mut sink = running.tiles.remote_sink("erin");
    say(&mut page, r#"{"type":"show","tile":"erin","width":320,"height":180,"fit":"contain","codec":"vp8"}"#).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !sink.wants_encoded() {
        assert!(tokio::time::Instant::now() < deadline, "the page's show did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!sink.wants_pictures(), "the app decodes nothing for a page that decodes");
    let mut encoder = Vp8Encoder::new(EncoderSettings { width: 320, height: 180, fps: 30, bitrate_kbps: 300, threads: 1 }).unwrap();
    let mut number = 0u64;
    let mut send = |sink: &mut hark_frames::TileSink, force_keyframe: bool, number: &mut u64| {
        let encoded = encoder.encode(&pattern::draw(320, 180, *number as u32), force_keyframe).unwrap().expect("a frame");
        *number += 1;
        sink.write_encoded(&ReceivedFrame { data: &encoded.data, keyframe: encoded.keyframe, width: 320, height: 180, number: *number });
    };
    // A keyframe and four more, while the page draws nothing: they all come, in order.
    for _ in 0..5 {
        send(&mut sink, false, &mut number);
    }
    let got = next_entries(&mut page, 5).await;
    assert_eq!(got.iter().map(|(kind, _)| *kind).collect::<Vec<_>>(), [1, 2, 2, 2, 2], "from the keyframe, every frame");
    let mut decoder = Vp8Decoder::new().unwrap();
    let numbers: Vec<Option<u32>> = got.iter().map(|(_, (_, w, h, _, data))| {
        assert_eq!((*w, *h), (320, 180));
        pattern::read_number(&decoder.decode(data).unwrap().unwrap())
    }).collect();
    assert_eq!(numbers, [Some(0), Some(1), Some(2), Some(3), Some(4)], "the page decodes them as they were sent");

    // A page that stops asking falls off the chain: it gets nothing more until a keyframe, which
    // the sink asks the sender for.
    for _ in 0..hark_frames::MAX_CHAIN + 1 {
        send(&mut sink, false, &mut number);
    }
    assert!(quiet(&mut page, Duration::from_millis(200)).await, "nothing new is sent without a start");
    assert!(sink.wants_keyframe(), "the page waits for a keyframe");
    send(&mut sink, true, &mut number);
    let got = next_entries(&mut page, 1).await;
    assert_eq!(got[0].0, 1, "it starts again at the keyframe");
    assert_eq!(pattern::read_number(&Vp8Decoder::new().unwrap().decode(&got[0].1 .4).unwrap().unwrap()), Some(number as u32 - 1));
    assert!(!sink.wants_keyframe());

    // Its decoder failed: it asks, and starts again at the next keyframe.
    say(&mut page, r#"{"type":"keyframe","tile":"erin"}"#).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !sink.wants_keyframe() {
        assert!(tokio::time::Instant::now() < deadline, "no keyframe asked for");
        send(&mut sink, false, &mut number);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send(&mut sink, true, &mut number);
    // Deltas sent before the socket read the request may still come; then the new keyframe.
    let keyframe = 'found: loop {
        for (kind, entry) in next_entries(&mut page, 1).await {
            if kind == 1 {
                break 'found entry;
            }
        }
    };
    assert_eq!(pattern::read_number(&Vp8Decoder::new().unwrap().decode(&keyframe.4).unwrap().unwrap()), Some(number as u32 - 1), "the new keyframe, not the old one again");

    // Falling back to pictures (its decoder cannot): the app decodes for it again.
    say(&mut page, r#"{"type":"show","tile":"erin","width":320,"height":180,"fit":"contain","codec":"i420"}"#).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !sink.wants_pictures() || sink.wants_encoded() {
        assert!(tokio::time::Instant::now() < deadline, "the page's new codec did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
