//! An interceptor that measures the round-trip time from RTCP, as RFC 3550 §6.4.1 describes.
//!
//! webrtc-rs 0.21.1 reads no report blocks, so it knows no RTT of its own. This one watches both
//! directions: each sender report we send is remembered by the middle 32 bits of its NTP time
//! (the "LSR" a receiver echoes) with the instant it left; each report block that comes back
//! (in a receiver report or a sender report) names that LSR and how long the far side held it
//! (DLSR, in 1/65536 s), so `arrival - departure - DLSR` is the time on the wire both ways.
//! It works against any RFC 3550 peer (webrtc-rs's receiver reports fill LSR and DLSR, and so do
//! browsers'), and it keeps measuring while ICE consent checks are paused or sparse.
//!
//! It sits between the receiver-report and sender-report interceptors: writes walk the chain
//! from the application towards the wire, so only a slot below the sender-report generator sees
//! the reports it makes; reads walk the other way and reach it unchanged. It passes every
//! packet on as it came and only reads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;

/// Where it goes in the chain: above the receiver-report interceptor (10 000), below the
/// sender-report one (11 000).
pub const SLOT: usize = 10_500;

/// Sender reports remembered: a receiver echoes one of the last few (one a second per stream).
const REMEMBERED: usize = 32;

/// The latest round-trip time, shared with whoever reports network quality. Microseconds plus
/// one; zero while nothing has been measured.
#[derive(Debug, Clone, Default)]
pub struct RoundTripTime(Arc<AtomicU64>);

impl RoundTripTime {
    /// The latest measurement, if there is one yet.
    pub fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros - 1)),
        }
    }

    fn set(&self, rtt: Duration) {
        self.0.store(rtt.as_micros() as u64 + 1, Ordering::Relaxed);
    }
}

/// See the module documentation.
pub struct RoundTrips {
    /// The LSR of each sender report sent, and when it left.
    sent: VecDeque<(u32, Instant)>,
    rtt: RoundTripTime,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RoundTrips {
    /// An interceptor that writes what it measures to `rtt`.
    pub fn new(rtt: RoundTripTime) -> Self {
        RoundTrips { sent: VecDeque::new(), rtt, read: VecDeque::new(), write: VecDeque::new() }
    }

    fn report_came_back(&mut self, block: &ReceptionReport, arrived: Instant) {
        // LSR 0: the far side has had no sender report from us yet.
        if block.last_sender_report == 0 {
            return;
        }
        let Some(&(_, left)) = self.sent.iter().rev().find(|(lsr, _)| *lsr == block.last_sender_report) else { return };
        let held = Duration::from_secs_f64(f64::from(block.delay) / 65_536.0);
        if let Some(rtt) = arrived.checked_duration_since(left).and_then(|elapsed| elapsed.checked_sub(held)) {
            self.rtt.set(rtt);
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RoundTrips {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            for packet in packets {
                let any = packet.as_any();
                let blocks = any.downcast_ref::<ReceiverReport>().map(|rr| &rr.reports).or_else(|| any.downcast_ref::<SenderReport>().map(|sr| &sr.reports));
                for block in blocks.into_iter().flatten() {
                    self.report_came_back(block, message.now);
                }
            }
        }
        self.read.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            for sr in packets.iter().filter_map(|p| p.as_any().downcast_ref::<SenderReport>()) {
                // The middle 32 bits of the 64-bit NTP time, as a receiver echoes them.
                self.sent.push_back(((sr.ntp_time >> 16) as u32, message.now));
                if self.sent.len() > REMEMBERED {
                    self.sent.pop_front();
                }
            }
        }
        self.write.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for RoundTrips {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    fn tagged(now: Instant, packet: Box<dyn rtc::rtcp::Packet>) -> TaggedPacket {
        TaggedPacket { now, transport: TransportContext::default(), message: AttributedPacket::new(Packet::Rtcp(vec![packet])) }
    }

    fn sender_report(ntp_time: u64, reports: Vec<ReceptionReport>) -> Box<dyn rtc::rtcp::Packet> {
        Box::new(SenderReport { ssrc: 1, ntp_time, reports, ..Default::default() })
    }

    fn receiver_report(lsr: u32, dlsr: Duration) -> Box<dyn rtc::rtcp::Packet> {
        let block = ReceptionReport { ssrc: 1, last_sender_report: lsr, delay: (dlsr.as_secs_f64() * 65_536.0) as u32, ..Default::default() };
        Box::new(ReceiverReport { ssrc: 2, reports: vec![block], ..Default::default() })
    }

    #[test]
    fn the_time_on_the_wire_both_ways_is_measured_and_the_far_sides_hold_is_taken_off() {
        let rtt = RoundTripTime::default();
        let mut interceptor = RoundTrips::new(rtt.clone());
        let t0 = Instant::now();
        let ntp: u64 = 0xE1A2_B3C4_D5E6_F708;
        interceptor.handle_write(tagged(t0, sender_report(ntp, vec![]))).unwrap();
        assert!(interceptor.poll_write().is_some(), "passed on");
        assert_eq!(rtt.get(), None);

        // Reports that name no sender report of ours, or one we never sent, say nothing.
        interceptor.handle_read(tagged(t0 + Duration::from_millis(50), receiver_report(0, Duration::ZERO))).unwrap();
        interceptor.handle_read(tagged(t0 + Duration::from_millis(50), receiver_report(0x1234_5678, Duration::ZERO))).unwrap();
        assert_eq!(rtt.get(), None);

        // Held 30 ms at the far side, back after 130 ms: 100 ms on the wire.
        let lsr = (ntp >> 16) as u32;
        interceptor.handle_read(tagged(t0 + Duration::from_millis(130), receiver_report(lsr, Duration::from_millis(30)))).unwrap();
        let measured = rtt.get().unwrap();
        assert!(measured.abs_diff(Duration::from_millis(100)) < Duration::from_millis(1), "{measured:?}");
        assert_eq!(interceptor.poll_read().map(|_| ()).into_iter().count(), 1);

        // Report blocks inside a sender report (a peer that sends too) count the same way.
        let block = ReceptionReport { ssrc: 1, last_sender_report: lsr, delay: 0, ..Default::default() };
        interceptor.handle_read(tagged(t0 + Duration::from_millis(40), sender_report(7, vec![block]))).unwrap();
        let measured = rtt.get().unwrap();
        assert!(measured.abs_diff(Duration::from_millis(40)) < Duration::from_millis(1), "{measured:?}");

        // A DLSR longer than the elapsed time (clocks that disagree) is not a negative RTT.
        interceptor.handle_read(tagged(t0 + Duration::from_millis(10), receiver_report(lsr, Duration::from_millis(500)))).unwrap();
        assert!(rtt.get().unwrap().abs_diff(Duration::from_millis(40)) < Duration::from_millis(1), "kept the last good one");
    }
}
