//! One remote person's video: RTP -> whole VP8 frames -> decoder thread -> their [`VideoSink`].
//!
//! A reader task (tokio) takes the track's packets as they arrive and only reassembles them into
//! frames, each as soon as its last packet is in ([`FrameAssembler`]; webrtc-rs drops packets
//! when a track's queue of 256 overflows, so nothing slow may run there); frames go to a decoder
//! thread of this person's own ("hark-video-recv"), which decodes and hands each picture to the
//! sink. After a loss it cannot recover (a frame that came incomplete, or one the decoder
//! refuses, garbage included) it stops showing pictures and asks the sender for a keyframe (PLI,
//! again every [`PLI_EVERY`] while it waits), so the sink holds the last good picture instead of
//! frames decoded from a broken reference. It reports the first picture, when video stops
//! (nothing for [`STOPPED_AFTER`]) and when it comes back.
//!
//! A sink may take the frames encoded instead ([`VideoSink::wants_encoded`]: the desktop app's
//! pages decode VP8 themselves), and says whether it takes pictures at all now; when it takes
//! none, nothing is decoded here, and when it wants them again the decoder waits for a keyframe
//! (asked for at once) rather than decode from references it never saw.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hark_protocol::UserId;
use hark_video::vp8::{is_keyframe, keyframe_size, Vp8Decoder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::sync::mpsc as tokio_mpsc;
use tokio::sync::oneshot;
use tracing::debug;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::frame_assembly::FrameAssembler;
use crate::video::{ReceivedFrame, VideoSink};

/// How often a receiver waiting for a keyframe asks again.
pub const PLI_EVERY: Duration = Duration::from_millis(500);
/// No picture for this long and video counts as stopped.
pub const STOPPED_AFTER: Duration = Duration::from_secs(2);
/// A picture after a pause this long counts as video coming back (the sender may have said its
/// camera went off, which the engine shows before [`STOPPED_AFTER`] runs out).
pub const RESUMED_AFTER: Duration = Duration::from_millis(500);
/// How long reassembly waits for a frame's missing packets (NACK may bring them) before giving up
/// on the frame.
const MAX_FRAME_WAIT: Duration = Duration::from_millis(350);

/// What a receiver reports about its person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoReceiveReport {
    /// The first picture of the call from them.
    FirstFrame(UserId),
    /// Pictures flow again after a stop (or for the first time).
    Available(UserId),
    /// Nothing came for a while (their camera went off, or the network dropped it).
    Unavailable(UserId),
    /// Their stream cannot be decoded (not VP8, or broken); a keyframe has been asked for.
    Undecodable(UserId, String),
    /// A loss broke the picture: the last good one is held and a keyframe asked for.
    Frozen(UserId),
    /// A keyframe ended the freeze: how long after it began (the first keyframe request), and
    /// how long after the last keyframe request.
    Recovered(UserId, Duration, Duration),
    /// Their video is shown at most this large now (device pixels): tell them, so they send no
    /// more pixels than that.
    ViewSize(UserId, u32, u32),
}

/// A view this much larger or smaller (a share of the size last told) is told again: a window
/// dragged wider tells the sender a few times, not at every pixel (each change costs a keyframe).
const SHOWN_SIZE_STEP: f64 = 0.125;

/// The size the sender was last told its video is shown at.
#[derive(Debug, Default)]
struct ShownSizeTold {
    told: Option<(u32, u32)>,
}

impl ShownSizeTold {
    /// What to tell the sender now that the sink shows its video at `shown`, if anything.
    fn next(&mut self, shown: Option<(u32, u32)>) -> Option<(u32, u32)> {
        let shown = shown.filter(|&(w, h)| w > 0 && h > 0)?;
        let moved = |now: u32, was: u32| f64::from(now.abs_diff(was)) > SHOWN_SIZE_STEP * f64::from(was);
        if self.told.is_some_and(|(w, h)| !moved(shown.0, w) && !moved(shown.1, h)) {
            return None;
        }
        self.told = Some(shown);
        Some(shown)
    }
}

/// A whole frame as reassembled from RTP.
struct Frame {
    data: bytes::Bytes,
    /// Packets lost just before it (the reference chain may be broken).
    gap: bool,
}

/// Receives `user`'s video from `track` until the track ends; the sink is finished then, and
/// the answer (when there is a receiver) says so, so that whoever stops can wait for recordings
/// to be whole. `loss_percent` of packets are dropped on arrival on purpose (a test impairment;
/// 0 normally).
pub fn spawn(
    user: UserId,
    track: Arc<dyn TrackRemote>,
    sink: Box<dyn VideoSink>,
    loss_percent: f64,
    reports: tokio_mpsc::UnboundedSender<VideoReceiveReport>,
) -> Option<oneshot::Receiver<()>> {
    let (frames, inbox) = mpsc::channel::<Frame>();
    let (pli_tx, mut pli_rx) = tokio_mpsc::unbounded_channel::<()>();
    let (finished, done) = oneshot::channel();
    let decoder_user = user.clone();
    let spawned = std::thread::Builder::new().name("hark-video-recv".into()).spawn(move || {
        decode_loop(decoder_user, inbox, sink, pli_tx, reports);
        let _ = finished.send(());
    });
    if let Err(e) = spawned {
        tracing::warn!(%user, error = %e, "cannot start a video decoder thread");
        return None;
    }
    tokio::spawn(async move {
        let mut assembler = FrameAssembler::new(MAX_FRAME_WAIT);
        let mut media_ssrc = 0u32;
        loop {
            tokio::select! {
                event = track.poll() => match event {
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                        media_ssrc = packet.header.ssrc;
                        if loss_percent > 0.0 && rand::random::<f64>() * 100.0 < loss_percent {
                            continue;
                        }
                        let now = std::time::Instant::now();
                        let header = &packet.header;
                        for frame in assembler.push(now, header.sequence_number, header.timestamp, header.marker, &packet.payload) {
                            if frames.send(Frame { data: frame.data, gap: frame.gap }).is_err() {
                                return;
                            }
                        }
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                },
                Some(()) = pli_rx.recv() => {
                    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
                    if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                        debug!(%user, error = %e, "PLI");
                    }
                }
            }
        }
        debug!(%user, "remote video track ended");
    });
    Some(done)
}

/// The decoder thread: decode, show, ask for keyframes, watch for stops.
fn decode_loop(
    user: UserId,
    inbox: mpsc::Receiver<Frame>,
    mut sink: Box<dyn VideoSink>,
    pli: tokio_mpsc::UnboundedSender<()>,
    reports: tokio_mpsc::UnboundedSender<VideoReceiveReport>,
) {
    let mut decoder = match Vp8Decoder::new() {
        Ok(decoder) => decoder,
        Err(e) => {
            let _ = reports.send(VideoReceiveReport::Undecodable(user, e.to_string()));
            return;
        }
    };
    let mut state = ReceiveState::default();
    let mut shown_size = ShownSizeTold::default();
    // The stream's size (from its last keyframe) and how many frames arrived.
    let mut size = (0, 0);
    let mut arrived = 0u64;
    loop {
        let frame = match inbox.recv_timeout(Duration::from_millis(100)) {
            Ok(frame) => Some(frame),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = Instant::now();
        let mut decoder_waits = false;
        if let Some(frame) = frame {
            let keyframe = is_keyframe(&frame.data);
            // Counted for every frame, so one not handed on shows as a step in `number`.
            arrived += 1;
            if state.arrived(now, keyframe, frame.gap) == Step::Decode {
                if let Some(set) = keyframe_size(&frame.data) {
                    size = set;
                }
                let mut shown = false;
                if sink.wants_encoded() {
                    let (width, height) = size;
                    sink.write_encoded(&ReceivedFrame { data: &frame.data, keyframe, width, height, number: arrived });
                    shown = true;
                }
                match state.decode(keyframe, sink.wants_pictures()) {
                    Decode::Yes => match decoder.decode(&frame.data) {
                        Ok(Some(picture)) => {
                            sink.write_frame(&picture);
                            shown = true;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            if state.undecodable(now) {
                                let _ = reports.send(VideoReceiveReport::Undecodable(user.clone(), e.to_string()));
                            }
                        }
                    },
                    Decode::WaitForKeyframe => decoder_waits = true,
                    // Nobody takes pictures now, yet they flow: the reports must say so, or a
                    // view that shows a tile only while its video is on would never show it.
                    Decode::No => shown = true,
                }
                if shown {
                    for report in state.shown(now, &user) {
                        let _ = reports.send(report);
                    }
                }
                if let Some((width, height)) = shown_size.next(sink.shown_at(size.0, size.1)) {
                    let _ = reports.send(VideoReceiveReport::ViewSize(user.clone(), width, height));
                }
            }
        }
        if state.wants_keyframe(now, decoder_waits || sink.wants_keyframe()) {
            let _ = pli.send(());
        }
        if state.freeze_began() {
            let _ = reports.send(VideoReceiveReport::Frozen(user.clone()));
        }
        if state.stopped(now) {
            let _ = reports.send(VideoReceiveReport::Unavailable(user.clone()));
        }
    }
    sink.finish();
}

/// What to do with an arrived frame.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Decode,
    Skip,
}

/// Whether to decode a frame that may be decoded.
#[derive(Debug, PartialEq, Eq)]
enum Decode {
    Yes,
    /// The sink takes no pictures now (it decodes elsewhere, or nobody watches).
    No,
    /// The sink takes pictures again but the decoder missed frames: only a keyframe decodes.
    WaitForKeyframe,
}

/// The receiver's decisions, pure (time passed in) so they are tested without a network.
#[derive(Debug, Default)]
struct ReceiveState {
    /// Waiting for a keyframe: from the start, and after a loss it cannot recover from.
    broken_since: Option<Instant>,
    started: bool,
    last_pli: Option<Instant>,
    last_shown: Option<Instant>,
    showing: bool,
    /// When the current freeze (a break after pictures were shown) began, and whether it was said.
    frozen_since: Option<Instant>,
    frozen_said: bool,
    /// Whether a refused frame was reported since the last picture shown.
    undecodable_said: bool,
    /// Frames went by undecoded (nobody wanted pictures): the decoder's references are stale.
    decoder_behind: bool,
}

impl ReceiveState {
    fn arrived(&mut self, now: Instant, keyframe: bool, gap: bool) -> Step {
        if !self.started && !keyframe {
            // Nothing decodes before the first keyframe.
            self.broken_since.get_or_insert(now);
            return Step::Skip;
        }
        if gap && !keyframe {
            self.broken(now);
        }
        if self.broken_since.is_some() && !keyframe {
            return Step::Skip;
        }
        self.started = true;
        self.broken_since = None;
        Step::Decode
    }

    fn broken(&mut self, now: Instant) {
        if self.broken_since.is_none() {
            self.broken_since = Some(now);
            self.last_pli = None;
            if self.started {
                self.frozen_since = Some(now);
                self.frozen_said = false;
            }
        }
    }

    /// A frame the decoder refused: wait for a keyframe, as after a loss. Whether to say so: once
    /// until a picture shows again, not for each frame of a peer that sends garbage at 30 fps.
    fn undecodable(&mut self, now: Instant) -> bool {
        self.broken(now);
        !std::mem::replace(&mut self.undecodable_said, true)
    }

    /// Whether a freeze just began (said once per freeze).
    fn freeze_began(&mut self) -> bool {
        if self.frozen_since.is_some() && !self.frozen_said {
            self.frozen_said = true;
            return true;
        }
        false
    }

    /// A picture was shown: what to report.
    fn shown(&mut self, now: Instant, user: &UserId) -> Vec<VideoReceiveReport> {
        let mut reports = Vec::new();
        if self.last_shown.is_none() {
            reports.push(VideoReceiveReport::FirstFrame(user.clone()));
        }
        if let Some(since) = self.frozen_since.take() {
            let asked = self.last_pli.unwrap_or(since);
            reports.push(VideoReceiveReport::Recovered(user.clone(), now.duration_since(since), now.duration_since(asked)));
        }
        self.undecodable_said = false;
        let resumed = self.last_shown.is_some_and(|at| now.duration_since(at) >= RESUMED_AFTER);
        if !self.showing || resumed {
            self.showing = true;
            reports.push(VideoReceiveReport::Available(user.clone()));
        }
        self.last_shown = Some(now);
        reports
    }

    /// Whether to decode a frame that passed [`ReceiveState::arrived`], when the sink does or
    /// does not want pictures now.
    fn decode(&mut self, keyframe: bool, wanted: bool) -> Decode {
        if !wanted {
            self.decoder_behind = true;
            return Decode::No;
        }
        if self.decoder_behind && !keyframe {
            return Decode::WaitForKeyframe;
        }
        self.decoder_behind = false;
        Decode::Yes
    }

    /// Whether to send a PLI now: waiting for a keyframe here, or `elsewhere` (the sink's own
    /// decoder, or ours after frames went by undecoded), and none asked for lately.
    fn wants_keyframe(&mut self, now: Instant, elsewhere: bool) -> bool {
        if (self.broken_since.is_none() && !elsewhere) || self.last_pli.is_some_and(|at| now.duration_since(at) < PLI_EVERY) {
            return false;
        }
        self.last_pli = Some(now);
        true
    }

    /// Whether video just stopped (reported once per stop).
    fn stopped(&mut self, now: Instant) -> bool {
        if self.showing && self.last_shown.is_some_and(|at| now.duration_since(at) >= STOPPED_AFTER) {
            self.showing = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_decodes_before_a_keyframe_and_a_loss_waits_for_the_next() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut state = ReceiveState::default();
        assert_eq!(state.arrived(ms(0), false, false), Step::Skip);
        assert!(state.wants_keyframe(ms(0), false), "asks at once");
        assert!(!state.wants_keyframe(ms(100), false), "not again so soon");
        assert!(state.wants_keyframe(ms(600), false), "again after {PLI_EVERY:?}");
        assert_eq!(state.arrived(ms(700), true, false), Step::Decode);
        assert!(!state.wants_keyframe(ms(1_500), false));
        assert_eq!(state.arrived(ms(733), false, false), Step::Decode);
        // Packets lost before a delta frame: hold the last picture until a keyframe.
        assert_eq!(state.arrived(ms(766), false, true), Step::Skip);
        assert!(state.wants_keyframe(ms(766), false));
        assert_eq!(state.arrived(ms(800), false, false), Step::Skip);
        assert_eq!(state.arrived(ms(833), true, true), Step::Decode, "a keyframe needs no past");
        assert_eq!(state.arrived(ms(866), false, false), Step::Decode);
        assert!(state.freeze_began() && !state.freeze_began(), "the freeze at 766 ms, said once");
        let user: UserId = "bob".into();
        let reports = state.shown(ms(866), &user);
        assert!(
            reports.contains(&VideoReceiveReport::Recovered(user.clone(), Duration::from_millis(100), Duration::from_millis(100))),
            "{reports:?}"
        );
    }

    #[test]
    fn garbage_is_said_once_per_break_and_waits_for_a_keyframe() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let user: UserId = "bob".into();
        let mut state = ReceiveState::default();
        assert_eq!(state.arrived(ms(0), true, false), Step::Decode);
        state.shown(ms(0), &user);
        // Thirty refused frames in a second: one report, keyframe requests at the PLI pace.
        let said = (0..30).filter(|n| state.arrived(ms(33 * n + 33), true, false) == Step::Decode && state.undecodable(ms(33 * n + 33))).count();
        assert_eq!(said, 1);
        assert!(state.wants_keyframe(ms(1_000), false));
        assert_eq!(state.arrived(ms(1_033), false, false), Step::Skip, "a delta frame after garbage has no reference");
        assert_eq!(state.arrived(ms(1_066), true, false), Step::Decode);
        assert!(state.shown(ms(1_066), &user).iter().any(|r| matches!(r, VideoReceiveReport::Recovered(..))));
        assert!(state.undecodable(ms(2_000)), "garbage again after a good picture is said again");
    }

    #[test]
    fn first_frame_available_and_stopped_are_each_said_once() {
        let t = Instant::now();
        let user: UserId = "bob".into();
        let mut state = ReceiveState::default();
        assert_eq!(
            state.shown(t, &user),
            [VideoReceiveReport::FirstFrame(user.clone()), VideoReceiveReport::Available(user.clone())]
        );
        assert!(state.shown(t + Duration::from_millis(33), &user).is_empty());
        assert_eq!(
            state.shown(t + Duration::from_millis(900), &user),
            [VideoReceiveReport::Available(user.clone())],
            "after a pause (the camera went off and on), said again: the engine keeps it once"
        );
        assert!(!state.stopped(t + Duration::from_secs(1)));
        assert!(state.stopped(t + Duration::from_secs(3)));
        assert!(!state.stopped(t + Duration::from_secs(4)), "once");
        assert_eq!(state.shown(t + Duration::from_secs(5), &user), [VideoReceiveReport::Available(user.clone())]);
    }

    #[test]
    fn frames_nobody_wants_decoded_are_not_and_decoding_again_waits_for_a_keyframe() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut state = ReceiveState::default();
        assert_eq!(state.arrived(ms(0), true, false), Step::Decode);
        assert_eq!(state.decode(true, true), Decode::Yes);
        assert_eq!(state.decode(false, true), Decode::Yes);
        // A page decodes them (or nobody watches): the decoder rests.
        assert_eq!(state.decode(false, false), Decode::No);
        assert!(!state.wants_keyframe(ms(100), false), "nothing is broken here");
        // Pictures wanted again: the decoder's references are stale, so a keyframe is asked for.
        assert_eq!(state.decode(false, true), Decode::WaitForKeyframe);
        assert!(state.wants_keyframe(ms(200), true));
        assert!(!state.wants_keyframe(ms(300), true), "at the PLI pace");
        assert_eq!(state.decode(false, true), Decode::WaitForKeyframe);
        assert_eq!(state.decode(true, true), Decode::Yes);
        assert_eq!(state.decode(false, true), Decode::Yes);
        // A sink whose own decoder waits asks through the same pace.
        assert!(state.wants_keyframe(ms(800), true));
    }


    #[test]
    fn the_shown_size_is_told_first_then_only_when_it_moved_by_an_eighth() {
        let mut told = ShownSizeTold::default();
        assert_eq!(told.next(None), None, "nobody shows it: nothing to tell");
        assert_eq!(told.next(Some((0, 0))), None, "no size yet (no keyframe)");
        assert_eq!(told.next(Some((718, 404))), Some((718, 404)));
        assert_eq!(told.next(Some((718, 404))), None);
        assert_eq!(told.next(Some((780, 438))), None, "within an eighth");
        assert_eq!(told.next(Some((820, 461))), Some((820, 461)), "past an eighth wider");
        assert_eq!(told.next(Some((700, 394))), Some((700, 394)), "past an eighth narrower");
        assert_eq!(told.next(None), None, "hidden: the sender keeps what it was told");
        assert_eq!(told.next(Some((700, 394))), None);
    }

}
