//! `[calls]`: admission limits, ringing, and the greeting played to callers (with the WAV file
//! check, which `[agent]` reuses for its fallback WAV).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Errors;
use super::destination::{DialPattern, MAX_PATTERNS};

/// `[calls]`: admission and per-call limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallsConfig {
    /// Calls beyond this are refused (486 Busy Here / stream closed) to protect the box.
    pub max_concurrent: usize,
    /// Calls are hung up after this many seconds, so a stuck call ends; 0 means no limit.
    pub max_duration_secs: u64,
    /// WAV file played to each caller on answer; checked to exist when loading.
    pub greeting: Option<PathBuf>,
    /// Milliseconds of ringing (180) before the answer; some carriers expect a ring before
    /// the 200 OK, and callers may cancel meanwhile. 0 answers at once.
    pub ring_ms: u64,
    /// Seconds a call earshot places (an outbound call, a bridged transfer's far leg) may ring
    /// before it is cancelled: long enough for a person to pick up, short enough that a call
    /// nobody answers does not hold a port pair and a call slot.
    pub ring_timeout_secs: u64,
    /// Redirections (3xx) a call earshot places follows before it fails; 0 follows none.
    /// Bounded so a redirecting peer cannot bounce a call around the network.
    pub max_redirects: usize,
    /// The `[[sip.trunk]]` a bridged transfer dials a number through when the call did not
    /// come in on a trunk; `None` uses the first trunk.
    pub transfer_trunk: Option<String>,
    /// Targets outbound calls and transfers may go to (glob patterns,
    /// `[calls].outbound_allow`); empty, the default, places no outbound call at all
    /// (toll-fraud protection).
    pub outbound_allow: Vec<DialPattern>,
    /// `[[calls.dtmf_rule]]`: what a caller's key press does (see [`super::dtmf_rule`]).
    pub dtmf_rules: Vec<super::DtmfRule>,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_concurrent: 100,
            max_duration_secs: 14400,
            greeting: None,
            ring_ms: 0,
            ring_timeout_secs: 60,
            max_redirects: 3,
            transfer_trunk: None,
            outbound_allow: Vec::new(),
            dtmf_rules: Vec::new(),
        }
    }
}

/// The longest `max_duration_secs` taken: 36 hours. A call's recording (stereo 8 kHz 16-bit,
/// 32 000 bytes a second) must stay under the WAV format's 4 GiB limit, which it reaches after
/// 37 h 16 min ([`crate::recording::writer::MAX_FRAMES`]); the margin covers the call's
/// hang-up. With no limit (0) a longer call's recording stops at the size limit.
pub(super) const MAX_DURATION_SECS: u64 = 36 * 3600;

/// `[calls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCalls {
    max_concurrent: Option<usize>,
    max_duration_secs: Option<u64>,
    greeting: Option<PathBuf>,
    ring_ms: Option<u64>,
    ring_timeout_secs: Option<u64>,
    max_redirects: Option<usize>,
    transfer_trunk: Option<String>,
    outbound_allow: Option<Vec<String>>,
    dtmf_rule: Vec<super::dtmf_rule::RawDtmfRule>,
}

pub(super) fn validate_calls(
    e: &mut Errors,
    raw: RawCalls,
    trunks: &[super::sip::Trunk],
) -> CallsConfig {
    let d = CallsConfig::default();
    if let Some(greeting) = &raw.greeting
        && let Err(reason) = check_wav(greeting)
    {
        e.push("calls.greeting", reason);
    }
    if let Some(name) = &raw.transfer_trunk
        && !trunks.iter().any(|t| &t.name == name)
    {
        e.push(
            "calls.transfer_trunk",
            format!("{name:?} is not the name of a [[sip.trunk]]"),
        );
    }
    let outbound_allow = outbound_allow(e, raw.outbound_allow.unwrap_or_default());
    let dtmf_rules = super::dtmf_rule::validate_dtmf_rules(e, raw.dtmf_rule, &outbound_allow);
    CallsConfig {
        max_concurrent: e.ranged(
            "calls.max_concurrent",
            raw.max_concurrent,
            d.max_concurrent,
            1..=10000,
        ),
        max_duration_secs: max_duration(e, raw.max_duration_secs.unwrap_or(d.max_duration_secs)),
        greeting: raw.greeting,
        ring_ms: e.ranged("calls.ring_ms", raw.ring_ms, d.ring_ms, 0..=60_000),
        ring_timeout_secs: e.ranged(
            "calls.ring_timeout_secs",
            raw.ring_timeout_secs,
            d.ring_timeout_secs,
            5..=300,
        ),
        max_redirects: e.ranged(
            "calls.max_redirects",
            raw.max_redirects,
            d.max_redirects,
            0..=10,
        ),
        transfer_trunk: raw.transfer_trunk,
        outbound_allow,
        dtmf_rules,
    }
}

/// `calls.outbound_allow`: each entry a pattern, reported as `calls.outbound_allow[i]`.
fn outbound_allow(e: &mut Errors, raw: Vec<String>) -> Vec<DialPattern> {
    if raw.len() > MAX_PATTERNS {
        e.push(
            "calls.outbound_allow",
            format!("{} patterns; at most {MAX_PATTERNS}", raw.len()),
        );
    }
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            DialPattern::parse(s)
                .map_err(|reason| e.push(format!("calls.outbound_allow[{i}]"), reason))
                .ok()
        })
        .collect()
}

/// `calls.max_duration_secs`, refused above [`MAX_DURATION_SECS`].
fn max_duration(e: &mut Errors, secs: u64) -> u64 {
    if secs > MAX_DURATION_SECS {
        e.push(
            "calls.max_duration_secs",
            format!(
                "{secs} is above {MAX_DURATION_SECS} (36 hours): a longer call's recording \
                 would pass the WAV format's 4 GiB limit (0 means no limit)"
            ),
        );
    }
    secs
}

/// Checks that `path` is a readable file starting with a RIFF/WAVE header.
pub(super) fn check_wav(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| format!("{shown}: cannot open ({e})"))?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head)
        .map_err(|_| format!("{shown}: too short to be a WAV file"))?;
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE".as_slice()) {
        Ok(())
    } else {
        Err(format!("{shown}: not a WAV file (no RIFF/WAVE header)"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{TempDir, invalid, paths, toml_path};

    #[test]
    fn max_concurrent_must_fit_the_port_range() {
        let errors = invalid("[rtp]\nports = \"10000-10009\"\n[calls]\nmax_concurrent = 6\n");
        assert_eq!(paths(&errors), ["calls.max_concurrent"]);
        assert!(
            Config::from_toml_str("[rtp]\nports = \"10000-10009\"\n[calls]\nmax_concurrent = 5\n")
                .is_ok()
        );
    }

    #[test]
    fn max_duration_keeps_a_recording_under_the_wav_size_limit() {
        use crate::recording::writer::MAX_FRAMES;
        let frames = MAX_DURATION_SECS * u64::from(crate::media::frame::SAMPLE_RATE);
        assert!(frames < MAX_FRAMES, "36 h of recording fits in a WAV");
        let errors = invalid("[calls]\nmax_duration_secs = 129601\n");
        assert_eq!(paths(&errors), ["calls.max_duration_secs"]);
        assert!(errors[0].reason.contains("4 GiB"), "{}", errors[0].reason);
        let errors = invalid(&format!("[calls]\nmax_duration_secs = {}\n", u64::MAX));
        assert_eq!(paths(&errors), ["calls.max_duration_secs"]);
        for ok in [0, 1, 14400, MAX_DURATION_SECS] {
            let toml = format!("[calls]\nmax_duration_secs = {ok}\n");
            assert_eq!(
                Config::from_toml_str(&toml)
                    .unwrap()
                    .calls
                    .max_duration_secs,
                ok
            );
        }
    }

    #[test]
    fn ring_timeout_and_redirects_default_and_name_their_field_out_of_range() {
        let calls = Config::from_toml_str("").unwrap().calls;
        assert_eq!((calls.ring_timeout_secs, calls.max_redirects), (60, 3));
        let calls = Config::from_toml_str(
            "[calls]
ring_timeout_secs = 5
max_redirects = 0
",
        )
        .unwrap()
        .calls;
        assert_eq!((calls.ring_timeout_secs, calls.max_redirects), (5, 0));
        let errors = invalid(
            "[calls]
ring_timeout_secs = 4
max_redirects = 11
",
        );
        assert_eq!(
            paths(&errors),
            ["calls.ring_timeout_secs", "calls.max_redirects"]
        );
        assert!(errors[0].reason.contains("5..=300"), "{}", errors[0].reason);
        assert!(errors[1].reason.contains("0..=10"), "{}", errors[1].reason);
        let errors = invalid(
            "[calls]
ring_timeout_secs = 301
",
        );
        assert_eq!(paths(&errors), ["calls.ring_timeout_secs"]);
    }

    #[test]
    fn transfer_trunk_must_name_a_configured_trunk() {
        let trunk = "[[sip.trunk]]\nname = \"desk\"\nregistrar = \"192.0.2.1\"\n\
                     username = \"u\"\npassword = \"p\"\n";
        let config =
            Config::from_toml_str(&format!("{trunk}[calls]\ntransfer_trunk = \"desk\"\n")).unwrap();
        assert_eq!(config.calls.transfer_trunk.as_deref(), Some("desk"));
        assert_eq!(
            Config::from_toml_str("").unwrap().calls.transfer_trunk,
            None
        );
        let errors = invalid(&format!("{trunk}[calls]\ntransfer_trunk = \"other\"\n"));
        assert_eq!(paths(&errors), ["calls.transfer_trunk"]);
        let errors = invalid("[calls]\ntransfer_trunk = \"desk\"\n");
        assert_eq!(paths(&errors), ["calls.transfer_trunk"]);
    }

    #[test]
    fn outbound_allow_is_empty_by_default_and_names_the_bad_entry() {
        assert!(
            Config::from_toml_str("")
                .unwrap()
                .calls
                .outbound_allow
                .is_empty()
        );
        let config = Config::from_toml_str(
            "[calls]\noutbound_allow = [\"+4420*\", \"sip:*@pbx.example.com\"]\n",
        )
        .unwrap();
        let allow = &config.calls.outbound_allow;
        let allowed = |to: &str| {
            crate::config::outbound_allowed(allow, &crate::config::DialTarget::parse(to).unwrap())
        };
        assert!(allowed("+442071234567"));
        assert!(allowed("sip:bob@pbx.example.com"));
        assert!(!allowed("+15551234567"));
        let errors = invalid("[calls]\noutbound_allow = [\"+4420*\", \"*\", \"a b\"]\n");
        assert_eq!(
            paths(&errors),
            ["calls.outbound_allow[1]", "calls.outbound_allow[2]"]
        );
    }

    #[test]
    fn greeting_must_be_an_existing_wav() {
        let errors = invalid("[calls]\ngreeting = \"/nonexistent/greeting.wav\"\n");
        assert_eq!(paths(&errors), ["calls.greeting"]);
        let dir = TempDir::new("greeting");
        let wav = dir.wav("greeting.wav");
        let text = dir.file("greeting.txt", b"hello, this is not audio");
        let toml = |p: &Path| format!("[calls]\ngreeting = {}\n", toml_path(p));
        assert_eq!(
            Config::from_toml_str(&toml(&wav))
                .unwrap()
                .calls
                .greeting
                .as_deref(),
            Some(wav.as_path())
        );
        assert!(invalid(&toml(&text))[0].reason.contains("not a WAV file"));
    }
}
