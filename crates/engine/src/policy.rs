//! What an administrator allows: the engine's half of a deployment policy (the app reads the
//! policy file; see hark-desktop's `policy` module). The engine enforces it whatever its caller
//! asks, so a hidden button is never the only guard: the call core refuses video calls and
//! invitations, the engine keeps the camera shut and drops received pictures, forces relay-only
//! ICE whatever the server says, and refuses ringtone files.

/// What calls may do. The default allows everything (no policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// Video calls may be placed and answered with video; off, every call is audio (a video call
    /// is answered as audio, which takes it down to audio for everyone).
    pub video: bool,
    /// More people may be invited into a running call.
    pub invite_more: bool,
    /// Media only through a TURN relay, whatever the server's policy: our own addresses are
    /// never offered to the other side.
    pub relay_only: bool,
    /// Ringtones may be the person's own sound files (off: only the bundled sounds).
    pub custom_ringtones: bool,
}

impl Default for CallPolicy {
    fn default() -> CallPolicy {
        CallPolicy { video: true, invite_more: true, relay_only: false, custom_ringtones: true }
    }
}

/// What a policy forbids, as a command's refusal says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// Video is off.
    #[error("video calls are turned off by the administrator's policy")]
    Video,
    /// Inviting more people is off.
    #[error("inviting more people is turned off by the administrator's policy")]
    InviteMore,
    /// Relay-only media, but the server offers no TURN relay.
    #[error("the administrator's policy allows media only through a relay, and the server offers none")]
    NoRelay,
    /// Ringtone files are off.
    #[error("ringtone files are turned off by the administrator's policy")]
    CustomRingtone,
}
