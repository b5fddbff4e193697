//! G.711 μ-law and A-law companding (ITU-T G.711), bit-exact with the ITU reference as
//! implemented by spandsp's `g711.h`.
//!
//! Both directions are table-driven: decoding reads a 256-entry table and encoding a
//! 65 536-entry table indexed by the sample's bit pattern, so each sample costs one load and
//! no branch. All four tables are built at compile time by `const fn`s that spell out the
//! reference algorithm (segment = position of the top bit), so the tables and the algorithm
//! cannot drift apart. `tests/g711_spandsp.rs` compares every input with spandsp.

/// Which G.711 companding law a stream uses (PCMU is μ-law, PCMA is A-law).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Law {
    /// μ-law, RTP payload type 0 (PCMU): North America and Japan.
    Ulaw,
    /// A-law, RTP payload type 8 (PCMA): everywhere else.
    Alaw,
}

impl Law {
    /// Decodes `src` into `dst`. Only the common prefix `min(src.len(), dst.len())` is written.
    pub fn decode(self, src: &[u8], dst: &mut [i16]) {
        match self {
            Law::Ulaw => decode_ulaw(src, dst),
            Law::Alaw => decode_alaw(src, dst),
        }
    }

    /// Encodes `src` into `dst`. Only the common prefix `min(src.len(), dst.len())` is written.
    pub fn encode(self, src: &[i16], dst: &mut [u8]) {
        match self {
            Law::Ulaw => encode_ulaw(src, dst),
            Law::Alaw => encode_alaw(src, dst),
        }
    }

    /// The code of a zero sample: 0xFF for μ-law, 0xD5 for A-law.
    pub fn silence_code(self) -> u8 {
        match self {
            Law::Ulaw => linear_to_ulaw(0),
            Law::Alaw => linear_to_alaw(0),
        }
    }
}

/// μ-law bias added to the magnitude before the segment search (G.711 Table 2a, in 16-bit
/// scale).
const ULAW_BIAS: i32 = 0x84;
/// A-law even-bit inversion mask (G.711 §3.2: "even bits inverted").
const ALAW_AMI_MASK: u8 = 0x55;

/// Index of the highest set bit; `v` is never 0 here because callers OR in 0xFF.
const fn top_bit(v: i32) -> i32 {
    31 - (v as u32).leading_zeros() as i32
}

/// The reference μ-law encoder, used only to build [`ULAW_ENCODE`].
const fn ulaw_encode_reference(sample: i16) -> u8 {
    let (biased, mask) = if sample >= 0 {
        (ULAW_BIAS + sample as i32, 0xFF)
    } else {
        (ULAW_BIAS - sample as i32, 0x7F)
    };
    let seg = top_bit(biased | 0xFF) - 7;
    if seg >= 8 {
        (0x7F ^ mask) as u8
    } else {
        (((seg << 4) | ((biased >> (seg + 3)) & 0x0F)) ^ mask) as u8
    }
}

/// The reference μ-law decoder, used only to build [`ULAW_DECODE`].
const fn ulaw_decode_reference(code: u8) -> i16 {
    let code = !code;
    let t = ((((code & 0x0F) as i32) << 3) + ULAW_BIAS) << (((code & 0x70) >> 4) as i32);
    if code & 0x80 != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

/// The reference A-law encoder, used only to build [`ALAW_ENCODE`].
const fn alaw_encode_reference(sample: i16) -> u8 {
    let (magnitude, mask) = if sample >= 0 {
        (sample as i32, ALAW_AMI_MASK | 0x80)
    } else {
        (-(sample as i32) - 1, ALAW_AMI_MASK)
    };
    let seg = top_bit(magnitude | 0xFF) - 7;
    if seg >= 8 {
        // Only reachable for magnitudes ≥ 32768, i.e. never from an i16; kept for parity.
        return 0x7F ^ mask;
    }
    let shift = if seg != 0 { seg + 3 } else { 4 };
    (((seg << 4) | ((magnitude >> shift) & 0x0F)) as u8) ^ mask
}

/// The reference A-law decoder, used only to build [`ALAW_DECODE`].
const fn alaw_decode_reference(code: u8) -> i16 {
    let code = code ^ ALAW_AMI_MASK;
    let mut mantissa = ((code & 0x0F) as i32) << 4;
    let seg = ((code & 0x70) >> 4) as i32;
    if seg != 0 {
        mantissa = (mantissa + 0x108) << (seg - 1);
    } else {
        mantissa += 8;
    }
    if code & 0x80 != 0 {
        mantissa as i16
    } else {
        -mantissa as i16
    }
}

const fn build_decode_table(ulaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = if ulaw {
            ulaw_decode_reference(code as u8)
        } else {
            alaw_decode_reference(code as u8)
        };
        code += 1;
    }
    table
}

const fn build_encode_table(ulaw: bool) -> [u8; 65536] {
    let mut table = [0u8; 65536];
    let mut bits = 0;
    while bits < 65536 {
        let sample = bits as u16 as i16;
        table[bits] = if ulaw {
            ulaw_encode_reference(sample)
        } else {
            alaw_encode_reference(sample)
        };
        bits += 1;
    }
    table
}

/// μ-law code → linear sample.
static ULAW_DECODE: [i16; 256] = build_decode_table(true);
/// A-law code → linear sample.
static ALAW_DECODE: [i16; 256] = build_decode_table(false);
/// Linear sample (as its `u16` bit pattern) → μ-law code.
static ULAW_ENCODE: [u8; 65536] = build_encode_table(true);
/// Linear sample (as its `u16` bit pattern) → A-law code.
static ALAW_ENCODE: [u8; 65536] = build_encode_table(false);

/// Encodes one 16-bit linear sample to μ-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    ULAW_ENCODE[usize::from(sample as u16)]
}

/// Decodes one μ-law code to a 16-bit linear sample.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// Encodes one 16-bit linear sample to A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    ALAW_ENCODE[usize::from(sample as u16)]
}

/// Decodes one A-law code to a 16-bit linear sample.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// Decodes μ-law `src` into `dst`; writes `min(src.len(), dst.len())` samples.
pub fn decode_ulaw(src: &[u8], dst: &mut [i16]) {
    for (out, &code) in dst.iter_mut().zip(src) {
        *out = ulaw_to_linear(code);
    }
}

/// Encodes `src` into μ-law `dst`; writes `min(src.len(), dst.len())` codes.
pub fn encode_ulaw(src: &[i16], dst: &mut [u8]) {
    for (out, &sample) in dst.iter_mut().zip(src) {
        *out = linear_to_ulaw(sample);
    }
}

/// Decodes A-law `src` into `dst`; writes `min(src.len(), dst.len())` samples.
pub fn decode_alaw(src: &[u8], dst: &mut [i16]) {
    for (out, &code) in dst.iter_mut().zip(src) {
        *out = alaw_to_linear(code);
    }
}

/// Encodes `src` into A-law `dst`; writes `min(src.len(), dst.len())` codes.
pub fn encode_alaw(src: &[i16], dst: &mut [u8]) {
    for (out, &sample) in dst.iter_mut().zip(src) {
        *out = linear_to_alaw(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G.711 Table 2a/2b reference points (16-bit scale, spandsp conventions).
    #[test]
    fn decodes_table_reference_points() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn zero_sample_encodes_to_0xff_ulaw_and_0xd5_alaw() {
        assert_eq!(Law::Ulaw.silence_code(), 0xFF);
        assert_eq!(Law::Alaw.silence_code(), 0xD5);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // μ-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes to 0xFF.
            let expect_u = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(code)),
                expect_u,
                "ulaw {code:#04x}"
            );
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "alaw {code:#04x}"
            );
        }
    }

    #[test]
    fn encoding_is_monotonic_in_the_decoded_domain() {
        let mut previous_u = i16::MIN;
        let mut previous_a = i16::MIN;
        for sample in i16::MIN..=i16::MAX {
            let u = ulaw_to_linear(linear_to_ulaw(sample));
            let a = alaw_to_linear(linear_to_alaw(sample));
            assert!(u >= previous_u && a >= previous_a, "at {sample}");
            previous_u = u;
            previous_a = a;
        }
    }

    #[test]
    fn slice_apis_stop_at_the_shorter_buffer() {
        let pcm = [1000i16, -1000, 0];
        let mut codes = [0u8; 2];
        Law::Ulaw.encode(&pcm, &mut codes);
        assert_eq!(codes, [linear_to_ulaw(1000), linear_to_ulaw(-1000)]);
        let mut back = [7i16; 4];
        Law::Alaw.decode(&[0xD5, 0x55], &mut back);
        assert_eq!(back, [8, -8, 7, 7]);
    }
}
