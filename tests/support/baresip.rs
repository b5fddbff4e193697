//! baresip as a test peer: its configuration directory, written for loopback with G.711, a WAV
//! file as its microphone and its decoded audio dumped to files.

use std::path::{Path, PathBuf};

/// A baresip configured in a test directory.
pub struct Baresip {
    /// Its configuration directory (`baresip -f`).
    pub cfg: PathBuf,
    /// Where it dumps what it hears.
    pub dump: PathBuf,
    /// Its SIP port on 127.0.0.1.
    pub port: u16,
}

impl Baresip {
    /// Starts baresip on this configuration; it quits by itself after `quit_after_secs`. Its
    /// stdout (where it says "Call established") is piped.
    pub fn spawn(&self, quit_after_secs: u32) -> std::process::Child {
        std::process::Command::new("baresip")
            .arg("-f")
            .arg(&self.cfg)
            .args(["-t", &quit_after_secs.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("baresip must be installed (scripts/test.sh installs baresip-core)")
    }
}

/// Stops a baresip started by [`start`] and returns what it printed.
pub fn stop(mut child: std::process::Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().expect("baresip's output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Configures a baresip under `dir` (see [`configure`]) and starts it, quitting by itself
/// after `quit_after_secs`; returns once it had half a second to bind its port.
pub fn start(
    dir: &Path,
    source: &Path,
    params: &str,
    quit_after_secs: u32,
) -> (Baresip, std::process::Child) {
    let baresip = configure(dir, source, params);
    let child = baresip.spawn(quit_after_secs);
    std::thread::sleep(std::time::Duration::from_millis(500));
    (baresip, child)
}

/// Configures a baresip under `dir` on a free port, saying `source` (an 8 kHz WAV), with one
/// account with `params` (`;regint=0;audio_codecs=PCMU` and more).
pub fn configure(dir: &Path, source: &Path, params: &str) -> Baresip {
    let baresip = Baresip {
        cfg: dir.join("baresip"),
        dump: dir.join("dump"),
        port: super::sipp::port(),
    };
    write_config(&baresip.cfg, baresip.port, source, &baresip.dump, params);
    baresip
}

/// Writes baresip's `config` and `accounts` into `cfg`: listening on 127.0.0.1:`port`, saying
/// `source`, dumping what it hears into `dump`, one account with `params`.
fn write_config(cfg: &Path, port: u16, source: &Path, dump: &Path, params: &str) {
    std::fs::create_dir_all(cfg).expect("baresip config dir");
    std::fs::create_dir_all(dump).expect("baresip dump dir");
    std::fs::write(
        cfg.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\naudio_player alsa,null\naudio_alert alsa,null\naudio_source aufile,{}\nmodule_path /usr/lib/baresip/modules\nmodule g711.so\nmodule alsa.so\nmodule aufile.so\nmodule sndfile.so\nmodule_app account.so\nmodule_app menu.so\nsnd_path {}\n",
            source.display(),
            dump.display()
        ),
    )
    .expect("baresip config");
    std::fs::write(
        cfg.join("accounts"),
        format!("<sip:baresip@127.0.0.1>{params}\n"),
    )
    .expect("baresip accounts");
}

/// The samples baresip decoded (its `-dec.wav` dump in `dump`).
pub fn heard(dump: &Path) -> Vec<i16> {
    let decoded = std::fs::read_dir(dump)
        .expect("baresip dump dir")
        .flatten()
        .find(|f| f.file_name().to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip dumped what it heard");
    hound::WavReader::open(decoded.path())
        .expect("baresip's dump is a WAV")
        .samples::<i16>()
        .map(|s| s.expect("a sample"))
        .collect()
}
