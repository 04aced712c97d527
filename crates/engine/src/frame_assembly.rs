//! Whole VP8 frames out of RTP packets, each as soon as its last packet is in.
//!
//! webrtc-rs's `SampleBuilder` gives a frame out only once a packet of the *next* frame has
//! arrived, which adds a frame period (33 ms at 30 fps, 67 ms at 15) to every picture, the first
//! one included. A VP8 frame is complete when the packet that starts it (S bit, partition 0), the
//! one that ends it (RTP marker) and every sequence number between them are in; [`FrameAssembler`]
//! gives it out then, which is what libwebrtc's packet buffer does too.
//!
//! Losses: a frame waits up to `max_wait` for missing packets (NACK may bring them). Then it is
//! given up, and the next frame out says it follows a gap, so the receiver waits for a keyframe.
//! A complete keyframe does not wait behind an incomplete older frame: it needs no past. Packets
//! with no VP8 in them (padding) keep the sequence contiguous without being part of a frame.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;

/// Packets held at most (a frame of 720p keyframe is about 100; a burst of loss must not grow
/// this without bound).
const MAX_HELD: usize = 2048;

/// A whole frame: the VP8 bitstream, and whether packets were lost before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledFrame {
    pub data: Bytes,
    /// Packets before this frame never came (a frame was given up): the reference chain may be
    /// broken, so only a keyframe is safe to decode.
    pub gap: bool,
    pub timestamp: u32,
}

#[derive(Debug)]
struct Held {
    timestamp: u32,
    marker: bool,
    /// The first packet of a frame (S bit set, partition index 0).
    start: bool,
    /// The VP8 payload without its descriptor; `None` for padding and packets that are not VP8.
    payload: Option<Bytes>,
    arrived: Instant,
}

/// Reassembles one stream's frames; see the module text.
#[derive(Debug)]
pub struct FrameAssembler {
    /// Packets waiting, by extended (unwrapped) sequence number.
    held: BTreeMap<u64, Held>,
    /// The extended sequence number of the last packet given out or skipped, if any yet.
    done_through: Option<u64>,
    /// The highest extended sequence number seen, for unwrapping.
    highest: Option<u64>,
    max_wait: Duration,
    /// Something was given up since the last frame out.
    gap: bool,
}

impl FrameAssembler {
    pub fn new(max_wait: Duration) -> Self {
        FrameAssembler { held: BTreeMap::new(), done_through: None, highest: None, max_wait, gap: false }
    }

    /// Takes a packet; returns the frames it completed, oldest first.
    pub fn push(&mut self, now: Instant, sequence: u16, timestamp: u32, marker: bool, payload: &Bytes) -> Vec<AssembledFrame> {
        let extended = self.unwrap(sequence);
        if self.done_through.is_some_and(|done| extended <= done) || self.held.contains_key(&extended) {
            // A retransmission that came too late, or twice.
            return Vec::new();
        }
        let mut descriptor = Vp8Packet::default();
        let vp8 = if payload.is_empty() { None } else { descriptor.depacketize(payload).ok() };
        let start = vp8.is_some() && descriptor.s == 1 && descriptor.pid == 0;
        self.held.insert(extended, Held { timestamp, marker, start, payload: vp8, arrived: now });
        while self.held.len() > MAX_HELD {
            self.held.pop_first();
            self.gap = true;
        }
        let mut out = Vec::new();
        while let Some(frame) = self.next_frame(now) {
            out.push(frame);
        }
        out
    }

    /// The next frame to give out, if one is ready (or made ready by giving up on older packets).
    fn next_frame(&mut self, now: Instant) -> Option<AssembledFrame> {
        self.skip_padding();
        let (&first, head) = self.held.first_key_value()?;
        let in_order = self.done_through.is_none_or(|done| first == done + 1);
        if in_order && head.start {
            if let Some(end) = self.complete_from(first) {
                return Some(self.take(first, end));
            }
            // Nothing missing, only not all here yet: the head frame's last packets are still on
            // their way and nothing can follow it (the usual case, for every packet but a frame's
            // last, so it is answered without looking further).
            let last = self.held.last_key_value().map_or(first, |(seq, _)| *seq);
            if last - first + 1 == self.held.len() as u64 {
                return None;
            }
        }
        // The head cannot go out yet. A complete keyframe further on needs nothing before it.
        if let Some((start, end)) = self.complete_keyframe_after(first) {
            self.give_up_before(start);
            return Some(self.take(start, end));
        }
        if now.duration_since(head.arrived) < self.max_wait {
            return None;
        }
        // Waited long enough for what is missing: drop up to the next frame start and try again.
        let next_start = self.held.iter().skip(1).find(|(_, p)| p.start).map(|(seq, _)| *seq);
        match next_start {
            Some(start) => self.give_up_before(start),
            None => {
                let last = self.held.last_key_value().map(|(seq, _)| *seq);
                self.held.clear();
                self.gap = true;
                self.done_through = last;
                return None;
            }
        }
        self.next_frame(now)
    }

    /// Padding at the head, right after what was done, moves the done mark on.
    fn skip_padding(&mut self) {
        while let Some((&seq, packet)) = self.held.first_key_value() {
            let in_order = self.done_through.is_none_or(|done| seq == done + 1);
            if !in_order || packet.payload.is_some() {
                return;
            }
            self.held.pop_first();
            self.done_through = Some(seq);
        }
    }

    /// The last sequence number of the frame starting at `start`, if all of it is in.
    fn complete_from(&self, start: u64) -> Option<u64> {
        let timestamp = self.held.get(&start)?.timestamp;
        let mut seq = start;
        loop {
            let packet = self.held.get(&seq)?;
            if packet.timestamp != timestamp || packet.payload.is_none() || (seq != start && packet.start) {
                return None;
            }
            if packet.marker {
                return Some(seq);
            }
            seq += 1;
        }
    }

    /// A complete keyframe after `head`: its first and last sequence numbers.
    fn complete_keyframe_after(&self, head: u64) -> Option<(u64, u64)> {
        self.held
            .range(head + 1..)
            .filter(|(_, p)| p.start && p.payload.as_ref().is_some_and(|b| hark_video::vp8::is_keyframe(b)))
            .find_map(|(seq, _)| self.complete_from(*seq).map(|end| (*seq, end)))
    }

    /// Drops every packet before `seq`: a gap.
    fn give_up_before(&mut self, seq: u64) {
        let kept = self.held.split_off(&seq);
        if !self.held.is_empty() || self.done_through.is_some_and(|done| done + 1 != seq) {
            self.gap = true;
        }
        self.held = kept;
        self.done_through = Some(seq - 1);
    }

    /// Takes the frame `start..=end` out.
    fn take(&mut self, start: u64, end: u64) -> AssembledFrame {
        let rest = self.held.split_off(&(end + 1));
        let packets = std::mem::replace(&mut self.held, rest);
        let timestamp = packets.get(&start).map_or(0, |p| p.timestamp);
        let mut data = BytesMut::new();
        for packet in packets.into_values() {
            data.extend_from_slice(packet.payload.as_deref().unwrap_or_default());
        }
        self.done_through = Some(end);
        AssembledFrame { data: data.freeze(), gap: std::mem::take(&mut self.gap), timestamp }
    }

    /// The extended sequence number nearest the highest seen.
    fn unwrap(&mut self, sequence: u16) -> u64 {
        let extended = match self.highest {
            // Start away from zero so that a packet from just before the first one still fits.
            None => (1 << 32) + u64::from(sequence),
            Some(highest) => {
                let candidate = (highest & !0xffff) | u64::from(sequence);
                if candidate + 0x8000 < highest {
                    candidate + 0x1_0000
                } else if candidate > highest + 0x8000 {
                    candidate - 0x1_0000
                } else {
                    candidate
                }
            }
        };
        self.highest = Some(self.highest.map_or(extended, |h| h.max(extended)));
        extended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(350);

    /// A VP8 RTP payload: the required descriptor byte (S bit, partition 0) and `data`.
    fn vp8(start: bool, data: &[u8]) -> Bytes {
        let mut payload = vec![if start { 0x10 } else { 0x00 }];
        payload.extend_from_slice(data);
        // webrtc-rs refuses payloads under 4 bytes.
        payload.resize(payload.len().max(4), 0xee);
        Bytes::from(payload)
    }

    /// The packets of one frame: `count` of them from `seq`, the first starting it (keyframe or
    /// not), the last with the marker.
    fn frame(seq: u16, timestamp: u32, count: u16, key: bool) -> Vec<(u16, u32, bool, Bytes)> {
        (0..count)
            .map(|i| {
                let first_byte = if i == 0 { u8::from(!key) } else { 0x55 };
                (seq.wrapping_add(i), timestamp, i + 1 == count, vp8(i == 0, &[first_byte, i as u8, 0, 0]))
            })
            .collect()
    }

    fn push_all(assembler: &mut FrameAssembler, at: Instant, packets: &[(u16, u32, bool, Bytes)]) -> Vec<AssembledFrame> {
        packets.iter().flat_map(|(seq, ts, marker, payload)| assembler.push(at, *seq, *ts, *marker, payload)).collect()
    }

    #[test]
    fn a_frame_goes_out_with_its_last_packet_not_the_next_frames_first() {
        let t = Instant::now();
        let mut assembler = FrameAssembler::new(WAIT);
        let packets = frame(100, 3000, 3, true);
        assert!(push_all(&mut assembler, t, &packets[..2]).is_empty());
        let out = push_all(&mut assembler, t, &packets[2..]);
        assert_eq!(out.len(), 1, "out at once");
        assert_eq!((out[0].timestamp, out[0].gap, out[0].data.len()), (3000, false, 3 * 4));
        assert_eq!(&out[0].data[..2], &[0, 0], "descriptors stripped, packets in order");
    }

    #[test]
    fn reordered_packets_and_sequence_wrap_still_make_whole_frames() {
        let t = Instant::now();
        let mut assembler = FrameAssembler::new(WAIT);
        let mut packets = frame(65_534, 3000, 4, true);
        packets.swap(1, 3);
        let out = push_all(&mut assembler, t, &packets);
        assert_eq!(out.len(), 1);
        assert!(!out[0].gap);
        let next = push_all(&mut assembler, t, &frame(2, 6000, 2, false));
        assert_eq!((next.len(), next[0].gap), (1, false), "across the wrap, in order");
    }

    #[test]
    fn padding_between_frames_is_not_a_gap() {
        let t = Instant::now();
        let mut assembler = FrameAssembler::new(WAIT);
        push_all(&mut assembler, t, &frame(10, 3000, 2, true));
        assert!(assembler.push(t, 12, 3000, false, &Bytes::new()).is_empty());
        let out = push_all(&mut assembler, t, &frame(13, 6000, 2, false));
        assert_eq!((out.len(), out[0].gap), (1, false));
    }

    #[test]
    fn a_frame_waits_for_a_retransmission_then_is_given_up() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut assembler = FrameAssembler::new(WAIT);
        push_all(&mut assembler, ms(0), &frame(10, 3000, 2, true));
        // Frame 2 loses its middle packet; it comes back (NACK) 100 ms later.
        let second = frame(12, 6000, 3, false);
        assert!(push_all(&mut assembler, ms(33), &[second[0].clone(), second[2].clone()]).is_empty());
        let third = frame(15, 9000, 2, false);
        assert!(push_all(&mut assembler, ms(66), &third).is_empty(), "frame 3 waits behind frame 2");
        let out = push_all(&mut assembler, ms(133), &[second[1].clone()]);
        assert_eq!(out.iter().map(|f| (f.timestamp, f.gap)).collect::<Vec<_>>(), [(6000, false), (9000, false)]);

        // Frame 4 loses a packet for good: given up once it has waited, and frame 5 says so.
        let fourth = frame(17, 12_000, 3, false);
        push_all(&mut assembler, ms(200), &[fourth[0].clone(), fourth[2].clone()]);
        let fifth = frame(20, 15_000, 2, false);
        assert!(push_all(&mut assembler, ms(233), &fifth).is_empty());
        let sixth = frame(22, 18_000, 2, false);
        let out = push_all(&mut assembler, ms(200 + 350), &sixth);
        assert_eq!(out.iter().map(|f| (f.timestamp, f.gap)).collect::<Vec<_>>(), [(15_000, true), (18_000, false)]);
        assert!(assembler.push(ms(600), 18, 12_000, false, &fourth[1].3).is_empty(), "too late: ignored");
    }

    #[test]
    fn a_whole_keyframe_does_not_wait_behind_a_broken_frame() {
        let t = Instant::now();
        let mut assembler = FrameAssembler::new(WAIT);
        push_all(&mut assembler, t, &frame(10, 3000, 2, true));
        let broken = frame(12, 6000, 3, false);
        push_all(&mut assembler, t, &broken[..1]);
        let out = push_all(&mut assembler, t, &frame(15, 9000, 3, true));
        assert_eq!(out.iter().map(|f| (f.timestamp, f.gap)).collect::<Vec<_>>(), [(9000, true)]);
    }

    #[test]
    fn duplicates_and_garbage_payloads_do_not_make_frames() {
        let t = Instant::now();
        let mut assembler = FrameAssembler::new(WAIT);
        let packets = frame(10, 3000, 2, true);
        assert!(push_all(&mut assembler, t, &packets[..1]).is_empty());
        assert!(push_all(&mut assembler, t, &packets[..1]).is_empty(), "a duplicate");
        assert_eq!(push_all(&mut assembler, t, &packets[1..]).len(), 1);
        // A packet too short to be VP8 in the middle of a frame: that frame never completes.
        let next = frame(12, 6000, 3, false);
        push_all(&mut assembler, t, &[next[0].clone(), next[2].clone()]);
        assert!(assembler.push(t, 13, 6000, false, &Bytes::from_static(&[0x00, 0x01])).is_empty());
    }
}
