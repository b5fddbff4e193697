//! Builds `tests/c/spandsp_g711.c` (the spandsp reference for G.711) with the system C compiler.
//! Shared by `tests/g711_spandsp.rs` and `benches/g711.rs` through `#[path]`; needs `cc` and
//! libspandsp-dev.

use std::path::PathBuf;
use std::process::Command;

/// Compiles the shim into a fresh temporary directory and returns the executable's path.
pub(crate) fn build() -> Result<PathBuf, String> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/spandsp_g711.c");
    let dir = std::env::temp_dir().join(format!("earshot-spandsp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let exe = dir.join("spandsp_g711");
    let output = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&source)
        .arg("-lspandsp")
        .output()
        .map_err(|e| format!("running cc: {e} (install a C compiler and libspandsp-dev)"))?;
    if !output.status.success() {
        return Err(format!(
            "cc failed (is libspandsp-dev installed?):\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(exe)
}
