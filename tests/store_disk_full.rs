//! A full disk under the store: call events that cannot be committed are kept and retried,
//! never discarded, and land once space is back; calls go on meanwhile. The store lives on a small tmpfs (mounted by
//! the test; the test command runs as root), filled up while calls go on.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Earshot;
use support::sipp;

/// A tmpfs mounted at a temporary directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "earshot-test"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount tmpfs (the test command runs as root)"
        );
        SmallDisk(dir.to_owned())
    }

    /// Writes zeros until the file system is full; returns the filler's path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn calls(e: &Earshot) -> Vec<Value> {
    http::get(e.http_addr(), "/api/calls").json()["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn events_of_calls_made_while_the_store_disk_is_full_are_kept_and_stored_once_it_has_room() {
    let dir = support::temp_dir("store-disk-full");
    let disk = SmallDisk::mount(&dir.join("store"), "8m");
    let store = dir.join("store").join("earshot.redb");
    let mut e = Earshot::start(&format!(
        "[store]\npath = {:?}\n",
        store.display().to_string()
    ));
    sipp::make_call(&e);
    assert_eq!(calls(&e).len(), 1);

    let filler = disk.fill();
    // Calls while the disk is full go on as usual. A commit fails once the store's file must
    // grow (redb reuses its free pages first): call until one has.
    let mut made = 1;
    while !e.stderr_log().contains("could not be stored; retrying") {
        assert!(made < 40, "no commit failed:\n{}", e.log_tail(30));
        sipp::make_call(&e);
        made += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // And one more, made while the store is failing.
    sipp::make_call(&e);
    made += 1;
    std::fs::remove_file(&filler).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = calls(&e);
        let ended = list.iter().filter(|c| c["status"] == "ended").count();
        if list.len() == made && ended == made {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls after the disk recovered: {list:#?}\n{}",
            e.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(e.stderr_log().contains("stored after the store recovered"));
    assert!(e.panics().is_empty(), "{:?}", e.panics());
    e.terminate(Duration::from_secs(10));
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}
