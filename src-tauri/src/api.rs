//! The types that cross the Tauri boundary, and nothing else.
//!
//! Every type here derives `ts_rs::TS`; `cargo test -p hark-desktop bindings` writes them (and the
//! engine and protocol types they use) to `ui/src/lib/bindings/`, and fails when the committed
//! files are out of date, so the UI's types are never written by hand. Commands return
//! `Result<T, ApiError>`: the UI switches on `code`, never on `message`.

use hark_engine::core::CallEvent;
use hark_engine::call_log::Mutes;
use hark_engine::engine::EngineError;
use hark_engine::ringtone::{RingtoneChoice, RingtoneErrorCode};
use hark_engine::video_send::VideoResolution;
use hark_protocol::{CallId, ErrorCode, Media, UserId};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// The app's own error codes (the server's are [`ErrorCode`], a ringtone's [`RingtoneErrorCode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum AppErrorCode {
    /// A command that needs an account came before signing in.
    NotSignedIn,
    /// Not now: the call is not in a state for it.
    WrongState,
    /// A value the command cannot use.
    BadArgument,
    /// The server did not answer in time.
    TimedOut,
    /// No server answers there.
    Unreachable,
    /// Plain http to another machine (a password would cross the network in the clear).
    InsecureServer,
    /// The engine has stopped.
    EngineStopped,
    /// The settings could not be written.
    SettingsIo,
    /// No such sound card.
    NoDevice,
    /// The person closed a dialog.
    Cancelled,
    /// The administrator's policy does not allow it (a locked setting, another server, video).
    ForbiddenByPolicy,
    /// Something that should not happen did.
    Internal,
    /// What the UI says for a rejection that carries no code (Tauri's own: an unknown or
    /// forbidden command); the Rust side never sends it.
    Unknown,
}

/// A failed command's code: the server's, a ringtone's or the app's own. The UI switches on it
/// (a union of string literals in TypeScript), never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(untagged)]
pub enum ApiCode {
    /// The server refused.
    Server(ErrorCode),
    /// A ringtone could not be used.
    Ringtone(RingtoneErrorCode),
    /// The app's own.
    App(AppErrorCode),
}

impl From<ErrorCode> for ApiCode {
    fn from(code: ErrorCode) -> ApiCode {
        ApiCode::Server(code)
    }
}

impl From<RingtoneErrorCode> for ApiCode {
    fn from(code: RingtoneErrorCode) -> ApiCode {
        ApiCode::Ringtone(code)
    }
}

impl From<AppErrorCode> for ApiCode {
    fn from(code: AppErrorCode) -> ApiCode {
        ApiCode::App(code)
    }
}

impl std::fmt::Display for ApiCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The same words the UI gets.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(code)) => f.write_str(&code),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// A failed command, as the UI sees it.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct ApiError {
    /// A stable code.
    pub code: ApiCode,
    /// Words for a log or a tooltip.
    pub message: String,
}

impl ApiError {
    /// An error with `code`.
    pub fn new(code: impl Into<ApiCode>, message: impl Into<String>) -> ApiError {
        ApiError { code: code.into(), message: message.into() }
    }

    /// A command that needs an account was given before signing in.
    pub fn not_signed_in() -> ApiError {
        ApiError::new(AppErrorCode::NotSignedIn, "sign in first")
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        let message = error.to_string();
        let code: ApiCode = match &error {
            EngineError::Command(hark_engine::core::CommandError::WrongState { .. }) => AppErrorCode::WrongState.into(),
            EngineError::Command(hark_engine::core::CommandError::BadArgument(_)) => AppErrorCode::BadArgument.into(),
            EngineError::Command(hark_engine::core::CommandError::Forbidden(_)) => AppErrorCode::ForbiddenByPolicy.into(),
            EngineError::Server { code, .. } => (*code).into(),
            EngineError::Stopped => AppErrorCode::EngineStopped.into(),
            EngineError::TimedOut => AppErrorCode::TimedOut.into(),
        };
        ApiError { code, message }
    }
}

/// What the sign-in form sends.
#[derive(Debug, Clone, Deserialize, TS)]
pub struct SignInRequest {
    /// Server base URL; `None` for the server built into the app.
    pub server: Option<String>,
    /// User id.
    pub user: String,
    /// Password.
    pub password: String,
    /// Create the account (sign up) rather than sign in.
    pub register: bool,
    /// Display name to set (sign up, or a change).
    pub nickname: Option<String>,
    /// Avatar as a data URI (at most 16 KiB).
    pub avatar: Option<String>,
    /// The proxy to reach the server through (kept as the setting): blank for the
    /// environment's, `none`, or `http://[user:password@]host[:port]`. Absent: as saved.
    #[serde(default)]
    #[ts(optional)]
    pub proxy: Option<String>,
}

/// Who is signed in, where.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct Account {
    /// User id.
    pub user: UserId,
    /// Display name.
    pub nickname: String,
    /// Avatar (data URI or URL).
    pub avatar: Option<String>,
    /// Server base URL.
    pub server: String,
    /// Whether that is the server built into the app.
    pub embedded: bool,
}

/// What the UI asks for first.
#[derive(Debug, Clone, Serialize, TS)]
pub struct AppInfo {
    /// The app's version.
    pub version: String,
    /// The built-in server's URL when it runs (others can call this app through it).
    pub embedded_server: Option<String>,
    /// The signed-in account, if the app signed in by itself (a remembered session).
    pub account: Option<Account>,
    /// The user id last signed in with, to fill the form.
    pub last_user: Option<String>,
    /// The settings.
    pub settings: Settings,
    /// What the administrator's policy locks.
    pub policy: Policy,
}

/// What the administrator's policy file (`/etc/hark/policy.toml`) locks, as read at launch. With
/// no file, everything is allowed and nothing is locked. Parts of the file that could not be read
/// are in `problems`, and each lock they might have set is at its safest.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct Policy {
    /// The file it was read from; `None`: there is no policy.
    pub file: Option<String>,
    /// The administrator's words, shown beside each locked setting.
    pub reason: Option<String>,
    /// The server is locked (to `server`).
    pub server_locked: bool,
    /// The only server allowed while `server_locked`; `None` there: the built-in one.
    pub server: Option<String>,
    /// The server built into the app may run and be signed in to.
    pub builtin_server: bool,
    /// Video calls (placing them, answering with video, the camera).
    pub video: bool,
    /// Inviting more people into a running call.
    pub invite_more: bool,
    /// Media only through a TURN relay.
    pub relay_only: bool,
    /// Ringtones from the person's own files.
    pub custom_ringtones: bool,
    /// How incoming calls are shown until the person chooses (the choice itself while
    /// `incoming_locked`).
    pub default_incoming: Option<IncomingPresentation>,
    /// The incoming presentation is locked.
    pub incoming_locked: bool,
    /// What in the file could not be read, in words for the log and the screen.
    pub problems: Vec<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            file: None,
            reason: None,
            server_locked: false,
            server: None,
            builtin_server: true,
            video: true,
            invite_more: true,
            relay_only: false,
            custom_ringtones: true,
            default_incoming: None,
            incoming_locked: false,
            problems: Vec::new(),
        }
    }
}

/// How an incoming call is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS, Default)]
#[serde(rename_all = "snake_case")]
pub enum IncomingPresentation {
    /// A small always-on-top banner in the top-right corner.
    #[default]
    Banner,
    /// The main window takes the whole screen.
    FullScreen,
}

/// Light or dark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS, Default)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    /// Follow the desktop.
    #[default]
    System,
    /// Light.
    Light,
    /// Dark.
    Dark,
}

/// A ringtone as a setting: a sound bundled with Hark, by name, or a file of the user's.
///
/// Settings files written before this was typed hold `"bundled:NAME"` or `"custom:PATH"`; those
/// still read (and are written back in this form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RingtoneSetting {
    /// One of the bundled sounds.
    Bundled {
        /// Its name (the file stem).
        name: String,
    },
    /// A sound file: WAV, OGG Vorbis, MP3 or FLAC.
    Custom {
        /// Its path.
        path: String,
    },
}

impl<'de> Deserialize<'de> for RingtoneSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Tagged {
            Bundled { name: String },
            Custom { path: String },
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Tagged(Tagged),
            Legacy(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Tagged(Tagged::Bundled { name }) => Ok(RingtoneSetting::Bundled { name }),
            Written::Tagged(Tagged::Custom { path }) => Ok(RingtoneSetting::Custom { path }),
            Written::Legacy(text) => match (text.strip_prefix("bundled:"), text.strip_prefix("custom:")) {
                (Some(name), _) => Ok(RingtoneSetting::Bundled { name: name.to_owned() }),
                (_, Some(path)) => Ok(RingtoneSetting::Custom { path: path.to_owned() }),
                _ => Err(serde::de::Error::custom(format!("not a ringtone: {text}"))),
            },
        }
    }
}

impl RingtoneSetting {
    /// The engine's choice for it.
    pub fn choice(&self) -> RingtoneChoice {
        match self {
            RingtoneSetting::Bundled { name } => RingtoneChoice::Bundled(name.clone()),
            RingtoneSetting::Custom { path } => RingtoneChoice::Custom(path.into()),
        }
    }
}

/// The user's choices, kept in `$XDG_CONFIG_HOME/hark/settings.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(default)]
pub struct Settings {
    /// Server base URL; `None` for the built-in server.
    pub server: Option<String>,
    /// The proxy to reach a server on another machine through: blank for the environment's
    /// (`HTTPS_PROXY`…), `none`, or `http://[user:password@]host[:port]`. The built-in server is
    /// always reached directly.
    pub proxy: String,
    /// Banner or full screen for incoming calls.
    pub incoming: IncomingPresentation,
    /// The incoming ringtone.
    pub ringtone: RingtoneSetting,
    /// Ringtone volume, 0 to 100.
    pub ringtone_volume: u8,
    /// Mute mode: calls still come in, nothing rings.
    pub ringtone_muted: bool,
    /// Echo cancellation.
    pub echo_cancellation: bool,
    /// Noise suppression.
    pub noise_suppression: bool,
    /// Microphone device id; `None` for the default.
    pub microphone: Option<String>,
    /// Speaker device id; `None` for the default.
    pub speaker: Option<String>,
    /// `en` or `zh`.
    pub language: String,
    /// Light, dark or the desktop's.
    pub theme: Theme,
    /// The camera's device number (`/dev/videoN`); `None` for the default (the first listed).
    pub camera: Option<u32>,
    /// The size 1:1 video calls send at.
    pub video_resolution: VideoResolution,
    /// Each call starts with the camera off (turned on in the call).
    pub camera_off_at_start: bool,
    /// Each call starts with the microphone muted.
    pub microphone_muted_at_start: bool,
    /// Calls connect only once answered: a caller never learns this machine's addresses from a
    /// call it did not answer (answering then takes a moment longer). Off: calls connect while
    /// they ring, so audio starts the moment one answers.
    pub connect_after_answer: bool,
    /// Hark starts when the person logs in (an XDG autostart entry).
    pub start_at_login: bool,
    /// Started at login, Hark waits in the tray without opening its window.
    pub start_hidden: bool,
    /// Hark opens `tel:` links for this user (registered as their handler; the one before is
    /// given back when this is turned off).
    pub tel_links: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            server: None,
            proxy: String::new(),
            incoming: IncomingPresentation::Banner,
            ringtone: RingtoneSetting::Bundled { name: "classic".into() },
            ringtone_volume: 80,
            ringtone_muted: false,
            echo_cancellation: true,
            noise_suppression: true,
            microphone: None,
            speaker: None,
            language: "en".into(),
            theme: Theme::System,
            camera: None,
            video_resolution: VideoResolution::P360,
            camera_off_at_start: false,
            microphone_muted_at_start: false,
            connect_after_answer: false,
            start_at_login: false,
            start_hidden: false,
            tel_links: false,
        }
    }
}

/// A problem report a panic left in the log folder, offered once at the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct CrashReport {
    /// When Hark stopped (Unix ms).
    pub at_ms: i64,
    /// Its first lines: where it stopped, and the message.
    pub summary: String,
    /// The report's file.
    pub file: String,
}

/// Where the page reads video pictures: the frame socket on 127.0.0.1 and this launch's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct FrameSocketInfo {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The token each connection brings (`?token=`).
    pub token: String,
}

/// How a picture fits its box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum VideoFit {
    /// All of the picture shows, with bars where the shapes differ.
    Contain,
    /// The picture fills the box; what sticks out is cut.
    Cover,
}

/// Where the main window's video layer draws a tile's pictures: a box in the page's CSS pixels
/// (from the window's top left), drawn over the page.
#[derive(Debug, Clone, PartialEq, Deserialize, TS)]
pub struct VideoPlacement {
    /// The frame tile: a user id, or `_self`.
    pub tile: String,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// Device pixels per CSS pixel (`devicePixelRatio`).
    pub scale: f64,
    pub fit: VideoFit,
    /// Drawn as a mirror shows it (our own camera).
    pub mirror: bool,
    /// What the page has over this box (a name, a badge, a button, a smaller view): left alone.
    pub holes: Vec<VideoHole>,
}

/// A box of the page the video layer leaves alone, in CSS pixels.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, TS)]
pub struct VideoHole {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// News from the main window's video layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct VideoLayerNews {
    /// The frame tile.
    pub tile: String,
    /// Whether a picture of it is on screen now (the first was just drawn), or not (its video
    /// ended).
    pub showing: bool,
}

/// The ringing call, for the banner (which opens after the event went by).
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct IncomingCall {
    /// Call id.
    pub call_id: CallId,
    /// Who calls.
    pub caller: UserId,
    /// The caller's display name.
    pub caller_name: String,
    /// The caller's avatar.
    pub caller_avatar: Option<String>,
    /// Everyone invited (a group call when more than one).
    pub invitees: Vec<UserId>,
    /// Audio or video.
    pub media: Media,
}

/// A bundled ringtone the settings offer.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct RingtoneOption {
    /// The sound.
    pub source: RingtoneSetting,
    /// The name.
    pub name: String,
}

/// A call a `hark:` link asks for, offered to the person before it is placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct CallLink {
    /// Who to call (one person, or a group).
    pub to: Vec<UserId>,
    /// Audio, or video (`?video`).
    pub media: Media,
}

/// Why a `hark:` link was not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum LinkRefusal {
    /// Longer than any link Hark makes.
    TooLong,
    /// Not `hark:call/…`.
    UnknownAction,
    /// Something after `?` other than `video` or `audio`.
    UnknownOption,
    /// A name that is not a user id.
    BadUser,
    /// Nobody named.
    NoOne,
    /// More people than a call holds.
    TooManyPeople,
}

/// A `hark:` link the app was opened with, as the main window gets it (`take_link`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpenedLink {
    /// A call to offer.
    Call {
        /// The call.
        link: CallLink,
    },
    /// A link that was refused, and why.
    Refused {
        /// Why.
        reason: LinkRefusal,
    },
}

impl OpenedLink {
    /// What it is, for the log (the people stay out of it).
    pub fn kind(&self) -> &'static str {
        match self {
            OpenedLink::Call { .. } => "call",
            OpenedLink::Refused { .. } => "refused",
        }
    }
}

/// High-rate news for the call view and the settings' meter, on a Tauri channel.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveUpdate {
    /// Speaking level 0–100 of a person in the call (our own user id for us).
    Level {
        /// Who.
        user: UserId,
        /// Level.
        level: u8,
    },
    /// Network quality of the link to a person.
    Quality {
        /// Who.
        user: UserId,
        /// Percent of packets lost over the last two seconds.
        loss_percent: f64,
        /// Round-trip time in ms.
        rtt_ms: Option<f64>,
        /// Inter-arrival jitter of their audio in ms.
        jitter_ms: Option<f64>,
        /// Through a TURN relay.
        relayed: bool,
        /// Whether to show the weak-network badge.
        weak: bool,
        /// The call-quality score: ITU-T G.107's R (0–100, 93.2 at best).
        r_factor: f64,
        /// R as a mean opinion score, 1 to 4.5.
        mos: f64,
    },
    /// The settings' microphone meter, 0–100.
    MicrophoneLevel {
        /// Level.
        level: u8,
    },
}

/// The engine's event as the UI receives it on the `engine` event (levels and quality go to the
/// live channel instead).
pub type UiEvent = hark_engine::engine::EngineEvent;

/// Re-exported for the bindings: the call events inside [`UiEvent`].
pub type UiCallEvent = CallEvent;

/// The call going on now, for a window that opens in the middle of it: the call events so far,
/// in order (empty when there is no call), and the mutes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, TS)]
pub struct CallReplay {
    /// Who we are (signed out: none), since a window opening in a call knows nothing yet.
    pub me: Option<UserId>,
    /// What the `engine` event carried for this call, oldest first.
    pub events: Vec<CallEvent>,
    /// The mutes now.
    pub mutes: Mutes,
    /// Whether our camera is on (a video call sends it; off, the others see our avatar).
    pub camera_on: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reaches_the_ui_as_one_plain_string() {
        let json = |code: ApiCode| serde_json::to_string(&ApiError::new(code, "words")).unwrap();
        assert_eq!(json(ErrorCode::Unauthorized.into()), r#"{"code":"unauthorized","message":"words"}"#);
        assert_eq!(json(RingtoneErrorCode::RingtoneUndecodable.into()), r#"{"code":"ringtone_undecodable","message":"words"}"#);
        assert_eq!(json(AppErrorCode::NotSignedIn.into()), r#"{"code":"not_signed_in","message":"words"}"#);
        assert_eq!(ApiCode::from(AppErrorCode::InsecureServer).to_string(), "insecure_server");
    }
}
