//! "Connected" means packets are arriving. ICE's own states say nothing for seconds after a path
//! goes dead (webrtc-rs reports "disconnected" only once consent checks have failed for a while,
//! and "failed" after tens of seconds), so a call through a cut would show "connected" and stay
//! silent. The watchdog looks at how many packets a person's link has received, once a second,
//! and says "reconnecting" as soon as none came for [`STALL_AFTER`], "lost" after [`LOST_AFTER`]
//! (the person is told the call may not come back; recovery goes on), and "connected" again with
//! the first packet after. After [`GIVE_UP_AFTER`] without a packet the call is given up (the
//! engine decides; a phone call silent for that long is one the person has given up on too).
//! Pure: the caller gives it the count and the time.
//!
//! Arrivals are seen only when the count is read, so the stall is measured from the look that
//! last saw the count grow; 1.5 s between looks a second apart means two looks in a row without
//! a packet, whatever the looks' jitter (2 s exactly flipped between the second and the third
//! look). A cut is said 2–3 s after it begins.

use std::time::{Duration, Instant};

/// How long without a single packet (audio flows all the time, silence included, so this is
/// many missed packets, not a pause in speech) before a link counts as reconnecting.
pub const STALL_AFTER: Duration = Duration::from_millis(1500);
/// How long without a packet before the person is told media is lost (said 10–11 s into a cut).
pub const LOST_AFTER: Duration = Duration::from_secs(10);
/// How long without a packet before the link is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(20);

/// Whether media arrives on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum MediaLinkState {
    /// Packets are arriving.
    Connected,
    /// None came for a while: the path is being recovered (the call goes on).
    Reconnecting,
    /// None came for [`LOST_AFTER`]: still being recovered, but the call may not come back.
    Lost,
}

/// Watches one link's received-packet count.
#[derive(Debug)]
pub struct MediaWatchdog {
    count: u64,
    last_arrival: Instant,
    state: MediaLinkState,
    /// The last arrival before the silence already given up, so it is said once.
    given_up_at: Option<Instant>,
}

impl MediaWatchdog {
    /// A watchdog for a link that connected at `now`.
    pub fn new(now: Instant) -> MediaWatchdog {
        MediaWatchdog { count: 0, last_arrival: now, state: MediaLinkState::Connected, given_up_at: None }
    }

    /// The link had received `count` packets in all at `now`; the new state, when it changed.
    pub fn observe(&mut self, count: u64, now: Instant) -> Option<MediaLinkState> {
        // Any change: a count can also go back (a stream gone after a renegotiation), and the
        // packets after that count up from there.
        if count != self.count {
            self.count = count;
            self.last_arrival = now;
        }
        let silent = self.silent_for(now);
        let state = if silent >= LOST_AFTER {
            MediaLinkState::Lost
        } else if silent >= STALL_AFTER {
            MediaLinkState::Reconnecting
        } else {
            MediaLinkState::Connected
        };
        (state != self.state).then(|| {
            self.state = state;
            state
        })
    }

    /// The state now.
    pub fn state(&self) -> MediaLinkState {
        self.state
    }

    /// How long no packet has come, as of the last look at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_arrival)
    }

    /// Whether the link has been silent so long it is given up ([`GIVE_UP_AFTER`]).
    pub fn given_up(&self, now: Instant) -> bool {
        self.silent_for(now) >= GIVE_UP_AFTER
    }

    /// True once per silence, at the first look that finds it [`given_up`](Self::given_up).
    pub fn give_up_now(&mut self, now: Instant) -> bool {
        let due = self.given_up(now) && self.given_up_at != Some(self.last_arrival);
        if due {
            self.given_up_at = Some(self.last_arrival);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_looks_without_packets_make_a_link_reconnecting_until_the_next_packet() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut watchdog = MediaWatchdog::new(start);
        assert_eq!(watchdog.observe(50, at(1000)), None, "packets come: connected, as it was");
        assert_eq!(watchdog.observe(100, at(2000)), None);
        assert_eq!(watchdog.observe(100, at(3000)), None, "one look without is not yet a stall");
        assert_eq!(watchdog.observe(100, at(3990)), Some(MediaLinkState::Reconnecting), "the second, a little early, is");
        assert_eq!(watchdog.observe(100, at(9000)), None, "said once");
        assert_eq!(watchdog.state(), MediaLinkState::Reconnecting);
        assert_eq!(watchdog.observe(101, at(10_000)), Some(MediaLinkState::Connected), "one packet is enough");
        assert_eq!(watchdog.observe(150, at(11_000)), None);
    }

    #[test]
    fn a_long_silence_is_lost_then_given_up_and_one_packet_still_brings_it_back() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut watchdog = MediaWatchdog::new(start);
        assert_eq!(watchdog.observe(50, at(1)), None);
        assert_eq!(watchdog.observe(50, at(3)), Some(MediaLinkState::Reconnecting));
        assert_eq!(watchdog.observe(50, at(10)), None, "9 s: still reconnecting");
        assert!(!watchdog.given_up(at(10)));
        assert_eq!(watchdog.observe(50, at(11)), Some(MediaLinkState::Lost), "10 s without a packet");
        assert_eq!(watchdog.observe(50, at(20)), None);
        assert!(!watchdog.given_up(at(20)));
        assert!(watchdog.given_up(at(21)), "20 s without a packet");
        assert!(watchdog.give_up_now(at(21)) && !watchdog.give_up_now(at(22)), "said once per silence");
        assert_eq!(watchdog.observe(51, at(21)), Some(MediaLinkState::Connected), "a lost link that comes back is connected");
        assert!(!watchdog.given_up(at(21)));
        assert_eq!(watchdog.observe(51, at(45)), Some(MediaLinkState::Lost));
        assert!(watchdog.give_up_now(at(45)), "a new silence is given up again");
    }

    #[test]
    fn a_link_that_never_receives_stalls_from_when_it_connected() {
        let start = Instant::now();
        let mut watchdog = MediaWatchdog::new(start);
        assert_eq!(watchdog.observe(0, start + Duration::from_millis(1499)), None);
        assert_eq!(watchdog.observe(0, start + STALL_AFTER), Some(MediaLinkState::Reconnecting));
    }

    #[test]
    fn a_count_that_goes_back_is_a_new_base() {
        // Stats of a stream that went away (a renegotiation) can sum to less than before; the
        // packets after count up from there.
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut watchdog = MediaWatchdog::new(start);
        assert_eq!(watchdog.observe(500, at(1)), None);
        assert_eq!(watchdog.observe(20, at(2)), None);
        assert_eq!(watchdog.observe(70, at(3)), None, "packets after the drop are arrivals");
        assert_eq!(watchdog.observe(70, at(5)), Some(MediaLinkState::Reconnecting));
    }
}
