//! An interceptor that lets keyframe requests (PLI and FIR) through to the application.
//!
//! In webrtc-rs 0.21 inbound RTCP stops at the end of the interceptor chain unless something marks
//! it for the application: on a default chain a sender never hears that a receiver lost its
//! picture, so it could not answer with a keyframe and the receiver would stay frozen until the
//! next periodic one. This one sits last in the chain (every interceptor that acts on RTCP has
//! seen all of it by then), keeps only PLI and FIR of each inbound compound packet and marks them
//! [`Attribute::DeliverToApplication`]; the driver then hands them to the local track they are
//! about ([`webrtc::media_stream::track_local::TrackLocal::poll`]). Everything else it lets go on
//! unchanged and unmarked, so it still stops where it did.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;

/// Where it goes in the chain: after every built-in interceptor.
pub const SLOT: usize = 14_000;

/// See the module documentation.
#[derive(Default)]
pub struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if !requests.is_empty() {
                // Only the requests go up; the rest of the compound packet has been acted on.
                message.message.packet = Packet::Rtcp(requests);
                message.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
