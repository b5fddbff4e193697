//! Receiving DTMF as RFC 4733 telephone-events: the §2.3 payload, one digit per event
//! timestamp (§2.5.2), the end bit sent three times (§2.5.1.4) delivered once, events whose end
//! packets were all lost delivered when the next event starts or after a silence, and long events
//! split into segments (§2.5.1.3) joined back into one.

use std::time::{Duration, Instant};

/// An event with no packet for this long has ended even without an end bit. Senders refresh an
/// ongoing event every 50 ms (RFC 4733 §2.5.1.2), so this is several lost updates in a row.
pub(crate) const END_TIMEOUT: Duration = Duration::from_millis(400);

/// Event code for a hook flash (RFC 4733 §3.2); it is not a digit and is not reported.
const FLASH: u8 = 16;
/// Largest duration a segment can carry before the sender starts a new one (§2.5.1.3).
const MAX_SEGMENT: u32 = 0xffff;
/// How many delivered events are remembered, so that late end packets stay ignored.
const REMEMBERED: usize = 4;

/// A finished digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digit {
    pub(crate) digit: char,
    /// Duration in timestamp units.
    pub(crate) duration: u32,
}

/// The §2.3 payload: event, E bit, volume, duration. `None` when shorter than 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventPayload {
    event: u8,
    end: bool,
    duration: u16,
}

impl EventPayload {
    pub(crate) fn parse(payload: &[u8]) -> Option<Self> {
        let &[event, flags, d0, d1] = payload.first_chunk::<4>()?;
        Some(EventPayload {
            event,
            end: flags & 0x80 != 0,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// The event being received.
#[derive(Debug, Clone, Copy)]
struct Active {
    /// RTP timestamp of the current segment: the event's identity.
    timestamp: u32,
    event: u8,
    /// Duration of the segments before this one.
    earlier_segments: u32,
    /// Largest duration seen in the current segment.
    segment: u32,
    /// When its last packet arrived, for [`END_TIMEOUT`].
    last_packet: Instant,
}

impl Active {
    fn duration(&self) -> u32 {
        self.earlier_segments.saturating_add(self.segment)
    }
}

/// RFC 4733 receiver for one source.
#[derive(Debug, Clone, Default)]
pub(crate) struct DtmfReceiver {
    active: Option<Active>,
    /// Timestamps of the last events delivered, so their retransmitted or late end packets are
    /// ignored; the oldest is overwritten first.
    delivered: [Option<u32>; REMEMBERED],
    /// Next slot of `delivered` to overwrite.
    next_slot: usize,
}

impl DtmfReceiver {
    /// One telephone-event packet from the established source. Returns up to two digits: one
    /// whose end was lost (flushed because a new event began) and one that just ended.
    pub(crate) fn on_packet(
        &mut self,
        now: Instant,
        timestamp: u32,
        marker: bool,
        payload: EventPayload,
    ) -> [Option<Digit>; 2] {
        let mut out = [None, None];
        if self.delivered.contains(&Some(timestamp)) {
            return out;
        }
        match self.active {
            Some(ref mut a) if a.timestamp == timestamp => {
                a.segment = a.segment.max(u32::from(payload.duration));
                a.last_packet = now;
            }
            Some(a) if is_next_segment(&a, timestamp, marker, payload.event) => {
                self.active = Some(Active {
                    timestamp,
                    earlier_segments: a.duration(),
                    segment: u32::from(payload.duration),
                    last_packet: now,
                    ..a
                });
            }
            previous => {
                out[0] = previous.and_then(|a| self.finish(a));
                self.active = Some(Active {
                    timestamp,
                    event: payload.event,
                    earlier_segments: 0,
                    segment: u32::from(payload.duration),
                    last_packet: now,
                });
            }
        }
        if payload.end
            && let Some(a) = self.active.take()
        {
            out[1] = self.finish(a);
        }
        out
    }

    /// When the active event times out, if one is active.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.active.map(|a| a.last_packet + END_TIMEOUT)
    }

    /// Ends an event whose end packets never came.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<Digit> {
        let a = self.active?;
        if now < a.last_packet + END_TIMEOUT {
            return None;
        }
        self.active = None;
        self.finish(a)
    }

    /// The source changed: deliver the event in progress and forget the old timestamps.
    pub(crate) fn reset(&mut self) -> Option<Digit> {
        let digit = self.active.take().and_then(|a| self.finish(a));
        self.delivered = [None; REMEMBERED];
        digit
    }

    fn finish(&mut self, a: Active) -> Option<Digit> {
        if let Some(slot) = self.delivered.get_mut(self.next_slot) {
            *slot = Some(a.timestamp);
        }
        self.next_slot = (self.next_slot + 1) % REMEMBERED;
        Some(Digit {
            digit: digit_for(a.event)?,
            duration: a.duration(),
        })
    }
}

/// §2.5.1.3: a long event continues in a new segment, same event code, no marker, once the
/// previous segment's duration has reached the maximum.
fn is_next_segment(a: &Active, timestamp: u32, marker: bool, event: u8) -> bool {
    !marker && event == a.event && a.segment >= MAX_SEGMENT && timestamp != a.timestamp
}

/// RFC 4733 §3.2 event codes 0–15 as the characters on the keypad.
fn digit_for(event: u8) -> Option<char> {
    match event {
        0..=9 => char::from_digit(u32::from(event), 10),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        FLASH => None,
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> EventPayload {
        EventPayload {
            event,
            end,
            duration,
        }
    }

    /// Feeds `(ms after t0, timestamp, marker, payload)` packets; returns the digits delivered.
    fn feed(
        rx: &mut DtmfReceiver,
        t0: Instant,
        packets: &[(u64, u32, bool, EventPayload)],
    ) -> Vec<Digit> {
        packets
            .iter()
            .flat_map(|&(ms, ts, m, p)| rx.on_packet(t0 + Duration::from_millis(ms), ts, m, p))
            .flatten()
            .collect()
    }

    fn digit(digit: char, duration: u32) -> Digit {
        Digit { digit, duration }
    }

    #[test]
    fn maps_event_codes_to_keypad_characters() {
        let all: String = (0..=15).filter_map(digit_for).collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(digit_for(16), None);
        assert_eq!(digit_for(200), None);
    }

    #[test]
    fn parses_the_section_2_3_payload() {
        assert_eq!(
            EventPayload::parse(&[5, 0x8a, 0x03, 0x20]),
            Some(ev(5, true, 800))
        );
        assert_eq!(EventPayload::parse(&[5, 0x8a, 0x03]), None);
    }

    #[test]
    fn end_bit_sent_three_times_delivers_the_digit_once() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::default();
        let digits = feed(
            &mut rx,
            t0,
            &[
                (0, 8000, true, ev(5, false, 160)),
                (50, 8000, false, ev(5, false, 560)),
                (100, 8000, false, ev(5, true, 800)),
                (101, 8000, false, ev(5, true, 800)),
                (102, 8000, false, ev(5, true, 800)),
            ],
        );
        assert_eq!(digits, vec![digit('5', 800)]);
        assert_eq!(rx.deadline(), None);
    }

    #[test]
    fn digit_whose_end_packets_were_lost_is_delivered_when_the_next_begins() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::default();
        let digits = feed(
            &mut rx,
            t0,
            &[
                (0, 8000, true, ev(1, false, 160)),
                (50, 8000, false, ev(1, false, 560)),
                // the three end packets of '1' are lost
                (300, 12000, true, ev(2, false, 160)),
                (350, 12000, false, ev(2, true, 400)),
                (351, 12000, false, ev(2, true, 400)),
                // a late end packet of '1' after it was flushed
                (352, 8000, false, ev(1, true, 800)),
            ],
        );
        assert_eq!(digits, vec![digit('1', 560), digit('2', 400)]);
    }

    #[test]
    fn digit_whose_end_packets_were_lost_is_delivered_after_the_timeout() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::default();
        assert!(feed(&mut rx, t0, &[(0, 8000, true, ev(9, false, 160))]).is_empty());
        let deadline = rx.deadline().unwrap();
        assert_eq!(deadline, t0 + END_TIMEOUT);
        assert_eq!(rx.handle_timeout(deadline - Duration::from_millis(1)), None);
        assert_eq!(rx.handle_timeout(deadline), Some(digit('9', 160)));
        assert_eq!(rx.handle_timeout(deadline + END_TIMEOUT), None);
        // Its end packets arriving after all are not a second digit.
        assert!(feed(&mut rx, t0, &[(500, 8000, false, ev(9, true, 320))]).is_empty());
    }

    #[test]
    fn only_end_packets_received_still_delivers_once() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::default();
        let digits = feed(
            &mut rx,
            t0,
            &[
                (0, 100, false, ev(11, true, 800)),
                (1, 100, false, ev(11, true, 800)),
            ],
        );
        assert_eq!(digits, vec![digit('#', 800)]);
    }

    #[test]
    fn long_event_segments_join_into_one_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::default();
        let digits = feed(
            &mut rx,
            t0,
            &[
                (0, 1000, true, ev(0, false, 160)),
                (8000, 1000, false, ev(0, false, 0xffff)),
                (8050, 1000 + 0xffff, false, ev(0, false, 400)),
                (8100, 1000 + 0xffff, false, ev(0, true, 800)),
            ],
        );
        assert_eq!(digits, vec![digit('0', 0xffff + 800)]);
    }

    #[test]
    fn flash_is_not_reported() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::default();
        assert!(feed(&mut rx, t0, &[(0, 5, true, ev(FLASH, true, 800))]).is_empty());
    }
}
