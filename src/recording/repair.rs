//! Startup repair of WAV files that were not closed: a crash or `kill -9` leaves a recording
//! whose RIFF and data chunk sizes describe the last flush, not the bytes on disk.
//!
//! [`fix_header`] is the whole decision, sans-IO: given the first bytes of a file and its
//! length, it walks the RIFF chunks to the `data` chunk and says which sizes to rewrite (every
//! byte after the data chunk's header is taken as audio, cut to whole sample frames). It never
//! panics, whatever the bytes; the fuzz target feeds it garbage. [`repair_file`] and
//! [`repair_dir`] are thin IO around it.
//!
//! Files that cannot be parsed (shorter than a header, not RIFF/WAVE, no `data` chunk) are
//! left untouched and reported: they hold no recoverable audio, and deleting files is the
//! retention sweep's decision, not this one's. Run the repair before recording starts: a
//! file being written is, by design, "not closed".

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How much of a file's start is read to find the `data` chunk.
pub const HEADER_SCAN_BYTES: usize = 4096;

/// The sizes to write into a WAV header so that it matches the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFix {
    /// New RIFF chunk size, written at offset 4: the file length minus 8.
    pub riff_size: u32,
    /// Offset of the data chunk's size field.
    pub data_size_offset: u64,
    /// New data chunk size: the audio bytes, a whole number of sample frames.
    pub data_size: u32,
    /// File length after the repair (a trailing partial sample frame is cut).
    pub new_len: u64,
}

impl HeaderFix {
    /// Writes the new sizes into `head` (the file's first bytes), where they fall inside it.
    pub fn apply(&self, head: &mut [u8]) {
        put_u32(head, 4, self.riff_size);
        if let Ok(offset) = usize::try_from(self.data_size_offset) {
            put_u32(head, offset, self.data_size);
        }
    }
}

/// Why a file cannot be repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotRepairable {
    /// Fewer bytes than a RIFF header plus the chunk headers up to the data.
    #[error("file ends inside the WAV header")]
    Truncated,
    /// The file does not start with `RIFF....WAVE`.
    #[error("not a RIFF/WAVE file")]
    NotWave,
    /// No `fmt ` chunk before the `data` chunk, so the sample frame size is unknown.
    #[error("no fmt chunk before the data")]
    NoFormat,
    /// The `fmt ` chunk is too short or has a zero block alignment.
    #[error("invalid fmt chunk")]
    BadFormat,
    /// No `data` chunk within the first [`HEADER_SCAN_BYTES`].
    #[error("no data chunk in the header")]
    NoData,
}

/// Decides the repair of a WAV file from its first bytes (`head`, at most
/// [`HEADER_SCAN_BYTES`] are looked at) and its length. `Ok(None)` when the header already
/// matches the file.
pub fn fix_header(head: &[u8], file_len: u64) -> Result<Option<HeaderFix>, NotRepairable> {
    let limit = usize::try_from(file_len)
        .unwrap_or(usize::MAX)
        .min(HEADER_SCAN_BYTES);
    let head = &head[..head.len().min(limit)];
    if head.len() < 12 {
        return Err(if head.len() >= 4 && &head[..4] != b"RIFF" {
            NotRepairable::NotWave
        } else {
            NotRepairable::Truncated
        });
    }
    if &head[..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(NotRepairable::NotWave);
    }
    let declared_riff = get_u32(head, 4).ok_or(NotRepairable::Truncated)?;

    let mut block_align: Option<u64> = None;
    let mut offset = 12usize;
    let (data_size_offset, data_start, declared_data) = loop {
        let (Some(id), Some(size)) = (head.get(offset..offset + 4), get_u32(head, offset + 4))
        else {
            return Err(if (head.len() as u64) < file_len {
                NotRepairable::NoData
            } else {
                NotRepairable::Truncated
            });
        };
        let body = offset + 8;
        match id {
            b"data" => break (offset as u64 + 4, body as u64, u64::from(size)),
            b"fmt " => {
                let align = get_u16(head, body + 12).ok_or(if (head.len() as u64) < file_len {
                    NotRepairable::NoData
                } else {
                    NotRepairable::Truncated
                })?;
                if size < 16 || align == 0 {
                    return Err(NotRepairable::BadFormat);
                }
                block_align = Some(u64::from(align));
            }
            _ => {}
        }
        let padded = u64::from(size) + u64::from(size & 1);
        offset = usize::try_from(body as u64 + padded).map_err(|_| NotRepairable::NoData)?;
    };
    let block_align = block_align.ok_or(NotRepairable::NoFormat)?;

    let intact = u64::from(declared_riff) + 8 == file_len && data_start + declared_data <= file_len;
    if intact {
        return Ok(None);
    }
    // The RIFF size counts everything after its own field, so data can grow only until the
    // RIFF size hits u32::MAX.
    let max_data = u64::from(u32::MAX) - (data_start - 8);
    let available = (file_len - data_start).min(max_data);
    let data_size = available - available % block_align;
    let new_len = data_start + data_size;
    let fix = HeaderFix {
        riff_size: u32::try_from(new_len - 8).unwrap_or(u32::MAX),
        data_size_offset,
        data_size: u32::try_from(data_size).unwrap_or(u32::MAX),
        new_len,
    };
    Ok(Some(fix))
}

/// The result of looking at one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairOutcome {
    /// The header already matched the file; nothing was written.
    Intact,
    /// The header was rewritten.
    Fixed {
        /// Audio bytes now declared.
        data_bytes: u64,
        /// Bytes cut from the end (a partial sample frame).
        dropped_bytes: u64,
    },
    /// The file was left untouched.
    Unrepairable(NotRepairable),
}

/// An IO failure while repairing one file.
#[derive(Debug, thiserror::Error)]
#[error("cannot repair {path}: {source}")]
pub struct RepairError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: io::Error,
}

/// One file [`repair_dir`] did something about (or could not).
#[derive(Debug)]
pub struct Repaired {
    /// The file.
    pub path: PathBuf,
    /// Fixed, unrepairable, or an IO error.
    pub outcome: Result<RepairOutcome, RepairError>,
}

/// Repairs the header of one WAV file in place (and cuts a trailing partial sample frame).
pub fn repair_file(path: &Path) -> Result<RepairOutcome, RepairError> {
    let error = |source| RepairError {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(error)?;
    let file_len = file.metadata().map_err(error)?.len();
    let mut head = Vec::with_capacity(HEADER_SCAN_BYTES);
    (&mut file)
        .take(HEADER_SCAN_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(error)?;
    let fix = match fix_header(&head, file_len) {
        Ok(Some(fix)) => fix,
        Ok(None) => return Ok(RepairOutcome::Intact),
        Err(reason) => return Ok(RepairOutcome::Unrepairable(reason)),
    };
    let mut write = |offset: u64, value: u32| -> io::Result<()> {
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&value.to_le_bytes())
    };
    write(4, fix.riff_size).map_err(error)?;
    write(fix.data_size_offset, fix.data_size).map_err(error)?;
    if fix.new_len < file_len {
        file.set_len(fix.new_len).map_err(error)?;
    }
    file.sync_all().map_err(error)?;
    Ok(RepairOutcome::Fixed {
        data_bytes: u64::from(fix.data_size),
        dropped_bytes: file_len.saturating_sub(fix.new_len),
    })
}

/// Repairs every `*.wav` file directly in `dir`; returns the files that were fixed or could
/// not be, leaving out intact ones. Fails only if `dir` cannot be listed.
pub fn repair_dir(dir: &Path) -> io::Result<Vec<Repaired>> {
    let mut repaired = Vec::new();
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let is_wav = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("wav"));
        if !is_wav || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let outcome = repair_file(&path);
        if !matches!(outcome, Ok(RepairOutcome::Intact)) {
            repaired.push(Repaired { path, outcome });
        }
    }
    repaired.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(repaired)
}

fn get_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn get_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    if let Some(b) = at.checked_add(4).and_then(|end| bytes.get_mut(at..end)) {
        b.copy_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The 44-byte header hound writes for stereo 8 kHz 16-bit PCM, with the given sizes.
    fn header(riff: u32, data: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&riff.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes()); // PCM
        h.extend_from_slice(&2u16.to_le_bytes()); // channels
        h.extend_from_slice(&8000u32.to_le_bytes());
        h.extend_from_slice(&32000u32.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes()); // block align
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data.to_le_bytes());
        assert_eq!(h.len(), 44);
        h
    }

    #[test]
    fn a_closed_file_is_intact() {
        assert_eq!(fix_header(&header(36 + 4000, 4000), 44 + 4000), Ok(None));
        assert_eq!(fix_header(&header(36, 0), 44), Ok(None), "header only");
    }

    #[test]
    fn a_crashed_file_gets_sizes_from_its_length_cut_to_whole_frames() {
        // Last flush declared 4000 bytes; 10003 are on disk (a torn sample frame at the end).
        let fix = fix_header(&header(36 + 4000, 4000), 44 + 10003)
            .unwrap()
            .unwrap();
        assert_eq!(
            fix,
            HeaderFix {
                riff_size: 36 + 10000,
                data_size_offset: 40,
                data_size: 10000,
                new_len: 44 + 10000,
            }
        );
        let mut head = header(36 + 4000, 4000);
        fix.apply(&mut head);
        assert_eq!(head, header(36 + 10000, 10000));
    }

    #[test]
    fn never_flushed_and_truncated_files_are_fixed() {
        let fix = fix_header(&header(0, 0), 44 + 64).unwrap().unwrap();
        assert_eq!((fix.riff_size, fix.data_size), (36 + 64, 64));
        let fix = fix_header(&header(0, 0), 44).unwrap().unwrap();
        assert_eq!((fix.riff_size, fix.data_size, fix.new_len), (36, 0, 44));
        // Declares more than is there (the disk filled up before the data was written).
        let fix = fix_header(&header(36 + 9000, 9000), 44 + 100)
            .unwrap()
            .unwrap();
        assert_eq!((fix.data_size, fix.new_len), (100, 144));
    }

    #[test]
    fn chunks_before_the_data_are_walked_and_trailing_chunks_kept() {
        let mut h = header(0, 0);
        let data = h.split_off(36);
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&5u32.to_le_bytes());
        h.extend_from_slice(b"abcde\0"); // odd size, padded
        h.extend_from_slice(&data);
        let fix = fix_header(&h, h.len() as u64 + 400).unwrap().unwrap();
        assert_eq!(fix.data_size_offset, 36 + 14 + 4);
        assert_eq!(fix.data_size, 400);
        assert_eq!(fix.riff_size as u64 + 8, fix.new_len);
        // A closed file with a chunk after the data is intact.
        let closed = header(36 + 100 + 20, 100);
        assert_eq!(fix_header(&closed, 44 + 100 + 20), Ok(None));
    }

    #[test]
    fn unparseable_files_are_reported_not_touched() {
        assert_eq!(fix_header(b"", 0), Err(NotRepairable::Truncated));
        assert_eq!(fix_header(b"RIFF\0\0", 6), Err(NotRepairable::Truncated));
        assert_eq!(
            fix_header(&header(36, 0)[..30], 30),
            Err(NotRepairable::Truncated)
        );
        assert_eq!(
            fix_header(&header(36, 0)[..40], 40),
            Err(NotRepairable::Truncated)
        );
        assert_eq!(
            fix_header(b"ID3\x04 mp3 file....", 18),
            Err(NotRepairable::NotWave)
        );
        let mut no_fmt = b"RIFF\0\0\0\0WAVE".to_vec();
        no_fmt.extend_from_slice(b"data\0\0\0\0");
        assert_eq!(fix_header(&no_fmt, 100), Err(NotRepairable::NoFormat));
        let mut zero_align = header(0, 0);
        zero_align[32] = 0;
        assert_eq!(fix_header(&zero_align, 100), Err(NotRepairable::BadFormat));
        // A huge chunk size jumps past the scanned bytes.
        let mut junk = header(0, 0);
        junk[36..40].copy_from_slice(b"junk");
        junk[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(fix_header(&junk, 1 << 33), Err(NotRepairable::NoData));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = header((state >> 8) as u32, state as u32);
            let len = (state >> 40) as usize % 80;
            bytes.resize(len, (state >> 3) as u8);
            if round % 3 == 0 {
                let at = (state >> 20) as usize % 44;
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= (state >> 50) as u8;
                }
            }
            let file_len = bytes.len() as u64 + (state >> 33) % 5000;
            if let Ok(Some(fix)) = fix_header(&bytes, file_len) {
                assert!(fix.new_len <= file_len);
                assert_eq!(u64::from(fix.riff_size) + 8, fix.new_len);
                fix.apply(&mut bytes);
            }
        }
    }

    #[test]
    fn repair_file_rewrites_and_truncates_and_repair_dir_lists_what_it_did() {
        let dir = std::env::temp_dir().join(format!("earshot-repair-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut crashed = header(36, 0);
        crashed.extend((0..1002u32).map(|i| i as u8));
        fs::write(dir.join("crashed.wav"), &crashed).unwrap();
        fs::write(
            dir.join("closed.WAV"),
            header(36 + 8, 8)
                .into_iter()
                .chain([0; 8])
                .collect::<Vec<_>>(),
        )
        .unwrap();
        fs::write(dir.join("empty.wav"), b"").unwrap();
        fs::write(dir.join("notes.txt"), b"not audio").unwrap();

        let repaired = repair_dir(&dir).unwrap();
        let names: Vec<_> = repaired
            .iter()
            .map(|r| r.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["crashed.wav", "empty.wav"]);
        assert_eq!(
            *repaired[0].outcome.as_ref().unwrap(),
            RepairOutcome::Fixed {
                data_bytes: 1000,
                dropped_bytes: 2
            }
        );
        assert_eq!(
            *repaired[1].outcome.as_ref().unwrap(),
            RepairOutcome::Unrepairable(NotRepairable::Truncated)
        );
        let reader = hound::WavReader::open(dir.join("crashed.wav")).unwrap();
        assert_eq!(reader.duration(), 250);
        assert_eq!(fs::metadata(dir.join("empty.wav")).unwrap().len(), 0);
        assert!(
            repair_dir(&dir)
                .unwrap()
                .iter()
                .all(|r| r.path.ends_with("empty.wav"))
        );
        assert!(repair_file(&dir.join("missing.wav")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
