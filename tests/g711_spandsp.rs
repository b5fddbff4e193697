//! ITU-T G.711: our μ-law and A-law codecs agree bit for bit with spandsp's reference routines
//! for all 65 536 linear inputs and all 256 codes of each law.

#![allow(clippy::unwrap_used)]

#[path = "c/spandsp_shim.rs"]
mod spandsp_shim;

use earshot::media::g711;
use std::process::Command;

#[test]
fn encode_and_decode_match_spandsp_for_every_input() {
    let exe =
        spandsp_shim::build().unwrap_or_else(|e| panic!("cannot build the spandsp shim: {e}"));
    let output = Command::new(&exe).arg("dump").output().unwrap();
    assert!(output.status.success(), "spandsp shim failed: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();

    let mut checked = [0usize; 4];
    for line in text.lines() {
        let mut fields = line.split(' ');
        let kind = fields.next().unwrap();
        let input: i32 = fields.next().unwrap().parse().unwrap();
        let reference: i32 = fields.next().unwrap().parse().unwrap();
        let (slot, ours) = match kind {
            "U" => (
                0,
                i32::from(g711::linear_to_ulaw(i16::try_from(input).unwrap())),
            ),
            "A" => (
                1,
                i32::from(g711::linear_to_alaw(i16::try_from(input).unwrap())),
            ),
            "u" => (
                2,
                i32::from(g711::ulaw_to_linear(u8::try_from(input).unwrap())),
            ),
            "a" => (
                3,
                i32::from(g711::alaw_to_linear(u8::try_from(input).unwrap())),
            ),
            other => panic!("unexpected line kind {other:?}"),
        };
        assert_eq!(ours, reference, "{kind} of {input}");
        checked[slot] += 1;
    }
    assert_eq!(checked, [65536, 65536, 256, 256]);
    let _ = std::fs::remove_dir_all(exe.parent().unwrap());
}

#[test]
fn slice_apis_match_the_per_sample_functions() {
    let pcm: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    for law in [g711::Law::Ulaw, g711::Law::Alaw] {
        let mut codes = vec![0u8; pcm.len()];
        law.encode(&pcm, &mut codes);
        let mut back = vec![0i16; pcm.len()];
        law.decode(&codes, &mut back);
        for ((&sample, &code), &decoded) in pcm.iter().zip(&codes).zip(&back) {
            let (c, d) = match law {
                g711::Law::Ulaw => (g711::linear_to_ulaw(sample), g711::ulaw_to_linear(code)),
                g711::Law::Alaw => (g711::linear_to_alaw(sample), g711::alaw_to_linear(code)),
            };
            assert_eq!((code, decoded), (c, d), "{law:?} at {sample}");
        }
    }
}
