//! The frame socket with real WebSocket clients on loopback: who gets in, what they get, and that
//! a page that does not keep up gets the newest picture rather than a queue.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hark_engine::video::VideoSink;
use hark_frames::{FrameSocket, FrameTiles, HEADER_LEN, MAX_CONNECTIONS, SELF_TILE};
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
    async fn open_as(&self, tile: &str, token: &str, origin: Option<&str>) -> Result<Page, Error> {
        let mut request = format!("ws://127.0.0.1:{}/tiles/{tile}?token={token}", self.port).into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
    }

    async fn open(&self, tile: &str) -> Page {
        self.open_as(tile, &self.token, Some(ORIGIN)).await.unwrap()
    }
}

async fn say(page: &mut Page, json: &str) {
    page.send(Message::Text(json.into())).await.unwrap();
}

/// The next picture: its size, sequence number and planes.
async fn next_picture(page: &mut Page) -> (u32, u32, u32, Vec<u8>) {
    loop {
        match tokio::time::timeout(PATIENCE, page.next()).await.expect("a picture in time") {
            Some(Ok(Message::Binary(data))) => {
                let word = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
                return (word(0), word(4), word(8), data[HEADER_LEN..].to_vec());
            }
            Some(Ok(_)) => continue,
            other => panic!("the socket ended: {other:?}"),
        }
    }
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
    assert_eq!(status_of(running.open_as("alice", "0000", Some(ORIGIN)).await), 403, "wrong token");
    assert_eq!(status_of(running.open_as("alice", "", Some(ORIGIN)).await), 403, "no token");
    assert_eq!(status_of(running.open_as("alice", &running.token, Some("http://evil.example")).await), 403, "another origin");
    assert_eq!(status_of(running.open_as("alice", &running.token, None).await), 403, "no origin (not a browser page)");
    assert_eq!(status_of(running.open_as("../etc", &running.token, Some(ORIGIN)).await), 404, "not a tile name");
    // Another socket's token does not open this one.
    let other = start();
    assert_eq!(status_of(running.open_as("alice", &other.token, Some(ORIGIN)).await), 403);
    running.open("alice").await;
}

#[tokio::test]
async fn a_page_gets_the_picture_at_its_tiles_size_with_the_right_pixels() {
    let running = start();
    let mut page = running.open("alice").await;
    let mut sink = running.tiles.sink("alice");
    say(&mut page, r#"{"type":"size","width":640,"height":360,"fit":"contain"}"#).await;
    let sent = pattern::draw(1280, 720, 7);
    let (width, height, _, planes) = until_picture(&mut page, || sink.write_frame(&sent)).await;
    assert_eq!((width, height), (640, 360), "scaled to the box, not sent at 720p");
    assert_eq!(planes, sent.scaled(640, 360).as_bytes(), "the pixels are the picture's");
    assert_eq!(pattern::read_number(&I420Frame::from_bytes(640, 360, planes).unwrap()), Some(7));
}

#[tokio::test]
async fn a_slow_page_gets_the_newest_picture_and_no_queue() {
    let running = start();
    let mut page = running.open(SELF_TILE).await;
    say(&mut page, r#"{"type":"size","width":320,"height":180,"fit":"cover"}"#).await;
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
async fn the_tile_clears_when_the_video_ends_and_bad_messages_close_the_page() {
    let running = start();
    let mut page = running.open("bob").await;
    say(&mut page, r#"{"type":"size","width":64,"height":36,"fit":"contain"}"#).await;
    let mut sink = running.tiles.sink("bob");
    until_picture(&mut page, || sink.write_frame(&pattern::draw(64, 36, 0))).await;
    say(&mut page, r#"{"type":"next"}"#).await;
    drop(sink);
    let (width, height, _, planes) = next_picture(&mut page).await;
    assert_eq!((width, height, planes.len()), (0, 0, 0), "no picture now");

    say(&mut page, r#"{"type":"size","width":"lots"}"#).await;
    match tokio::time::timeout(PATIENCE, page.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a policy close, got {other:?}"),
    }
}

#[tokio::test]
async fn connections_are_bounded() {
    let running = start();
    let mut pages = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        pages.push(running.open("carol").await);
    }
    assert!(running.open_as("carol", &running.token, Some(ORIGIN)).await.is_err(), "one too many is dropped");
    drop(pages.pop());
    // The freed place is taken once the socket noticed the close.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while running.open_as("carol", &running.token, Some(ORIGIN)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the place was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
