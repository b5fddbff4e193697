//! `earshot check-config` as an operator runs it: the real binary, real files, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `earshot check-config --config <path>`.
fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_earshot"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run the earshot binary")
}

/// A file in the temp dir, removed when dropped, named so parallel tests never collide.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "earshot-config-cli-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write temp config");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn shipped_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let out = check_config(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("config OK: "), "{stdout}");
}

#[test]
fn every_invalid_field_is_listed_and_exit_code_is_1() {
    let file = TempFile::new(
        "three-errors",
        r#"
[sip]
allow = ["127.0.0.0/8", "::1", "10.0.0.0/33"]

[rtp]
ports = "10001-20000"

[http]
listen = "0.0.0.0:8080"
"#,
    );
    let out = check_config(&file.0);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    for line in [
        r#"sip.allow[2]: "10.0.0.0/33" is not a CIDR (prefix longer than 32)"#,
        "rtp.ports: ",
        "http.token: required when http.listen is not a loopback address",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{text}"
        );
    }
}

#[test]
fn unknown_key_is_reported_with_path_and_line() {
    let file = TempFile::new("typo", "[recording]\nenabled = true\nkeep_dayz = 3\n");
    let out = check_config(&file.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("recording.keep_dayz: line 3, column 1: unknown field `keep_dayz`"),
        "{stderr}"
    );
}

#[test]
fn missing_file_fails() {
    let out = check_config(Path::new("/nonexistent/earshot.toml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/earshot.toml"));
}
