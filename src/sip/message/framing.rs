//! Cutting a reliable byte stream (TCP, TLS) into SIP messages (RFC 3261 §18.3): CRLF
//! keep-alives between messages are skipped (RFC 5626 §3.5.1), the header section ends at the
//! first empty line, and Content-Length, mandatory on streams, gives the body length.
//!
//! A stream that cannot be framed — missing, malformed or repeated Content-Length, or a
//! message above the size limit — cannot be resynchronised: the connection must be closed.
//! When the header section of the message that broke it is complete (a Content-Length
//! problem), [`StreamFramer::take_broken_head`] hands it out so it can still be answered 400
//! (RFC 4475 §3.3.9 mcl01) before the close.
//!
//! Content-Length is read by the message parser's own header reader (unfolding, compact `l`,
//! one value only), so the framer and the parser never disagree about where a message ends.
//!
//! Work is linear in the bytes received however the peer cuts them: what is known of the
//! message at the front (how far the search for its empty line got, or its whole length) is
//! kept between reads, so a peer that sends one byte per segment cannot make each byte cost a
//! rescan of everything before it.

use std::ops::Range;

use super::parser::stream_body_length;

/// Why a stream cannot be cut into messages any more; the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A message (or the unframed bytes buffered for one) is larger than the limit.
    #[error("message larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// Content-Length is missing, not a number, or given more than once.
    #[error("missing or malformed Content-Length on a stream")]
    BadContentLength,
}

/// What the bytes at the head of the buffer hold.
enum Frame {
    /// One whole message of this many bytes.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// The stream cannot be framed from here; `head` is where the complete header section of
    /// the offending message lies in the buffer, when it is complete.
    Broken {
        error: FramingError,
        head: Option<Range<usize>>,
    },
}

/// Buffers bytes read from one stream connection and hands out whole messages.
#[derive(Debug)]
pub struct StreamFramer {
    /// Unconsumed bytes; consumed messages are drained from the front.
    buf: Vec<u8>,
    /// The largest message accepted (header section plus body).
    max_message: usize,
    /// Set once framing failed: the stream is garbage from here on and nothing more is framed.
    broken: Option<FramingError>,
    /// The header section of the message that broke framing, until taken.
    broken_head: Option<Vec<u8>>,
    /// What is known of the message at the front of `buf`.
    known: Known,
}

/// What earlier reads learned of the message at the front of the buffer, counted from its
/// first byte after the keep-alive CRLFs (which stay put until the message is handed out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Known {
    /// Nothing yet.
    #[default]
    Nothing,
    /// The first this many bytes hold no complete header section.
    Searched(usize),
    /// The header section is complete and the whole message is this long.
    Length(usize),
}

impl StreamFramer {
    /// A framer that accepts messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_message,
            broken: None,
            broken_head: None,
            known: Known::Nothing,
        }
    }

    /// Appends bytes read from the stream. Fails when the bytes that do not yet form a whole
    /// message exceed the limit, or when framing already failed.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FramingError> {
        if let Some(error) = self.broken {
            return Err(error);
        }
        self.buf.extend_from_slice(data);
        let mut offset = 0;
        // Only the front message's progress is kept: the ones behind a complete message are
        // framed again once they reach the front.
        while let Some(rest) = self.buf.get(offset..) {
            let mut scratch = Known::Nothing;
            let known = if offset == 0 {
                &mut self.known
            } else {
                &mut scratch
            };
            match frame(rest, self.max_message, known) {
                Frame::Complete(len) => offset += len,
                // next_message reports it; the check here is only about size.
                Frame::Broken {
                    error: FramingError::BadContentLength,
                    ..
                } => return Ok(()),
                Frame::Broken { error, .. } => {
                    self.broken = Some(error);
                    self.buf.clear();
                    return Err(error);
                }
                Frame::Incomplete => break,
            }
        }
        Ok(())
    }

    /// The next whole message (without the keep-alive CRLFs before it), `None` when more bytes
    /// are needed. An error is returned once; afterwards the framer yields nothing and the
    /// connection must be closed.
    pub fn next_message(&mut self) -> Option<Result<Vec<u8>, FramingError>> {
        if self.broken.is_some() {
            return None;
        }
        let keep_alive = self
            .buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        self.buf.drain(..keep_alive);
        match frame(&self.buf, self.max_message, &mut self.known) {
            Frame::Complete(len) => {
                self.known = Known::Nothing;
                Some(Ok(self.buf.drain(..len).collect()))
            }
            Frame::Incomplete => None,
            Frame::Broken { error, head } => {
                self.broken = Some(error);
                self.broken_head = head
                    .and_then(|range| self.buf.get(range))
                    .map(<[u8]>::to_vec);
                self.buf.clear();
                Some(Err(error))
            }
        }
    }

    /// After [`StreamFramer::next_message`] returned an error: the complete header section of
    /// the message that could not be framed (no body), once. It still names a Via, Call-ID and
    /// CSeq, so a 400 can tell the peer why before the connection is closed.
    pub fn take_broken_head(&mut self) -> Option<Vec<u8>> {
        self.broken_head.take()
    }

    /// How many bytes are buffered and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Frames the message at the head of `buf` (after any keep-alive CRLFs, which it counts in),
/// starting from what `known` says of it and updating it.
fn frame(buf: &[u8], max_message: usize, known: &mut Known) -> Frame {
    let skipped = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let Some(message) = buf.get(skipped..) else {
        return Frame::Incomplete;
    };
    if message.is_empty() {
        return Frame::Incomplete;
    }
    let resume = match *known {
        Known::Nothing => 0,
        // A line end in the last bytes searched may not have had its next line yet.
        Known::Searched(len) => len.saturating_sub(3),
        Known::Length(total) if message.len() < total => return Frame::Incomplete,
        Known::Length(total) => return Frame::Complete(skipped + total),
    };
    let Some(body_start) = header_end_from(message, resume) else {
        *known = Known::Searched(message.len());
        return if message.len() > max_message {
            too_large(max_message)
        } else {
            Frame::Incomplete
        };
    };
    if body_start > max_message {
        return too_large(max_message);
    }
    let head = message.get(..body_start).unwrap_or_default();
    let Ok(content_length) = stream_body_length(head) else {
        return Frame::Broken {
            error: FramingError::BadContentLength,
            head: Some(skipped..skipped + body_start),
        };
    };
    let total = body_start.saturating_add(content_length);
    if total > max_message {
        too_large(max_message)
    } else if message.len() < total {
        *known = Known::Length(total);
        Frame::Incomplete
    } else {
        Frame::Complete(skipped + total)
    }
}

/// The offset just after the empty line that ends the header section (CRLF or bare LF lines).
pub(crate) fn header_end(message: &[u8]) -> Option<usize> {
    header_end_from(message, 0)
}

/// [`header_end`], searching from `from`: every line end before it must have been looked at
/// already with the bytes that follow it.
fn header_end_from(message: &[u8], mut from: usize) -> Option<usize> {
    while let Some(nl) = message.get(from..)?.iter().position(|&b| b == b'\n') {
        let after = from + nl + 1;
        match message.get(after..)? {
            [b'\n', ..] => return Some(after + 1),
            [b'\r', b'\n', ..] => return Some(after + 2),
            _ => from = after,
        }
    }
    None
}

fn too_large(limit: usize) -> Frame {
    Frame::Broken {
        error: FramingError::TooLarge { limit },
        head: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn cuts_messages_split_across_reads_and_skips_keep_alives() {
        let mut framer = StreamFramer::new(4096);
        let stream = [b"\r\n\r\n".as_slice(), OPTIONS, b"\r\n", OPTIONS].concat();
        for chunk in stream.chunks(7) {
            framer.push(chunk).unwrap();
        }
        assert_eq!(framer.next_message().unwrap().unwrap(), OPTIONS);
        assert_eq!(framer.next_message().unwrap().unwrap(), OPTIONS);
        assert!(framer.next_message().is_none());
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn one_byte_per_read_frames_the_same_messages() {
        let folded = b"OPTIONS sip:a@b SIP/2.0\nContent-Length:\r\n 3\n\nabc".as_slice();
        let stream = [b"\r\n".as_slice(), OPTIONS, b"\r\n\r\n", folded, OPTIONS].concat();
        let mut framer = StreamFramer::new(4096);
        let mut frames = Vec::new();
        for byte in &stream {
            framer.push(std::slice::from_ref(byte)).unwrap();
            while let Some(frame) = framer.next_message() {
                frames.push(frame.unwrap());
            }
        }
        assert_eq!(frames, [OPTIONS, folded, OPTIONS]);
        assert_eq!(framer.buffered(), 0);
        // A header section that trickles in past the limit is still refused.
        let mut framer = StreamFramer::new(64);
        let refused = (0..100).find_map(|_| framer.push(b"X").err());
        assert_eq!(refused, Some(FramingError::TooLarge { limit: 64 }));
    }

    #[test]
    fn waits_for_the_whole_body() {
        let mut framer = StreamFramer::new(4096);
        let (head, tail) = OPTIONS.split_at(OPTIONS.len() - 2);
        framer.push(head).unwrap();
        assert!(framer.next_message().is_none());
        framer.push(tail).unwrap();
        assert_eq!(framer.next_message().unwrap().unwrap(), OPTIONS);
    }

    #[test]
    fn accepts_bare_lf_line_ends() {
        let mut framer = StreamFramer::new(4096);
        framer
            .push(b"OPTIONS sip:a@b SIP/2.0\nl: 2\n\nhiX")
            .unwrap();
        assert_eq!(
            framer.next_message().unwrap().unwrap(),
            b"OPTIONS sip:a@b SIP/2.0\nl: 2\n\nhi"
        );
    }

    #[test]
    fn missing_or_negative_content_length_breaks_the_stream() {
        for head in [
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n".as_slice(),
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\n",
        ] {
            let mut framer = StreamFramer::new(4096);
            framer.push(head).unwrap();
            assert_eq!(
                framer.next_message(),
                Some(Err(FramingError::BadContentLength))
            );
            assert_eq!(framer.next_message(), None);
            assert_eq!(framer.push(b"x"), Err(FramingError::BadContentLength));
        }
    }

    #[test]
    fn oversized_messages_break_the_stream() {
        let mut framer = StreamFramer::new(64);
        assert_eq!(
            framer.push(OPTIONS),
            Err(FramingError::TooLarge { limit: 64 })
        );
        let mut framer = StreamFramer::new(64);
        assert_eq!(
            framer.push(&[b'A'; 65]),
            Err(FramingError::TooLarge { limit: 64 })
        );
        let mut framer = StreamFramer::new(4096);
        framer
            .push(b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999\r\n\r\n")
            .unwrap_err();
    }

    #[test]
    fn many_complete_messages_may_exceed_the_limit_together() {
        let mut framer = StreamFramer::new(OPTIONS.len());
        framer.push(&[OPTIONS, OPTIONS, OPTIONS].concat()).unwrap();
        for _ in 0..3 {
            assert_eq!(framer.next_message().unwrap().unwrap(), OPTIONS);
        }
    }

    #[test]
    fn content_length_is_read_as_the_parser_reads_it() {
        // Folded (§7.3.1) and compact: the framer waits for the 5 bytes the parser will take.
        let mut framer = StreamFramer::new(4096);
        let folded = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n 5\r\n\r\nhelloOPTIONS";
        framer.push(folded).unwrap();
        let frame = framer.next_message().unwrap().unwrap();
        assert!(frame.ends_with(b"\r\n\r\nhello"));
        assert!(framer.next_message().is_none());
    }

    #[test]
    fn a_broken_message_hands_out_its_header_section_once() {
        let mcl = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 5\r\nl: 5\r\n\r\nhello";
        let mut framer = StreamFramer::new(4096);
        framer.push(&[OPTIONS, b"\r\n", mcl].concat()).unwrap();
        assert_eq!(framer.next_message().unwrap().unwrap(), OPTIONS);
        assert_eq!(
            framer.next_message(),
            Some(Err(FramingError::BadContentLength))
        );
        let head = framer.take_broken_head().unwrap();
        assert_eq!(head, mcl.get(..mcl.len() - 5).unwrap());
        assert_eq!(framer.take_broken_head(), None);
        // Too large is not answerable: nothing to hand out.
        let mut framer = StreamFramer::new(64);
        let _ = framer.push(OPTIONS);
        assert_eq!(framer.take_broken_head(), None);
    }
}
