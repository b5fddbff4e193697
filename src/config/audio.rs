//! `[audio]`: where live calls are played on the box.

use serde::Deserialize;

use super::Errors;

/// `[audio]`: live playout on the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// Which output device plays calls.
    pub output: AudioOutput,
    /// Which input device is the operator's microphone (talk-back).
    pub input: AudioInput,
    /// Whether new calls start audible; each call can be toggled through the API.
    pub listen: bool,
    /// Device period (callback size) asked of the host, in ms; 0 leaves it to the device.
    /// Shorter periods mean lower latency and more wake-ups.
    pub period_ms: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            output: AudioOutput::Default,
            input: AudioInput::None,
            listen: true,
            period_ms: 10,
        }
    }
}

/// Where live call audio is played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutput {
    /// The host's default output device.
    Default,
    /// No playout at all (a recorder-only box, or CI without a sound card).
    None,
    /// The output device with this id (`alsa:hw:1,0`) or name, as listed by `earshot devices`.
    Device(String),
}

/// The operator's microphone. `none` by default: the box opens no microphone unless told to,
/// and a missing device never touches calls (talk-back is refused with the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioInput {
    /// The host's default input device.
    Default,
    /// No microphone: talk-back is refused.
    None,
    /// The input device with this id or name, as listed by `earshot devices`.
    Device(String),
}

/// `[audio]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAudio {
    output: Option<String>,
    input: Option<String>,
    listen: Option<bool>,
    period_ms: Option<u32>,
}

pub(super) fn validate_audio(e: &mut Errors, raw: RawAudio) -> AudioConfig {
    let d = AudioConfig::default();
    AudioConfig {
        output: e.parse("audio.output", raw.output, d.output, |s| match s {
            "default" => Ok(AudioOutput::Default),
            "none" => Ok(AudioOutput::None),
            "" => Err("must not be empty (use \"default\", \"none\" or a device name)".to_owned()),
            name => Ok(AudioOutput::Device(name.to_owned())),
        }),
        input: e.parse("audio.input", raw.input, d.input, |s| match s {
            "default" => Ok(AudioInput::Default),
            "none" => Ok(AudioInput::None),
            "" => Err("must not be empty (use \"default\", \"none\" or a device name)".to_owned()),
            name => Ok(AudioInput::Device(name.to_owned())),
        }),
        listen: raw.listen.unwrap_or(d.listen),
        period_ms: e.ranged("audio.period_ms", raw.period_ms, d.period_ms, 0..=100),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

    #[test]
    fn audio_period_is_bounded_and_zero_means_the_device_default() {
        let err = Config::from_toml_str("[audio]\nperiod_ms = 250\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("audio.period_ms: 250 is out of range (0..=100)"),
            "{err}"
        );
        let config = Config::from_toml_str("[audio]\nperiod_ms = 0\n").unwrap();
        assert_eq!(config.audio.period_ms, 0);
        assert_eq!(Config::from_toml_str("").unwrap().audio.period_ms, 10);
    }

    #[test]
    fn output_is_default_none_or_a_device_name() {
        let config =
            Config::from_toml_str("[audio]\noutput = \"USB Speaker\"\nlisten = false\n").unwrap();
        assert_eq!(
            config.audio.output,
            AudioOutput::Device("USB Speaker".into())
        );
        assert!(!config.audio.listen);
        let output = |name: &str| {
            Config::from_toml_str(&format!("[audio]\noutput = {name:?}\n"))
                .unwrap()
                .audio
                .output
        };
        assert_eq!(output("default"), AudioOutput::Default);
        assert_eq!(output("none"), AudioOutput::None);
        assert_eq!(
            paths(&invalid("[audio]\noutput = \"\"\n")),
            ["audio.output"]
        );
    }

    #[test]
    fn input_is_none_unless_configured() {
        let input = |toml: &str| Config::from_toml_str(toml).unwrap().audio.input;
        assert_eq!(input(""), AudioInput::None);
        assert_eq!(input("[audio]\ninput = \"default\"\n"), AudioInput::Default);
        assert_eq!(
            input("[audio]\ninput = \"mic_feed.monitor\"\n"),
            AudioInput::Device("mic_feed.monitor".into())
        );
        assert_eq!(paths(&invalid("[audio]\ninput = \"\"\n")), ["audio.input"]);
    }
}
