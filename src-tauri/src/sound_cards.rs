//! Opening the chosen microphone and speaker for the session and for the settings' meter, with
//! silence or nowhere in their place when a device is missing (calls still work, one way).

use hark_engine::audio::{AudioSink, AudioSource, NullSink, SilenceSource};
use hark_engine::sound_card::{MicrophoneSource, SpeakerSink};

/// Opens the chosen sound cards (either may be `None`: left as it is) on a blocking thread:
/// opening one takes tens of milliseconds, which must not hold up a runtime worker.
pub async fn open_sound_cards(microphone: Option<Option<String>>, speaker: Option<Option<String>>) -> (Option<Box<dyn AudioSource>>, Option<Box<dyn AudioSink>>) {
    let opened = tokio::task::spawn_blocking(move || {
        (microphone.map(|id| open_microphone(id.as_deref())), speaker.map(|id| open_speaker(id.as_deref())))
    })
    .await;
    opened.unwrap_or_else(|error| {
        tracing::error!(%error, "opening the sound cards failed");
        (None, None)
    })
}

/// The microphone, or silence (logged) when there is none: calls still work, one way.
pub fn open_microphone(id: Option<&str>) -> Box<dyn AudioSource> {
    match MicrophoneSource::open(id) {
        Ok(source) => Box::new(source),
        Err(error) => {
            tracing::warn!(%error, "no microphone; sending silence");
            Box::new(SilenceSource)
        }
    }
}

/// The speaker, or nowhere (logged) when there is none.
pub fn open_speaker(id: Option<&str>) -> Box<dyn AudioSink> {
    match SpeakerSink::open(id) {
        Ok(sink) => Box::new(sink),
        Err(error) => {
            tracing::warn!(%error, "no speaker; received audio is dropped");
            Box::new(NullSink)
        }
    }
}
