//! The call going on now, as the events that told it, and its mutes: what a view that starts late
//! needs to catch up.
//!
//! A UI's call view is a reducer of the engine's call events, so a view that starts late (a
//! floating mini window, a main window reopened from a tray, a page that loaded while a call
//! rang) catches up by replaying what went by rather than by a second, hand-kept snapshot that
//! could drift from it. The engine owns this log (one owner per fact): it records every call
//! event before it sends it, and publishes the [`CallSnapshot`] for anyone to read at any time.

use crate::core::CallEvent;

/// Whether our microphone and the call's sound are muted. The engine says so (`mutes`) whenever
/// they change, and lifts both when a call ends: each call starts unmuted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Mutes {
    /// Our microphone sends silence.
    pub microphone: bool,
    /// The others are not played.
    pub speaker: bool,
}

/// The call going on now: its events so far, oldest first (none when there is no call), and the
/// mutes.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSnapshot {
    /// The call events, as they were sent.
    pub events: Vec<CallEvent>,
    /// The mutes now.
    pub mutes: Mutes,
    /// Whether we placed the call or answered it (not merely ringing here).
    pub placed_or_answered: bool,
    /// Whether our camera is on (for a video call; kept between calls).
    pub camera_on: bool,
}

impl CallSnapshot {
    /// Whether the call carries video now (its last word on media: how it began, or a change).
    pub fn is_video(&self) -> bool {
        self.events
            .iter()
            .rev()
            .find_map(|event| match event {
                CallEvent::IncomingCall { media, .. } | CallEvent::CallBegan { media, .. } | CallEvent::MediaChanged { media } => Some(*media),
                _ => None,
            })
            .is_some_and(|media| media == hark_protocol::Media::Video)
    }
}

impl Default for CallSnapshot {
    fn default() -> Self {
        CallSnapshot { events: Vec::new(), mutes: Mutes::default(), placed_or_answered: false, camera_on: true }
    }
}

/// The events of the call in progress, from its first (`incoming_call`, `dialing`, or for a call
/// we joined the people already in it and `call_began`) on.
#[derive(Debug)]
pub struct CallLog {
    events: Vec<CallEvent>,
    /// Who joined before a call of ours began: joining one sends no event of its own first.
    pending: Vec<CallEvent>,
    mutes: Mutes,
    camera_on: bool,
}

impl Default for CallLog {
    fn default() -> Self {
        CallLog { events: Vec::new(), pending: Vec::new(), mutes: Mutes::default(), camera_on: true }
    }
}

/// At most this many events are held for a call that has not begun (a group of 9 and then some).
const MAX_PENDING: usize = 32;

impl CallLog {
    /// Takes in an event, in the order the engine sends them. When the event ends the call, gives
    /// back the mutes it had (to lift: the next call starts unmuted).
    pub fn record(&mut self, event: &CallEvent) -> Option<Mutes> {
        match event {
            // The core tells of a ringing call only when it has none, or when both sides called
            // each other at once and it took theirs over ours: either way, this is the call now.
            CallEvent::IncomingCall { .. } => self.start(vec![event.clone()]),
            CallEvent::Dialing { .. } if !self.in_progress() => self.start(vec![event.clone()]),
            CallEvent::CallBegan { .. } if !self.in_progress() => {
                let mut events = std::mem::take(&mut self.pending);
                events.push(event.clone());
                self.start(events);
            }
            CallEvent::CallEnded { call_id, .. } | CallEvent::NotConnected { call_id: Some(call_id), .. }
                if self.call_id().is_some_and(|current| current != call_id.as_str()) =>
            {
                // The late end of an earlier call leaves this one be.
            }
            CallEvent::CallEnded { .. } | CallEvent::NotConnected { .. } => {
                self.pending.clear();
                if self.in_progress() {
                    // Nothing to replay once it is over; the next call starts unmuted.
                    self.events.clear();
                    return Some(std::mem::take(&mut self.mutes));
                }
            }
            _ if self.in_progress() => self.events.push(event.clone()),
            CallEvent::UserJoined { .. } | CallEvent::UsersInvited { .. } if self.pending.len() < MAX_PENDING => self.pending.push(event.clone()),
            _ => {}
        }
        None
    }

    fn start(&mut self, events: Vec<CallEvent>) {
        self.pending.clear();
        self.events = events;
    }

    /// Whether a call rings, is being placed or goes on.
    pub fn in_progress(&self) -> bool {
        !self.events.is_empty()
    }

    /// Whether we placed the call or answered it (not merely ringing here): what the call view,
    /// and the mini window in its stead, show.
    pub fn placed_or_answered(&self) -> bool {
        self.events.iter().any(|event| matches!(event, CallEvent::Dialing { .. } | CallEvent::CallBegan { .. }))
    }

    /// The id of the call now (the latest named: a call taken over in glare is the later one).
    fn call_id(&self) -> Option<&str> {
        self.events.iter().rev().find_map(|event| match event {
            CallEvent::IncomingCall { call_id, .. } | CallEvent::Dialing { call_id, .. } | CallEvent::CallBegan { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
    }

    /// Records a mute change; the mutes to announce.
    pub fn set_mutes(&mut self, microphone: Option<bool>, speaker: Option<bool>) -> Mutes {
        if let Some(muted) = microphone {
            self.mutes.microphone = muted;
        }
        if let Some(muted) = speaker {
            self.mutes.speaker = muted;
        }
        self.mutes
    }

    /// Notes whether our camera is on.
    pub fn set_camera_on(&mut self, on: bool) {
        self.camera_on = on;
    }

    /// The mutes now.
    pub fn mutes(&self) -> Mutes {
        self.mutes
    }

    /// What a view that starts late replays.
    pub fn snapshot(&self) -> CallSnapshot {
        CallSnapshot { events: self.events.clone(), mutes: self.mutes, placed_or_answered: self.placed_or_answered(), camera_on: self.camera_on }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::NotConnectedReason;
    use hark_protocol::{EndReason, Media};

    fn incoming(call_id: &str) -> CallEvent {
        CallEvent::IncomingCall { call_id: call_id.into(), caller: "bob".into(), invitees: vec!["me".into()], media: Media::Audio, user_data: None }
    }

    fn began(call_id: &str) -> CallEvent {
        CallEvent::CallBegan { call_id: call_id.into(), media: Media::Audio, connected_at: Some(1_000) }
    }

    #[test]
    fn the_snapshot_knows_whether_the_call_carries_video_now() {
        let mut log = CallLog::default();
        assert!(!log.snapshot().is_video());
        log.record(&CallEvent::Dialing { call_id: "c1".into(), invitees: vec!["bob".into()] });
        log.record(&CallEvent::CallBegan { call_id: "c1".into(), media: Media::Video, connected_at: Some(1_000) });
        assert!(log.snapshot().is_video());
        log.record(&CallEvent::MediaChanged { media: Media::Audio });
        assert!(!log.snapshot().is_video(), "gone down to audio");
        log.record(&CallEvent::CallEnded { call_id: "c1".into(), reason: EndReason::Hangup, duration_s: 6 });
        log.record(&incoming("c2"));
        assert!(!log.snapshot().is_video(), "an audio call ringing");
    }

    #[test]
    fn a_call_is_replayed_from_its_first_event_until_it_ends() {
        let mut log = CallLog::default();
        assert!(!log.in_progress());
        // Stray news with no call going on is not a call.
        assert_eq!(log.record(&CallEvent::UserLeft { user: "carol".into() }), None);
        assert!(log.snapshot().events.is_empty());

        log.record(&incoming("c1"));
        assert!(log.in_progress() && !log.placed_or_answered(), "ringing here is the banner's, not the call view's");
        log.record(&began("c1"));
        assert!(log.placed_or_answered());
        assert_eq!(log.set_mutes(Some(true), None), Mutes { microphone: true, speaker: false });
        // The late end of an earlier call changes nothing.
        assert_eq!(log.record(&CallEvent::NotConnected { call_id: Some("c0".into()), reason: NotConnectedReason::Cancelled }), None);
        let replay = log.snapshot();
        assert_eq!(replay.events, vec![incoming("c1"), began("c1")]);
        assert!(replay.mutes.microphone && replay.placed_or_answered);

        // Its end gives back the mutes to lift, and leaves nothing to replay.
        let ended = log.record(&CallEvent::CallEnded { call_id: "c1".into(), reason: EndReason::Hangup, duration_s: 6 });
        assert_eq!(ended, Some(Mutes { microphone: true, speaker: false }));
        assert!(!log.in_progress());
        assert_eq!(log.snapshot(), CallSnapshot::default());
    }

    #[test]
    fn in_glare_their_call_replaces_ours() {
        let mut log = CallLog::default();
        let dialing = CallEvent::Dialing { call_id: "ours".into(), invitees: vec!["bob".into()] };
        log.record(&dialing);
        assert!(log.placed_or_answered());
        log.record(&incoming("theirs"));
        log.record(&began("theirs"));
        assert_eq!(log.snapshot().events, vec![incoming("theirs"), began("theirs")]);
        // Its end is the end of the call now, not ignored as another call's.
        assert!(log.record(&CallEvent::CallEnded { call_id: "theirs".into(), reason: EndReason::Hangup, duration_s: 1 }).is_some());
        assert!(!log.in_progress());
    }

    #[test]
    fn a_joined_call_starts_with_who_was_already_there() {
        let mut log = CallLog::default();
        log.record(&CallEvent::UserJoined { user: "alice".into() });
        log.record(&CallEvent::UserJoined { user: "bob".into() });
        log.record(&began("g1"));
        assert!(log.placed_or_answered());
        let events = log.snapshot().events;
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], began("g1"));
        // Stray joins never pile up without a call.
        let mut idle = CallLog::default();
        for _ in 0..100 {
            idle.record(&CallEvent::UserJoined { user: "x".into() });
        }
        assert!(idle.pending.len() <= MAX_PENDING);
        idle.record(&CallEvent::NotConnected { call_id: None, reason: NotConnectedReason::Failed });
        assert!(idle.pending.is_empty());
    }

    #[test]
    fn a_new_call_starts_a_new_log() {
        let mut log = CallLog::default();
        let dialing = CallEvent::Dialing { call_id: "c3".into(), invitees: vec!["echo".into()] };
        log.record(&dialing);
        // Dialing again for the same call (the server naming it) adds to it.
        log.record(&dialing);
        assert_eq!(log.snapshot().events.len(), 2);
        // An unmuted call gives back no mutes to lift, and still ends.
        assert_eq!(log.record(&CallEvent::NotConnected { call_id: Some("c3".into()), reason: NotConnectedReason::Rejected }), Some(Mutes::default()));
        log.record(&incoming("c4"));
        assert_eq!(log.snapshot().events, vec![incoming("c4")]);
        assert!(!log.placed_or_answered());
    }
}
