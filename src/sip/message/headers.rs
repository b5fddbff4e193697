//! The header fields of one SIP message (RFC 3261 §7.3): an ordered list of `(name, value)`
//! pairs kept exactly as received (names in their received spelling, values unfolded and
//! trimmed), looked up case-insensitively with the compact forms of §7.3.3 treated as equal to
//! their long names, plus typed accessors for the headers the transaction and dialog layers use.

use super::{CSeq, NameAddr, Via};

/// Compact header names (RFC 3261 §7.3.3 and the RFCs that registered further letters), with
/// their long forms in lowercase.
const COMPACT_FORMS: [(u8, &str); 13] = [
    (b'v', "via"),
    (b'f', "from"),
    (b't', "to"),
    (b'i', "call-id"),
    (b'm', "contact"),
    (b'l', "content-length"),
    (b'c', "content-type"),
    (b'k', "supported"),
    (b's', "subject"),
    (b'e', "content-encoding"),
    (b'o', "event"),
    (b'r', "refer-to"),
    (b'u', "allow-events"),
];

/// The long form of `name` if it is a one-letter compact form, otherwise `name` itself.
fn long_name(name: &str) -> &str {
    match name.as_bytes() {
        [letter] => COMPACT_FORMS
            .iter()
            .find(|(compact, _)| compact.eq_ignore_ascii_case(letter))
            .map_or(name, |(_, long)| long),
        _ => name,
    }
}

/// Whether two header names denote the same header (case-insensitive, compact = long form).
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    // Lengths differ for almost every pair, so this is usually one comparison.
    match (a.len(), b.len()) {
        (x, y) if x == y => a.eq_ignore_ascii_case(b),
        (1, _) => long_name(a).eq_ignore_ascii_case(b),
        (_, 1) => a.eq_ignore_ascii_case(long_name(b)),
        _ => false,
    }
}

/// Splits a header value into its comma-separated elements (RFC 3261 §7.3.1), ignoring commas
/// inside quoted strings and inside `<...>`. Elements are trimmed; empty elements are dropped.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    if !value.contains(',') {
        let item = value.trim();
        return if item.is_empty() {
            Vec::new()
        } else {
            vec![item]
        };
    }
    let mut items = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut in_angle = false;
    let mut start = 0;
    // Every delimiter is ASCII, so byte offsets are always char boundaries.
    for (i, b) in value.bytes().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                if let Some(item) = value.get(start..i).map(str::trim).filter(|s| !s.is_empty()) {
                    items.push(item);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(item) = value.get(start..).map(str::trim).filter(|s| !s.is_empty()) {
        items.push(item);
    }
    items
}

/// Which well-known header a name denotes (1-based); 0 for any other name. Lookups of these
/// compare one byte per header line instead of a string.
fn known_index(name: &str) -> u8 {
    let long = long_name(name);
    let mut lower = [0u8; 16];
    let Some(lower) = lower.get_mut(..long.len()) else {
        return 0;
    };
    for (to, from) in lower.iter_mut().zip(long.bytes()) {
        *to = from.to_ascii_lowercase();
    }
    match &*lower {
        b"to" => 1,
        b"via" => 2,
        b"from" => 3,
        b"cseq" => 4,
        b"route" => 5,
        b"allow" => 6,
        b"event" => 7,
        b"accept" => 8,
        b"call-id" => 9,
        b"contact" => 10,
        b"expires" => 11,
        b"require" => 12,
        b"subject" => 13,
        b"refer-to" => 14,
        b"supported" => 15,
        b"content-type" => 16,
        b"max-forwards" => 17,
        b"record-route" => 18,
        b"allow-events" => 19,
        b"content-length" => 20,
        b"content-encoding" => 21,
        _ => 0,
    }
}

/// One header line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    value: String,
    /// `known_index(name)`, computed once so that lookups of common headers are one byte compare.
    known: u8,
}

/// A header name prepared for repeated comparison.
struct Key<'a> {
    name: &'a str,
    known: u8,
}

impl<'a> Key<'a> {
    fn new(name: &'a str) -> Self {
        Key {
            name,
            known: known_index(name),
        }
    }

    fn matches(&self, field: &Field) -> bool {
        if self.known != 0 {
            self.known == field.known
        } else {
            field.known == 0 && same_name(&field.name, self.name)
        }
    }
}

/// The header fields of a message, in order, as `(name, value)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Kept as a plain list: order matters for Via and Route, and messages carry ~10–20 headers,
    /// so a linear scan beats hashing.
    fields: Vec<Field>,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the first header named `name` (case-insensitive, compact forms equivalent).
    pub fn get(&self, name: &str) -> Option<&str> {
        let key = Key::new(name);
        self.fields
            .iter()
            .find(|f| key.matches(f))
            .map(|f| f.value.as_str())
    }

    /// The value of every header line named `name`, in order; values are not split on commas.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let key = Key::new(name);
        self.fields
            .iter()
            .filter(move |f| key.matches(f))
            .map(|f| f.value.as_str())
    }

    /// Every element of the comma-separated lists in the headers named `name`, in order
    /// (RFC 3261 §7.3.1): commas inside quoted strings and `<...>` do not split.
    pub fn values<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        self.get_all(name).flat_map(split_list).collect()
    }

    /// How many header lines are named `name`.
    pub fn count(&self, name: &str) -> usize {
        let key = Key::new(name);
        self.fields.iter().filter(|f| key.matches(f)).count()
    }

    /// Whether a header named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A header list of these `(name, value)` lines, in order (for tests).
    #[cfg(test)]
    pub(crate) fn from_lines(lines: &[(&str, &str)]) -> Self {
        let mut headers = Self::default();
        for (name, value) in lines {
            headers.push(*name, *value);
        }
        headers
    }

    /// Appends a header line.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let known = known_index(&name);
        self.fields.push(Field {
            name,
            value: value.into(),
            known,
        });
    }

    /// Replaces every header named `name` by one line with `value`, at the position of the first
    /// one; appends it when there was none.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let key = Key::new(name);
        let value = value.into();
        match self.fields.iter().position(|f| key.matches(f)) {
            Some(first) => {
                if let Some(field) = self.fields.get_mut(first) {
                    field.value = value;
                }
                let mut index = 0;
                self.fields.retain(|f| {
                    let keep = index <= first || !key.matches(f);
                    index += 1;
                    keep
                });
            }
            None => self.push(name, value),
        }
    }

    /// Removes every header named `name`.
    pub fn remove(&mut self, name: &str) {
        let key = Key::new(name);
        self.fields.retain(|f| !key.matches(f));
    }

    /// Every header line as `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_str()))
    }

    /// The number of header lines.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no header lines.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The top-most Via value.
    pub fn via(&self) -> Option<Via> {
        self.values("via").first().and_then(|v| Via::parse(v).ok())
    }

    /// Every Via value, top-most first; values that do not parse are skipped (a parsed
    /// [`Message`](super::Message) has none).
    pub fn vias(&self) -> Vec<Via> {
        self.values("via")
            .into_iter()
            .filter_map(|v| Via::parse(v).ok())
            .collect()
    }

    /// The From header.
    pub fn from(&self) -> Option<NameAddr> {
        self.get("from").and_then(|v| NameAddr::parse(v).ok())
    }

    /// The To header.
    pub fn to(&self) -> Option<NameAddr> {
        self.get("to").and_then(|v| NameAddr::parse(v).ok())
    }

    /// The first Contact value (`None` for the REGISTER wildcard `*`).
    pub fn contact(&self) -> Option<NameAddr> {
        self.values("contact")
            .first()
            .and_then(|v| NameAddr::parse(v).ok())
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.get("call-id")
    }

    /// The CSeq.
    pub fn cseq(&self) -> Option<CSeq> {
        self.get("cseq").and_then(|v| CSeq::parse(v).ok())
    }

    /// Max-Forwards.
    pub fn max_forwards(&self) -> Option<u32> {
        self.get("max-forwards").and_then(parse_decimal)
    }

    /// The raw Content-Type value, parameters included.
    pub fn content_type(&self) -> Option<&str> {
        self.get("content-type")
    }

    /// The Content-Type media type without parameters, lowercased: `"application/sdp"`.
    pub fn content_media_type(&self) -> Option<String> {
        let value = self.content_type()?;
        let media = value.split(';').next().unwrap_or(value);
        let (kind, sub) = media.split_once('/')?;
        let (kind, sub) = (kind.trim(), sub.trim());
        if kind.is_empty() || sub.is_empty() {
            return None;
        }
        Some(format!(
            "{}/{}",
            kind.to_ascii_lowercase(),
            sub.to_ascii_lowercase()
        ))
    }

    /// The Expires header in seconds (`None` when absent, malformed or above 2³²−1).
    pub fn expires(&self) -> Option<u32> {
        self.get("expires").and_then(parse_decimal)
    }
}

/// A decimal number made only of ASCII digits (no sign, no spaces) that fits in a `u32`.
pub(crate) fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn compact_forms_match_their_long_names_case_insensitively() {
        let mut h = Headers::new();
        h.push("v", "SIP/2.0/UDP a;branch=z9hG4bK1");
        h.push("VIA", "SIP/2.0/UDP b;branch=z9hG4bK2");
        h.push("i", "abc");
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP a;branch=z9hG4bK1"));
        assert_eq!(h.get_all("v").count(), 2);
        assert_eq!(h.call_id(), Some("abc"));
        assert_eq!(h.get("Call-ID"), Some("abc"));
        assert_eq!(h.get("X"), None);
    }

    #[test]
    fn list_values_split_outside_quotes_and_angle_brackets() {
        let mut h = Headers::new();
        h.push("Contact", "\"a, b\" <sip:x@y;p=1,2>, <sip:z@w>");
        h.push("m", "sip:q@r");
        assert_eq!(
            h.values("contact"),
            vec!["\"a, b\" <sip:x@y;p=1,2>", "<sip:z@w>", "sip:q@r"]
        );
        let mut h = Headers::new();
        h.push("Allow", " INVITE ,ACK,,BYE ");
        assert_eq!(h.values("allow"), vec!["INVITE", "ACK", "BYE"]);
    }

    #[test]
    fn set_replaces_every_line_at_the_first_position() {
        let mut h = Headers::new();
        h.push("A", "1");
        h.push("B", "2");
        h.push("a", "3");
        h.set("a", "4");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("A", "4"), ("B", "2")]);
        h.set("C", "5");
        h.remove("b");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("A", "4"), ("C", "5")]);
    }

    #[test]
    fn content_media_type_is_lowercased_without_parameters() {
        let mut h = Headers::new();
        h.push("c", "Application/SDP ; charset=utf-8");
        assert_eq!(h.content_media_type().as_deref(), Some("application/sdp"));
        assert_eq!(h.content_type(), Some("Application/SDP ; charset=utf-8"));
    }

    #[test]
    fn scalar_headers_reject_signs_spaces_and_overflow() {
        assert_eq!(parse_decimal("0068"), Some(68));
        assert_eq!(parse_decimal("4294967295"), Some(u32::MAX));
        assert_eq!(parse_decimal("4294967296"), None);
        assert_eq!(parse_decimal("-1"), None);
        assert_eq!(parse_decimal("+1"), None);
        assert_eq!(parse_decimal(""), None);
    }
}
