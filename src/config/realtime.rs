//! `[agent]`'s OpenAI Realtime keys, used with `protocol = "openai-realtime"`: earshot is the
//! client of OpenAI's Realtime API and the model is the call's agent
//! ([`crate::agent::openai`]). The API key, the model and voice, the instructions (written in
//! the file or read from one), server VAD and the caller's transcription model.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::Errors;
use super::secret::{Secret, token};
use crate::agent::openai::RealtimeConfig;

/// Longest instructions taken, in bytes of UTF-8.
pub const MAX_INSTRUCTIONS: usize = 64 * 1024;

/// The OpenAI Realtime agent of `[agent]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiRealtime {
    /// Sent as `Authorization: Bearer` when the WebSocket opens; `Debug` prints
    /// `<redacted>`.
    pub api_key: Secret,
    /// The Realtime model, in the URL's `?model=` and in `session.update`.
    pub model: String,
    /// The model's voice.
    pub voice: String,
    /// The system instructions, as written or read from `instructions_file` when loading;
    /// empty: the model's default.
    pub instructions: String,
    /// Where `instructions` were read from, if from a file (re-read on reload).
    pub instructions_file: Option<PathBuf>,
    /// Server VAD's activation threshold: higher needs louder speech (noisy lines).
    pub vad_threshold: VadThreshold,
    /// Audio kept before detected speech, in ms.
    pub prefix_padding_ms: u32,
    /// Silence that ends the caller's turn, in ms: shorter answers sooner but may cut in.
    pub silence_duration_ms: u32,
    /// The model transcribing the caller for the call's record.
    pub transcription_model: String,
}

impl OpenAiRealtime {
    /// What a call's session tells the model. The transfer function is not offered here: the
    /// agent bridge offers it when `[agent].transfer_to` is set.
    pub fn session(&self) -> RealtimeConfig {
        RealtimeConfig {
            model: self.model.clone(),
            voice: self.voice.clone(),
            instructions: self.instructions.clone(),
            vad_threshold: self.vad_threshold.get(),
            prefix_padding_ms: self.prefix_padding_ms,
            silence_duration_ms: self.silence_duration_ms,
            transcription_model: self.transcription_model.clone(),
            transfer_function: false,
        }
    }
}

/// Server VAD's threshold, checked to lie in 0.0..=1.0 (so never NaN, and `Eq` holds).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct VadThreshold(f32);

impl Eq for VadThreshold {}

impl VadThreshold {
    pub fn get(self) -> f32 {
        self.0
    }
}

impl fmt::Display for VadThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The OpenAI keys of `[agent]` as written.
#[derive(Debug, Default)]
pub(super) struct RawRealtime {
    pub(super) api_key: Option<String>,
    pub(super) model: Option<String>,
    pub(super) voice: Option<String>,
    pub(super) instructions: Option<String>,
    pub(super) instructions_file: Option<PathBuf>,
    pub(super) vad_threshold: Option<f64>,
    pub(super) prefix_padding_ms: Option<u32>,
    pub(super) silence_duration_ms: Option<u32>,
    pub(super) transcription_model: Option<String>,
}

impl RawRealtime {
    /// The keys written, by name, in the file's order of documentation.
    pub(super) fn written(&self) -> Vec<&'static str> {
        [
            ("api_key", self.api_key.is_some()),
            ("model", self.model.is_some()),
            ("voice", self.voice.is_some()),
            ("instructions", self.instructions.is_some()),
            ("instructions_file", self.instructions_file.is_some()),
            ("vad_threshold", self.vad_threshold.is_some()),
            ("prefix_padding_ms", self.prefix_padding_ms.is_some()),
            ("silence_duration_ms", self.silence_duration_ms.is_some()),
            ("transcription_model", self.transcription_model.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, written)| written.then_some(key))
        .collect()
    }

    /// The model the default URL names: the one written if it is a valid name, else the
    /// default; `None` when the one written is invalid (its own error says why).
    pub(super) fn url_model(&self) -> Option<String> {
        match &self.model {
            Some(model) => model_name(model).ok(),
            None => Some(RealtimeConfig::default().model),
        }
    }
}

/// The keys checked; `None` without an API key. Every invalid key is recorded in `e` (the
/// configuration is rejected then, whatever this returns).
pub(super) fn validate_realtime(e: &mut Errors, raw: RawRealtime) -> Option<OpenAiRealtime> {
    let defaults = RealtimeConfig::default();
    let api_key = match raw.api_key {
        Some(key) => e.parse_opt("agent.api_key", Some(key), |s| token(s, 20)),
        None => {
            e.push(
                "agent.api_key",
                "required with protocol = \"openai-realtime\"",
            );
            None
        }
    };
    let model = e.parse("agent.model", raw.model, defaults.model, model_name);
    let voice = e.parse("agent.voice", raw.voice, defaults.voice, model_name);
    let instructions = match (raw.instructions, &raw.instructions_file) {
        (Some(_), Some(_)) => {
            e.push(
                "agent.instructions_file",
                "set instructions or instructions_file, not both",
            );
            String::new()
        }
        (Some(text), None) if text.len() > MAX_INSTRUCTIONS => {
            e.push(
                "agent.instructions",
                format!("{} bytes, more than {MAX_INSTRUCTIONS}", text.len()),
            );
            String::new()
        }
        (Some(text), None) => text,
        (None, Some(path)) => read_instructions(path).unwrap_or_else(|reason| {
            e.push("agent.instructions_file", reason);
            String::new()
        }),
        (None, None) => defaults.instructions,
    };
    let vad_threshold = e.ranged(
        "agent.vad_threshold",
        raw.vad_threshold,
        f64::from(defaults.vad_threshold),
        0.0..=1.0,
    );
    let prefix_padding_ms = e.ranged(
        "agent.prefix_padding_ms",
        raw.prefix_padding_ms,
        defaults.prefix_padding_ms,
        0..=5000,
    );
    let silence_duration_ms = e.ranged(
        "agent.silence_duration_ms",
        raw.silence_duration_ms,
        defaults.silence_duration_ms,
        100..=10_000,
    );
    let transcription_model = e.parse(
        "agent.transcription_model",
        raw.transcription_model,
        defaults.transcription_model,
        model_name,
    );
    Some(OpenAiRealtime {
        api_key: api_key?,
        model,
        voice,
        instructions,
        instructions_file: raw.instructions_file,
        // In range, so the narrowing keeps it in 0.0..=1.0.
        vad_threshold: VadThreshold(vad_threshold as f32),
        prefix_padding_ms,
        silence_duration_ms,
        transcription_model,
    })
}

/// A model or voice name: it goes into the URL's query and into JSON, so letters, digits,
/// `-`, `.` and `_`, at most 64 of them.
fn model_name(s: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else if s.len() > 64 || !s.chars().all(valid) {
        Err(format!(
            "{s:?} is not a model or voice name (at most 64 letters, digits, '-', '.', '_')"
        ))
    } else {
        Ok(s.to_owned())
    }
}

/// The instructions in `path`: a readable file of UTF-8 text, at most [`MAX_INSTRUCTIONS`]
/// bytes (only one more is read, so a wrong path never reads a disk image).
fn read_instructions(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|file| {
            file.take(MAX_INSTRUCTIONS as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| format!("{shown}: cannot read ({e})"))?;
    if bytes.len() > MAX_INSTRUCTIONS {
        return Err(format!("{shown}: more than {MAX_INSTRUCTIONS} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{shown}: not UTF-8 text (invalid byte at {})",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::test_support::{TempDir, invalid, paths, toml_path};
    use crate::config::{AgentConfig, AgentProtocol, Config};

    const KEY: &str = "sk-test-0123456789abcdefghij";

    fn agent(toml: &str) -> AgentConfig {
        Config::from_toml_str(toml).unwrap().agent.unwrap()
    }

    fn openai(extra: &str) -> String {
        format!("[agent]\nprotocol = \"openai-realtime\"\napi_key = \"{KEY}\"\n{extra}")
    }

    #[test]
    fn an_api_key_alone_takes_the_defaults_and_the_ga_url() {
        let a = agent(&openai(""));
        assert_eq!(a.protocol, AgentProtocol::OpenAiRealtime);
        assert_eq!(
            a.url.as_str(),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert!(a.url.is_tls());
        assert_eq!((a.url.host(), a.url.port()), ("api.openai.com", 443));
        let o = a.openai.unwrap();
        assert_eq!(o.api_key.expose(), KEY);
        assert_eq!(o.session(), RealtimeConfig::default());
        assert_eq!(o.instructions_file, None);
        // The other [agent] keys keep their defaults.
        assert_eq!((a.connect_timeout_ms, a.max_queue_secs), (3000, 60));
    }

    #[test]
    fn every_key_written() {
        let a = agent(&openai(
            "model = \"gpt-realtime-2025-08-28\"\nvoice = \"cedar\"\n\
             instructions = \"You answer for a bakery.\\nBe brief.\"\nvad_threshold = 0.7\n\
             prefix_padding_ms = 0\nsilence_duration_ms = 10000\n\
             transcription_model = \"gpt-4o-mini-transcribe\"\n",
        ));
        assert_eq!(
            a.url.as_str(),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime-2025-08-28",
            "the default URL names the model"
        );
        let o = a.openai.unwrap();
        assert_eq!(
            o.session(),
            RealtimeConfig {
                model: "gpt-realtime-2025-08-28".into(),
                voice: "cedar".into(),
                instructions: "You answer for a bakery.\nBe brief.".into(),
                vad_threshold: 0.7,
                prefix_padding_ms: 0,
                silence_duration_ms: 10_000,
                transcription_model: "gpt-4o-mini-transcribe".into(),
                transfer_function: false,
            }
        );
        assert_eq!(o.vad_threshold.to_string(), "0.7");
        // A URL written is kept as written (a proxy, another region).
        let a = agent(&openai(
            "url = \"wss://realtime-proxy.internal/v1/realtime\"\n",
        ));
        assert_eq!(a.url.as_str(), "wss://realtime-proxy.internal/v1/realtime");
        // Whole numbers are thresholds too.
        let a = agent(&openai("vad_threshold = 1\n"));
        assert_eq!(a.openai.unwrap().vad_threshold.get(), 1.0);
    }

    #[test]
    fn the_api_key_is_required_and_never_printed() {
        let errors = invalid("[agent]\nprotocol = \"openai-realtime\"\n");
        assert_eq!(paths(&errors), ["agent.api_key"]);
        assert_eq!(
            errors[0].reason,
            "required with protocol = \"openai-realtime\""
        );
        let errors = invalid("[agent]\nprotocol = \"openai-realtime\"\napi_key = \"sk-1\"\n");
        assert_eq!(errors[0].reason, "must be at least 20 characters");
        let errors = invalid(&format!(
            "[agent]\nprotocol = \"openai-realtime\"\napi_key = \"{KEY} x\"\n"
        ));
        assert_eq!(errors[0].reason, "must not contain whitespace");
        let config = Config::from_toml_str(&openai("")).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(KEY), "{debug}");
        assert!(!debug.contains("0123456789abcdefghij"));
        assert!(debug.contains("api_key: <redacted>"));
    }

    #[test]
    fn every_bad_key_is_reported_with_its_path_and_reason() {
        let errors = invalid(&format!(
            "[agent]\nprotocol = \"openai-realtime\"\napi_key = \"{KEY}\"\n\
             model = \"gpt realtime\"\nvoice = \"\"\ninstructions = \"{}\"\n\
             vad_threshold = 1.5\nprefix_padding_ms = 5001\nsilence_duration_ms = 99\n\
             transcription_model = \"../whisper\"\n",
            "x".repeat(MAX_INSTRUCTIONS + 1)
        ));
        assert_eq!(
            paths(&errors),
            [
                "agent.model",
                "agent.voice",
                "agent.instructions",
                "agent.vad_threshold",
                "agent.prefix_padding_ms",
                "agent.silence_duration_ms",
                "agent.transcription_model",
            ]
        );
        let reasons: Vec<&str> = errors.iter().map(|e| e.reason.as_str()).collect();
        assert!(
            reasons[0].starts_with("\"gpt realtime\" is not a model or voice name"),
            "{}",
            reasons[0]
        );
        assert_eq!(reasons[1], "must not be empty");
        assert_eq!(reasons[2], "65537 bytes, more than 65536");
        assert_eq!(reasons[3], "1.5 is out of range (0..=1)");
        assert_eq!(reasons[4], "5001 is out of range (0..=5000)");
        assert_eq!(reasons[5], "99 is out of range (100..=10000)");
        assert!(reasons[6].contains("not a model or voice name"));
        // NaN is no threshold either, and a bad model is not blamed on the default URL.
        let errors = invalid(&openai("vad_threshold = nan\nmodel = \"a/b\"\n"));
        assert_eq!(paths(&errors), ["agent.model", "agent.vad_threshold"]);
    }

    #[test]
    fn instructions_come_from_the_file_or_the_key_not_both() {
        let dir = TempDir::new("agent-instructions");
        let good = dir.file("prompt.txt", "Réponds en français.\n".as_bytes());
        let a = agent(&openai(&format!(
            "instructions_file = {}\n",
            toml_path(&good)
        )));
        let o = a.openai.unwrap();
        assert_eq!(o.instructions, "Réponds en français.\n");
        assert_eq!(o.instructions_file, Some(good.clone()));
        assert_eq!(o.session().instructions, "Réponds en français.\n");

        let errors = invalid(&openai(&format!(
            "instructions = \"Hi\"\ninstructions_file = {}\n",
            toml_path(&good)
        )));
        assert_eq!(paths(&errors), ["agent.instructions_file"]);
        assert_eq!(
            errors[0].reason,
            "set instructions or instructions_file, not both"
        );

        let latin1 = dir.file("latin1.txt", b"R\xe9ponds");
        let big = dir.file("big.txt", &vec![b'a'; MAX_INSTRUCTIONS + 1]);
        let exact = dir.file("exact.txt", &vec![b'a'; MAX_INSTRUCTIONS]);
        for (file, expected) in [
            (dir.file("missing-then-removed.txt", b""), ""),
            (latin1, "not UTF-8 text (invalid byte at 1)"),
            (big, "more than 65536 bytes"),
        ] {
            let toml = openai(&format!("instructions_file = {}\n", toml_path(&file)));
            if expected.is_empty() {
                // An empty file is empty instructions: the model's own.
                assert_eq!(agent(&toml).openai.unwrap().instructions, "");
                continue;
            }
            let errors = invalid(&toml);
            assert_eq!(paths(&errors), ["agent.instructions_file"]);
            assert!(errors[0].reason.ends_with(expected), "{}", errors[0].reason);
        }
        let exact = agent(&openai(&format!(
            "instructions_file = {}\n",
            toml_path(&exact)
        )));
        assert_eq!(exact.openai.unwrap().instructions.len(), MAX_INSTRUCTIONS);
        let errors = invalid(&openai(
            "instructions_file = \"/nonexistent/earshot-prompt.txt\"\n",
        ));
        assert!(
            errors[0].reason.contains("cannot read"),
            "{}",
            errors[0].reason
        );
    }

    #[test]
    fn openai_keys_need_the_openai_protocol() {
        let errors = invalid(&format!(
            "[agent]\nurl = \"ws://agent\"\napi_key = \"{KEY}\"\nvoice = \"marin\"\n\
             silence_duration_ms = 400\n"
        ));
        assert_eq!(
            paths(&errors),
            ["agent.api_key", "agent.voice", "agent.silence_duration_ms"]
        );
        assert_eq!(
            errors[0].reason,
            "only used with protocol = \"openai-realtime\""
        );
        // Twilio agents still need their URL; a misspelt protocol is reported once.
        let errors = invalid(&format!(
            "[agent]\nprotocol = \"twillio\"\napi_key = \"{KEY}\"\n"
        ));
        assert_eq!(paths(&errors), ["agent.url", "agent.protocol"]);
    }

    #[test]
    fn the_shipped_openai_block_uncommented_is_valid_and_shows_the_defaults() {
        let block: String = include_str!("../../config.toml")
            .lines()
            .skip_while(|line| !line.starts_with("# Or OpenAI's Realtime model"))
            .skip_while(|line| *line != "# [agent]")
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| !line.starts_with("# "))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(block.lines().count(), 10, "{block}");
        let a = agent(&block);
        assert_eq!(a.protocol, AgentProtocol::OpenAiRealtime);
        assert_eq!(
            a.url.as_str(),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        let session = a.openai.unwrap().session();
        assert_eq!(
            session,
            RealtimeConfig {
                instructions: session.instructions.clone(),
                ..RealtimeConfig::default()
            }
        );
        assert!(!session.instructions.is_empty());
    }
}
