//! Fuzzes the WAV header repair run at startup on files a crash left unfinished: any header
//! bytes and any file length must give a fix or a refusal, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len_bytes, head)) = data.split_first_chunk::<8>() else { return };
    let file_len = u64::from_le_bytes(*len_bytes);
    if let Ok(Some(fix)) = earshot::recording::repair::fix_header(head, file_len) {
        let mut copy = head.to_vec();
        fix.apply(&mut copy);
    }
});
