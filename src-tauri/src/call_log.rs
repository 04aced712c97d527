//! The call going on now, as the events that told it, for a window that opens in the middle.
//!
//! The UI's call view is a reducer of the engine's call events, so a page that starts late (the
//! floating mini window, a main window reopened from the tray, a window that loaded while a call
//! rang) catches up by replaying what went by rather than by a second, hand-kept snapshot that
//! could drift from it. The mutes are the one part of a call the engine does not announce, so
//! they are kept here too and sent to every window when one of them changes them.

use hark_engine::core::CallEvent;

use crate::api::{CallReplay, Mutes};

/// The events of the call in progress, from its first (`incoming_call` or `dialing`) on.
#[derive(Debug, Default)]
pub struct CallLog {
    events: Vec<CallEvent>,
    mutes: Mutes,
}

impl CallLog {
    /// Takes in an event, in the order the engine sent them.
    pub fn record(&mut self, event: &CallEvent) {
        match event {
            CallEvent::IncomingCall { call_id, .. } => {
                // A second call while one goes on is answered "busy" by the core; it is not ours.
                if self.in_progress() && self.call_id() != Some(call_id.as_str()) {
                    return;
                }
                self.events = vec![event.clone()];
            }
            CallEvent::Dialing { .. } if !self.in_progress() => self.events = vec![event.clone()],
            CallEvent::CallEnded { call_id, .. } | CallEvent::NotConnected { call_id: Some(call_id), .. }
                if self.call_id().is_some_and(|current| current != call_id.as_str()) =>
            {
                // The late end of an earlier call (or of the busy one) leaves this call be.
            }
            CallEvent::CallEnded { .. } | CallEvent::NotConnected { .. } => {
                // Nothing to replay once it is over; each call starts unmuted.
                self.events.clear();
                self.mutes = Mutes::default();
            }
            _ if self.in_progress() => self.events.push(event.clone()),
            _ => {}
        }
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

    fn call_id(&self) -> Option<&str> {
        self.events.iter().find_map(|event| match event {
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
        self.mutes.clone()
    }

    /// What a late window replays; `me` is who is signed in.
    pub fn replay(&self, me: Option<String>) -> CallReplay {
        CallReplay { me, events: self.events.clone(), mutes: self.mutes.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_protocol::{EndReason, Media};

    fn incoming(call_id: &str) -> CallEvent {
        CallEvent::IncomingCall { call_id: call_id.into(), caller: "bob".into(), invitees: vec!["me".into()], media: Media::Audio, user_data: None }
    }

    #[test]
    fn a_call_is_replayed_from_its_first_event_until_it_ends() {
        let mut log = CallLog::default();
        assert!(!log.in_progress());
        // Stray news with no call going on is not a call.
        log.record(&CallEvent::UserLeft { user: "carol".into() });
        assert!(log.replay(None).events.is_empty());

        log.record(&incoming("c1"));
        assert!(log.in_progress() && !log.placed_or_answered(), "ringing here is the banner's, not the call view's");
        let began = CallEvent::CallBegan { call_id: "c1".into(), media: Media::Audio, connected_at: Some(1_000) };
        log.record(&began);
        assert!(log.placed_or_answered());
        assert_eq!(log.set_mutes(Some(true), None), Mutes { microphone: true, speaker: false });
        // A second caller while this call goes on is answered busy by the core: not replayed.
        log.record(&incoming("c2"));
        log.record(&CallEvent::NotConnected { call_id: Some("c2".into()), reason: hark_engine::core::NotConnectedReason::Busy });
        let replay = log.replay(None);
        assert_eq!(replay.events, vec![incoming("c1"), began]);
        assert!(replay.mutes.microphone);

        log.record(&CallEvent::CallEnded { call_id: "c1".into(), reason: EndReason::Hangup, duration_s: 6 });
        assert!(!log.in_progress());
        assert_eq!(log.replay(None), CallReplay::default());
    }

    #[test]
    fn a_new_call_starts_a_new_log() {
        let mut log = CallLog::default();
        let dialing = CallEvent::Dialing { call_id: "c3".into(), invitees: vec!["echo".into()] };
        log.record(&dialing);
        assert!(log.placed_or_answered());
        // Dialing again for the same call (the server naming it) adds to it.
        log.record(&dialing);
        assert_eq!(log.replay(None).events.len(), 2);
        log.record(&CallEvent::NotConnected { call_id: Some("c3".into()), reason: hark_engine::core::NotConnectedReason::Rejected });
        log.record(&incoming("c4"));
        assert_eq!(log.replay(None).events, vec![incoming("c4")]);
        assert!(!log.placed_or_answered());
    }
}
