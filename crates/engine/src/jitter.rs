//! An adaptive jitter buffer for one remote audio stream.
//!
//! webrtc-rs hands us RTP in arrival order with no buffering. This buffer puts packets back in
//! sequence order and tells the playout clock, every 20 ms, what to play: the packet due, a
//! recovery of a lost packet from the in-band FEC of the one after it, or concealment.
//!
//! It starts playing on the first packet (a call's first words are not held back to fill a
//! buffer) and deepens only when the network asks: when the packet due has not come and nothing
//! after it has either, it conceals one frame and waits for it instead of giving it up, which
//! leaves the buffer a frame deeper. So a late packet is played, not dropped, and after a loss the
//! lost packet's successor is here in time for FEC from then on. The depth also follows the
//! measured inter-arrival jitter (RFC 3550's estimator), up to 10 frames, and the buffer skips
//! ahead when it holds far more than that, so latency does not pile up after a burst. Pure:
//! arrival times are passed in.

use std::collections::BTreeMap;

use bytes::Bytes;

const FRAME_MS: f64 = 20.0;
/// Playout starts with this many frames here: the first.
const START_DEPTH: usize = 1;
const MAX_DEPTH: usize = 10;
/// Concealed frames in a row after which the stream counts as stopped (and restarts buffering).
const MAX_CONCEALED: u32 = 10;
/// Frames played without running dry (10 s) after which the depth asked for eases by one.
const CALM_FRAMES: u32 = 500;

/// What to play for the next 20 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet.
    Packet(Bytes),
    /// The due packet is lost; recover it from the FEC in this one (the next), which stays queued.
    Recover(Bytes),
    /// The due packet is lost and nothing follows yet: conceal.
    Conceal,
    /// Nothing to play (not started, or the stream stopped): silence.
    Silence,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct JitterBuffer {
    packets: BTreeMap<u64, Bytes>,
    highest: Option<u64>,
    next: Option<u64>,
    jitter_ms: f64,
    last: Option<(i64, u32)>,
    concealed_in_a_row: u32,
    /// The depth the network has asked for by running the buffer dry (frames).
    asked_depth: usize,
    /// Frames played since the buffer last ran dry.
    calm_frames: u32,
    /// Packets that arrived after their time to play had passed.
    pub late: u64,
    /// Frames that were recovered or concealed.
    pub lost: u64,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a packet waits to be played.
    pub fn holds_packets(&self) -> bool {
        !self.packets.is_empty()
    }

    /// The depth it aims for, in frames: what the jitter calls for, or what running dry asked.
    pub fn target_depth(&self) -> usize {
        let for_jitter = ((2.0 * self.jitter_ms) / FRAME_MS).ceil() as usize + 1;
        for_jitter.max(self.asked_depth).clamp(START_DEPTH, MAX_DEPTH)
    }

    /// `sequence` unwrapped near the highest seen (the first lands one wrap in, so earlier
    /// ones stay positive).
    fn extend(&self, sequence: u16) -> u64 {
        match self.highest {
            None => u64::from(sequence) + (1 << 16),
            Some(highest) => {
                let delta = i64::from(sequence.wrapping_sub(highest as u16) as i16);
                (highest as i64 + delta).max(0) as u64
            }
        }
    }

    /// A packet arrived at `arrival_ms`.
    pub fn push(&mut self, sequence: u16, timestamp: u32, payload: Bytes, arrival_ms: i64) {
        let extended = self.extend(sequence);
        if let Some((last_arrival, last_ts)) = self.last {
            // RFC 3550 A.8: transit-time difference, smoothed by 1/16.
            let arrival_delta = (arrival_ms - last_arrival) as f64;
            let media_delta = f64::from(timestamp.wrapping_sub(last_ts) as i32) / 48.0;
            self.jitter_ms += ((arrival_delta - media_delta).abs() - self.jitter_ms) / 16.0;
        }
        self.last = Some((arrival_ms, timestamp));
        if self.next.is_some_and(|next| extended < next) {
            self.late += 1;
            return;
        }
        self.highest = Some(self.highest.map_or(extended, |h| h.max(extended)));
        self.packets.insert(extended, payload);
    }

    /// A redundant copy (RFC 2198) of the frame `back` packets before `sequence`, which came in
    /// the packet `sequence` and was pushed just before: kept if that frame is still to play and
    /// is not here. It does not count as an arrival (the jitter estimate and the late count are
    /// the primary's), and copies of frames from before playout started are not played.
    pub fn push_redundant(&mut self, sequence: u16, back: u16, payload: Bytes) {
        let Some(next) = self.next else { return };
        let Some(extended) = self.extend(sequence).checked_sub(u64::from(back)) else { return };
        if extended >= next {
            self.packets.entry(extended).or_insert(payload);
        }
    }

    /// What to play for the next 20 ms.
    pub fn pop(&mut self) -> Playout {
        let target = self.target_depth();
        let Some(mut next) = self.next else {
            if self.packets.len() < START_DEPTH {
                return Playout::Silence;
            }
            let first = *self.packets.keys().next().expect("not empty");
            self.next = Some(first);
            return self.pop();
        };
        // Far too much queued (a burst after a stall): skip to `target` frames behind the newest.
        if let Some(highest) = self.highest {
            if highest + 1 > next + (target as u64) + 4 {
                next = highest + 1 - target as u64;
                self.packets = self.packets.split_off(&next);
            }
        }
        if let Some(payload) = self.packets.remove(&next) {
            self.next = Some(next + 1);
            self.concealed_in_a_row = 0;
            self.calm_frames += 1;
            if self.calm_frames >= CALM_FRAMES {
                // A spike long past no longer holds the depth up.
                self.calm_frames = 0;
                self.asked_depth = self.asked_depth.saturating_sub(1);
            }
            return Playout::Packet(payload);
        }
        if let Some(following) = self.packets.get(&(next + 1)) {
            self.next = Some(next + 1);
            self.lost += 1;
            self.concealed_in_a_row = 0;
            return Playout::Recover(following.clone());
        }
        if self.packets.is_empty() {
            // Dry: nothing due and nothing after it. Conceal a frame and wait for the packet due
            // (late, or lost: then its successor recovers it), a frame deeper from now on.
            self.next = Some(next);
            if self.concealed_in_a_row == 0 {
                self.asked_depth = (self.asked_depth.max(START_DEPTH) + 1).min(MAX_DEPTH);
                self.calm_frames = 0;
            }
        } else {
            // Later packets are here, but not the one due nor the one after: lost. Go on.
            self.next = Some(next + 1);
            self.lost += 1;
        }
        self.concealed_in_a_row += 1;
        if self.concealed_in_a_row > MAX_CONCEALED {
            // The stream stopped: start over when it comes back.
            self.next = None;
            self.concealed_in_a_row = 0;
            return Playout::Silence;
        }
        Playout::Conceal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(n: u16) -> Bytes {
        Bytes::from(vec![n as u8])
    }

    fn feed(buffer: &mut JitterBuffer, sequences: &[u16]) {
        for &s in sequences {
            buffer.push(s, u32::from(s) * 960, packet(s), i64::from(s) * 20);
        }
    }

    #[test]
    fn a_lost_packet_is_played_from_a_redundant_copy_in_a_later_one() {
        let mut b = JitterBuffer::new();
        feed(&mut b, &[10]);
        assert_eq!(b.pop(), Playout::Packet(packet(10)));
        // 11 and 12 are lost; 13 carries copies of both.
        b.push(13, 13 * 960, packet(13), 13 * 20);
        b.push_redundant(13, 2, packet(11));
        b.push_redundant(13, 1, packet(12));
        assert_eq!(b.pop(), Playout::Packet(packet(11)), "11, whole, from 13's copy");
        assert_eq!(b.pop(), Playout::Packet(packet(12)));
        assert_eq!(b.pop(), Playout::Packet(packet(13)));
        assert_eq!(b.lost, 0, "nothing was concealed or recovered");
    }

    #[test]
    fn redundant_copies_of_frames_played_or_here_change_nothing() {
        let mut b = JitterBuffer::new();
        feed(&mut b, &[10, 11]);
        assert_eq!(b.pop(), Playout::Packet(packet(10)));
        // A copy of 10 (played) and of 11 (here already, the primary wins).
        b.push(12, 12 * 960, packet(12), 12 * 20);
        b.push_redundant(12, 2, Bytes::from_static(b"stale"));
        b.push_redundant(12, 1, Bytes::from_static(b"copy"));
        assert_eq!(b.pop(), Playout::Packet(packet(11)));
        assert_eq!(b.pop(), Playout::Packet(packet(12)));
        assert_eq!(b.late, 0, "copies are not late arrivals");
    }

    #[test]
    fn copies_from_before_playout_started_are_not_played() {
        let mut b = JitterBuffer::new();
        b.push(10, 10 * 960, packet(10), 0);
        b.push_redundant(10, 1, packet(9));
        assert_eq!(b.pop(), Playout::Packet(packet(10)), "the call's audio starts with its first packet");
    }

    #[test]
    fn plays_from_the_first_packet_in_order() {
        let mut b = JitterBuffer::new();
        assert_eq!(b.pop(), Playout::Silence, "nothing yet");
        feed(&mut b, &[10]);
        assert_eq!(b.pop(), Playout::Packet(packet(10)), "the first packet plays at once");
        feed(&mut b, &[12, 11]); // reordered
        assert_eq!(b.pop(), Playout::Packet(packet(11)));
        assert_eq!(b.pop(), Playout::Packet(packet(12)));
        assert_eq!(b.target_depth(), START_DEPTH, "a calm stream never asked for more");
    }

    #[test]
    fn a_lost_packet_is_recovered_from_the_next() {
        let mut b = JitterBuffer::new();
        feed(&mut b, &[1, 2, 4, 5]);
        assert_eq!(b.pop(), Playout::Packet(packet(1)));
        assert_eq!(b.pop(), Playout::Packet(packet(2)));
        assert_eq!(b.pop(), Playout::Recover(packet(4)), "3 is lost, 4 carries its FEC");
        assert_eq!(b.pop(), Playout::Packet(packet(4)));
        assert_eq!(b.pop(), Playout::Packet(packet(5)));
        assert_eq!((b.lost, b.late), (1, 0));
    }

    #[test]
    fn running_dry_conceals_once_waits_for_the_late_packet_and_deepens() {
        let mut b = JitterBuffer::new();
        feed(&mut b, &[1]);
        assert_eq!(b.pop(), Playout::Packet(packet(1)));
        assert_eq!(b.pop(), Playout::Conceal, "2 is late: a frame is concealed");
        assert_eq!(b.target_depth(), 2, "the network asked for a frame more");
        feed(&mut b, &[2]);
        assert_eq!(b.pop(), Playout::Packet(packet(2)), "the late packet is played, not dropped");
        assert_eq!((b.lost, b.late), (0, 0));

        // A lost packet now: its successor is here in time, one frame behind.
        feed(&mut b, &[4]);
        assert_eq!(b.pop(), Playout::Recover(packet(4)), "3 lost, recovered from 4's FEC");
        feed(&mut b, &[5]);
        assert_eq!(b.pop(), Playout::Packet(packet(4)));
        assert_eq!(b.pop(), Playout::Packet(packet(5)));
        assert_eq!(b.lost, 1);
    }

    #[test]
    fn the_depth_asked_eases_after_a_calm_while() {
        let mut b = JitterBuffer::new();
        feed(&mut b, &[0]);
        b.pop();
        assert_eq!(b.pop(), Playout::Conceal);
        assert_eq!(b.target_depth(), 2);
        for s in 1..=CALM_FRAMES as u16 {
            feed(&mut b, &[s]);
            assert_eq!(b.pop(), Playout::Packet(packet(s)));
        }
        assert_eq!(b.target_depth(), START_DEPTH, "10 s without running dry");
    }

    #[test]
    fn two_lost_in_a_row_are_concealed_and_recovered_not_waited_for() {
        let mut b = JitterBuffer::new();
        feed(&mut b, &[1, 4, 5]);
        assert_eq!(b.pop(), Playout::Packet(packet(1)));
        assert_eq!(b.pop(), Playout::Conceal, "2 lost: 4 is here, so it is no wait");
        assert_eq!(b.pop(), Playout::Recover(packet(4)), "3 from 4's FEC");
        assert_eq!(b.pop(), Playout::Packet(packet(4)));
        assert_eq!((b.lost, b.target_depth()), (2, START_DEPTH), "losses are not the network asking for depth");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut b = JitterBuffer::new();
        for (i, s) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            b.push(s, i as u32 * 960, packet(s), i as i64 * 20);
        }
        let played: Vec<Playout> = (0..4).map(|_| b.pop()).collect();
        assert_eq!(played, [65534u16, 65535, 0, 1].map(|s| Playout::Packet(packet(s))));
    }

    #[test]
    fn depth_follows_jitter_and_a_backlog_is_skipped() {
        let mut b = JitterBuffer::new();
        // Packets every 20 ms of media arriving alternately 0 and 40 ms apart: 20 ms jitter.
        for i in 0..200u16 {
            let arrival = i64::from(i / 2) * 40;
            b.push(i, u32::from(i) * 960, packet(i), arrival);
        }
        assert!(b.target_depth() >= 3, "{}", b.target_depth());
        let mut calm = JitterBuffer::new();
        feed(&mut calm, &(0..200).collect::<Vec<_>>());
        assert_eq!(calm.target_depth(), START_DEPTH);
        // 200 frames queued: playing skips ahead instead of lagging 4 s behind.
        assert_eq!(calm.pop(), Playout::Packet(packet(199)));
    }

    #[test]
    fn a_stopped_stream_goes_silent_and_restarts() {
        let mut b = JitterBuffer::new();
        feed(&mut b, &[1, 2]);
        b.pop();
        b.pop();
        for _ in 0..MAX_CONCEALED {
            assert_eq!(b.pop(), Playout::Conceal);
        }
        assert_eq!(b.pop(), Playout::Silence);
        feed(&mut b, &[40, 41]);
        assert_eq!(b.pop(), Playout::Packet(packet(40)));
    }
}
