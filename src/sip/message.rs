//! SIP messages at the network edge (RFC 3261 §7, §18.3, §20, §25; RFC 4475 and RFC 5118
//! torture tests): bytes become typed values here, and typed values become bytes here. Past
//! this module nothing re-checks syntax.
//!
//! The parser is our own, tolerant where RFC 3261 asks for robustness (§7.5 leading CRLFs,
//! folded lines, LWS everywhere LWS may be, compact header names, unknown methods, unknown URI
//! schemes, bare-LF line ends) and strict where the torture tests want a 400. `rsip` 0.4 turned
//! out genuinely unhelpful as the parser: it rejects six of the thirteen RFC 4475 must-parse
//! messages (wsinv, intmeth, esc01, esc02, longreq, semiuri), matches methods
//! case-insensitively and prints enum names as reason phrases (`486 BusyHere`). It is used only
//! by this module's tests, as an independent parser that must accept what we serialize.
//!
//! Liberal choices the RFC 4475 texts permit, documented here once:
//! trailing whitespace on the request line is ignored (§3.1.2.10); spaces inside `<...>`
//! (§3.1.2.14), unquoted display names with commas (§3.1.2.15) and `?headers` in an addr-spec
//! (§3.1.2.13) are accepted; escaped headers in a Request-URI stay URI headers (§3.1.2.11);
//! Date is never parsed (§3.1.2.12); a header section without its closing empty line is accepted
//! when there is no body (the archive copy of baddn.dat). RFC 5118 §4.10: an IPv6 reference with
//! three colons (`2001:db8:::192.0.2.1`) is tolerated.
//!
//! Strict choices against hostile input (parser.rs has the details): control characters
//! outside quoted-pairs, a CR that does not end a line and CRLF mixed with bare LF in one
//! header section are 400; an INVITE needs exactly one SIP/SIPS Contact (§8.1.1.8) unless it
//! is a re-INVITE or from an RFC 2543 peer; `Contact: *` is for REGISTER only; a message framed
//! from a stream needs Content-Length ([`parse_stream`]). A 400's reason phrase names the
//! fault ([`ParseError::reason`]).

mod framing;
mod headers;
mod parser;
mod uri;
mod via;

use std::fmt;

pub use framing::{FramingError, StreamFramer};
pub use headers::Headers;
pub use uri::{NameAddr, Uri};
pub use via::{CSeq, Via};

/// A request method (RFC 3261 §7.1, §27.4). Methods are case-sensitive: `invite` is an
/// unknown method, not INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Prack,
    Update,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token; the endpoint answers 501 Not Implemented.
    Other(String),
}

impl Method {
    /// The method token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(token) => token,
        }
    }

    /// The method for a token, case-sensitively (RFC 3261 §7.1).
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 100..=699.
    pub status: u16,
    /// UTF-8, possibly empty (RFC 4475 §3.1.1.13).
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    /// The headers of either kind of message.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(request) => &request.headers,
            Message::Response(response) => &response.headers,
        }
    }

    /// The body of either kind of message.
    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(request) => &request.body,
            Message::Response(response) => &response.body,
        }
    }

    /// Serializes either kind of message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(request) => request.to_bytes(),
            Message::Response(response) => response.to_bytes(),
        }
    }
}

impl Request {
    /// The request on the wire: request line, headers in order with Content-Length set to the
    /// body's length (in place of any existing one, else last), the empty line, the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("{} {} SIP/2.0", self.method, self.uri);
        write_message(&start, &self.headers, &self.body)
    }
}

impl Response {
    /// The response on the wire, laid out as [`Request::to_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("SIP/2.0 {} {}", self.status, self.reason);
        write_message(&start, &self.headers, &self.body)
    }

    /// The standard reason phrase of a status code (RFC 3261 §21 and later RFCs), or a generic
    /// one for the code's class.
    pub fn reason_for(status: u16) -> &'static str {
        standard_reason(status).unwrap_or(match status {
            100..=199 => "Session Progress",
            200..=299 => "OK",
            300..=399 => "Redirection",
            400..=499 => "Request Failure",
            500..=599 => "Server Failure",
            _ => "Global Failure",
        })
    }
}

/// The reason phrases registered with IANA (RFC 3261 §21 and later RFCs).
fn standard_reason(status: u16) -> Option<&'static str> {
    let reason = match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity-Info",
        437 => "Unsupported Certificate",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        608 => "Rejected",
        _ => return None,
    };
    Some(reason)
}

/// Writes start line, headers, Content-Length, empty line and body. CR, LF and every other
/// control character but HTAB inside names or values become spaces, so no value can smuggle in
/// a header line, and a 400 that echoes a hostile Call-ID does not echo its NUL.
fn write_message(start: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(start.len() + 32 * headers.len() + body.len() + 64);
    push_line_safe(&mut out, start);
    out.extend_from_slice(b"\r\n");
    let length = body.len().to_string();
    let mut wrote_length = false;
    for (name, value) in headers.iter() {
        let is_length = headers::same_name(name, "content-length");
        if is_length && wrote_length {
            continue;
        }
        push_line_safe(&mut out, name);
        out.extend_from_slice(b": ");
        if is_length {
            out.extend_from_slice(length.as_bytes());
            wrote_length = true;
        } else {
            push_line_safe(&mut out, value);
        }
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(length.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn push_line_safe(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().map(|b| match b {
        b'\t' => b,
        0..=0x1f | 0x7f => b' ',
        _ => b,
    }));
}

/// What is wrong with a message or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("empty message")]
    Empty,
    #[error("malformed start line")]
    StartLine,
    #[error("method is not a token")]
    Method,
    #[error("malformed Request-URI")]
    RequestUri,
    #[error("status code outside 100..=699")]
    StatusCode,
    #[error("malformed SIP version")]
    Version,
    #[error("header line without a colon")]
    HeaderLine,
    #[error("header name is not a token")]
    HeaderName,
    #[error("more than {} header fields", parser::MAX_HEADERS)]
    TooManyHeaders,
    #[error("header field longer than {} bytes", parser::MAX_LINE)]
    LineTooLong,
    #[error("Content-Length is not a number")]
    ContentLength,
    #[error("more than one Content-Length")]
    MultipleContentLength,
    #[error("body shorter than Content-Length")]
    TruncatedBody,
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("more than one {0} value")]
    MultipleValues(&'static str),
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    #[error("CSeq method differs from the request method")]
    CSeqMismatch,
    #[error("malformed URI")]
    Uri,
    #[error("malformed name-addr")]
    NameAddr,
    #[error("malformed Via")]
    Via,
    #[error("malformed CSeq")]
    CSeq,
    #[error("control character in the header section")]
    ControlCharacter,
    #[error("CR without LF in the header section")]
    BareCr,
    #[error("CRLF and bare LF line ends mixed")]
    MixedLineEnds,
    #[error("Contact * outside REGISTER")]
    WildcardContact,
    #[error("Contact is not a SIP or SIPS URI")]
    ContactScheme,
    #[error("no Content-Length on a stream")]
    MissingContentLength,
}

/// Why bytes did not become a [`Message`] (or a string a [`Uri`], [`NameAddr`], [`Via`], [`CSeq`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not answerable: garbage, a malformed response, or a malformed value.
    #[error("{0}")]
    Invalid(Fault),
    /// A request that must be answered 400 Bad Request. `headers` are those that could be read.
    #[error("bad request: {fault}")]
    BadRequest { fault: Fault, headers: Headers },
    /// A request in another SIP version: answer 505 Version Not Supported (RFC 3261 §21.5.6).
    #[error("SIP version {version:?} not supported")]
    VersionNotSupported { version: String, headers: Headers },
}

impl ParseError {
    /// For a request that could not be accepted: the status to answer (400 Bad Request, 505
    /// Version Not Supported) and the raw headers needed to build that response statelessly
    /// (Via(s), From, To, Call-ID, CSeq as found, if any). `None` for responses, for garbage,
    /// and for requests without any Via, to which no response can be routed (§18.2.2): those
    /// are dropped silently.
    pub fn reply(&self) -> Option<(u16, &Headers)> {
        let (status, headers) = match self {
            ParseError::Invalid(_) => return None,
            ParseError::BadRequest { headers, .. } => (400, headers),
            ParseError::VersionNotSupported { headers, .. } => (505, headers),
        };
        headers.contains("via").then_some((status, headers))
    }

    /// The reason phrase of the answer [`ParseError::reply`] gives: the standard one with the
    /// fault named, e.g. `Bad Request (missing Contact header)`, so a peer's log says why.
    pub fn reason(&self) -> String {
        match self {
            ParseError::VersionNotSupported { .. } => Response::reason_for(505).to_owned(),
            other => format!("{} ({})", Response::reason_for(400), other.fault()),
        }
    }

    /// What is wrong (a version mismatch reports [`Fault::Version`]).
    pub fn fault(&self) -> Fault {
        match self {
            ParseError::Invalid(fault) | ParseError::BadRequest { fault, .. } => *fault,
            ParseError::VersionNotSupported { .. } => Fault::Version,
        }
    }
}

/// Parse one complete message (a UDP datagram or one frame from [`StreamFramer`]). Bytes after
/// the Content-Length-framed body are ignored (RFC 4475 §3.1.1.8 dblreq).
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    parser::parse(bytes, parser::Carrier::Datagram)
}

/// Parse one message framed from a TCP or TLS stream by [`StreamFramer`] (or the header
/// section of one it could not frame): as [`parse`], except that Content-Length is mandatory
/// (RFC 3261 §20.14).
pub fn parse_stream(bytes: &[u8]) -> Result<Message, ParseError> {
    parser::parse(bytes, parser::Carrier::Stream)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod torture;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn invite() -> Request {
        let mut headers = Headers::new();
        headers.push(
            "Via",
            Via::new("UDP", "192.0.2.10", Some(5060), "z9hG4bK776asdhds").to_string(),
        );
        headers.push("Max-Forwards", "70");
        headers.push(
            "From",
            "\"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774",
        );
        headers.push("To", "<sip:bob@biloxi.example.com>");
        headers.push("Call-ID", "a84b4c76e66710@pc33.atlanta.example.com");
        headers.push("CSeq", "314159 INVITE");
        headers.push("Contact", "<sip:alice@192.0.2.10:5060>");
        headers.push("Content-Type", "application/sdp");
        headers.push("Content-Length", "13");
        Request {
            method: Method::Invite,
            uri: Uri::parse("sip:bob@biloxi.example.com").unwrap(),
            headers,
            body: b"v=0\r\ns=-\r\nt=0".to_vec(),
        }
    }

    fn ok_response() -> Response {
        let mut headers = invite().headers;
        headers.remove("max-forwards");
        headers.set("To", "<sip:bob@biloxi.example.com>;tag=a6c85cf");
        headers.set("Content-Length", "0");
        Response {
            status: 200,
            reason: Response::reason_for(200).to_owned(),
            headers,
            body: Vec::new(),
        }
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        assert_eq!(Method::from_token("INVITE"), Method::Invite);
        assert_eq!(Method::from_token("invite"), Method::Other("invite".into()));
        for method in [
            Method::Ack,
            Method::Prack,
            Method::Publish,
            Method::Other("FOO".into()),
        ] {
            assert_eq!(Method::from_token(method.as_str()), method);
        }
        assert_eq!(Method::Register.to_string(), "REGISTER");
    }

    #[test]
    fn built_request_and_response_round_trip() {
        let request = invite();
        assert_eq!(
            parse(&request.to_bytes()).unwrap(),
            Message::Request(request)
        );
        let response = ok_response();
        assert_eq!(
            parse(&response.to_bytes()).unwrap(),
            Message::Response(response)
        );
    }

    #[test]
    fn content_length_is_recomputed_in_place_or_appended() {
        let mut request = invite();
        request.headers.push("l", "999");
        request.body = b"hello".to_vec();
        let text = String::from_utf8(request.to_bytes()).unwrap();
        assert!(text.contains("\r\nContent-Length: 5\r\n"));
        assert!(!text.contains("999"));
        assert!(text.ends_with("\r\n\r\nhello"));
        request.headers.remove("content-length");
        let text = String::from_utf8(request.to_bytes()).unwrap();
        assert!(text.ends_with("Content-Length: 5\r\n\r\nhello"));
    }

    #[test]
    fn serialized_values_cannot_inject_header_lines() {
        let mut request = invite();
        request
            .headers
            .push("Subject", "hi\r\nVia: SIP/2.0/UDP evil");
        let parsed = parse(&request.to_bytes()).unwrap();
        assert_eq!(parsed.headers().values("via").len(), 1);
    }

    #[test]
    fn an_independent_parser_accepts_what_we_serialize() {
        use rsip::prelude::*;
        let request = invite();
        let theirs = rsip::SipMessage::try_from(request.to_bytes().as_slice()).unwrap();
        let rsip::SipMessage::Request(theirs) = theirs else {
            panic!("not a request")
        };
        assert_eq!(theirs.method().to_string(), "INVITE");
        assert_eq!(
            theirs.call_id_header().unwrap().value(),
            "a84b4c76e66710@pc33.atlanta.example.com"
        );
        assert_eq!(theirs.body(), &request.body);
        let theirs = rsip::SipMessage::try_from(ok_response().to_bytes().as_slice()).unwrap();
        let rsip::SipMessage::Response(theirs) = theirs else {
            panic!("not a response")
        };
        assert_eq!(theirs.status_code().code(), 200);
    }

    #[test]
    fn reason_phrases_are_the_standard_ones() {
        assert_eq!(Response::reason_for(180), "Ringing");
        assert_eq!(Response::reason_for(481), "Call/Transaction Does Not Exist");
        assert_eq!(Response::reason_for(505), "Version Not Supported");
        assert_eq!(Response::reason_for(599), "Server Failure");
    }

    fn bytes_of(request: &Request) -> String {
        String::from_utf8(request.to_bytes()).unwrap()
    }

    fn fault_of(text: &str) -> Fault {
        parse(text.as_bytes()).unwrap_err().fault()
    }

    #[test]
    fn leading_crlfs_and_bare_lf_line_ends_are_accepted() {
        let mut request = invite();
        request.body = b"no line ends".to_vec();
        request.headers.set("Content-Length", "12");
        let text = bytes_of(&request).replace("\r\n", "\n");
        let parsed = parse(format!("\r\n\r\n{text}").as_bytes()).unwrap();
        assert_eq!(parsed, Message::Request(request));
    }

    #[test]
    fn datagram_without_content_length_takes_the_rest_as_body() {
        let text = bytes_of(&invite()).replace("Content-Length: 13\r\n", "");
        let Message::Request(parsed) = parse(text.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(parsed.body, invite().body);
    }

    #[test]
    fn content_length_must_be_one_plain_number_within_the_datagram() {
        let text = bytes_of(&invite());
        assert_eq!(
            fault_of(&text.replace("Length: 13", "Length: 14")),
            Fault::TruncatedBody
        );
        assert_eq!(
            fault_of(&text.replace("Length: 13", "Length: -1")),
            Fault::ContentLength
        );
        assert_eq!(
            fault_of(&text.replace("Length: 13", "Length: 1 3")),
            Fault::ContentLength
        );
        assert_eq!(
            fault_of(&text.replace("Length: 13", "Length: 99999999999")),
            Fault::ContentLength
        );
        assert_eq!(
            fault_of(&text.replace("Content-Length: 13", "Content-Length: 13\r\nl: 13")),
            Fault::MultipleContentLength
        );
    }

    #[test]
    fn header_line_without_colon_is_a_bad_request() {
        let text = bytes_of(&invite()).replace("Max-Forwards: 70", "Foobar roobar");
        let error = parse(text.as_bytes()).unwrap_err();
        assert_eq!(error.fault(), Fault::HeaderLine);
        let (status, headers) = error.reply().unwrap();
        assert_eq!(
            (status, headers.call_id()),
            (400, Some("a84b4c76e66710@pc33.atlanta.example.com"))
        );
    }

    #[test]
    fn header_count_and_size_are_bounded() {
        let text = bytes_of(&invite());
        let many = "X-A: 1\r\n".repeat(parser::MAX_HEADERS + 1);
        let flood = text.replacen("Max-Forwards", &format!("{many}Max-Forwards"), 1);
        assert_eq!(fault_of(&flood), Fault::TooManyHeaders);
        let long = text.replacen(
            "Max-Forwards: 70",
            &format!("Max-Forwards: 70\r\nX-Long: {}", "a".repeat(9000)),
            1,
        );
        assert_eq!(fault_of(&long), Fault::LineTooLong);
        let folded = text.replacen(
            "Max-Forwards: 70",
            &format!("Max-Forwards: 70\r\nX-Long: a{}", "\r\n a".repeat(5000)),
            1,
        );
        assert_eq!(fault_of(&folded), Fault::LineTooLong);
    }

    #[test]
    fn single_value_headers_must_appear_once() {
        let text = bytes_of(&invite());
        assert_eq!(
            fault_of(&text.replace("Max-Forwards: 70", "Max-Forwards: 70\r\nMax-Forwards: 69")),
            Fault::MultipleValues("Max-Forwards")
        );
        assert_eq!(
            fault_of(&text.replace("Call-ID: a84", "Call-ID: x, a84")),
            Fault::MultipleValues("Call-ID")
        );
        assert_eq!(
            fault_of(&text.replace("Max-Forwards: 70", "Max-Forwards: seventy")),
            Fault::BadHeader("Max-Forwards")
        );
    }

    #[test]
    fn responses_are_never_answered() {
        let text = String::from_utf8(ok_response().to_bytes()).unwrap();
        for broken in [
            text.replace("SIP/2.0 200", "SIP/2.0 2000"),
            text.replace("SIP/2.0 200", "SIP/2.0 099"),
            text.replace("SIP/2.0 200", "SIP/3.0 200"),
            text.replace("CSeq: 314159 INVITE", "CSeq: x"),
            text.replace("Content-Length: 0", "Content-Length: 10"),
        ] {
            let error = parse(broken.as_bytes()).unwrap_err();
            assert_eq!(error.reply(), None, "{error}");
        }
    }

    #[test]
    fn garbage_is_dropped_silently() {
        for garbage in [
            &b""[..],
            b"\r\n\r\n",
            b"\x00\x01\x02",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(parse(garbage).unwrap_err().reply(), None);
        }
    }

    #[test]
    fn request_line_needs_exactly_three_single_space_separated_parts() {
        let text = bytes_of(&invite());
        assert_eq!(
            fault_of(&text.replacen("INVITE sip", "INVITE  sip", 1)),
            Fault::StartLine
        );
        assert_eq!(
            fault_of(&text.replacen(" SIP/2.0\r\n", "\r\n", 1)),
            Fault::StartLine
        );
        assert_eq!(
            fault_of(&text.replacen("INVITE sip", "INV\"TE sip", 1)),
            Fault::Method
        );
        assert_eq!(
            fault_of(&text.replacen("SIP/2.0\r\n", "SIP/2\r\n", 1)),
            Fault::Version
        );
        assert!(
            parse(
                text.replacen(" SIP/2.0\r\n", " SIP/2.0 \t\r\n", 1)
                    .as_bytes()
            )
            .is_ok()
        );
        assert!(parse(text.replacen(" SIP/2.0\r\n", " sip/2.0\r\n", 1).as_bytes()).is_ok());
    }

    #[test]
    fn control_characters_outside_quoted_pairs_are_bad_requests() {
        let text = bytes_of(&invite());
        for (hostile, fault) in [
            (
                text.replace("Call-ID: a84", "Call-ID: \u{0}a84"),
                Fault::ControlCharacter,
            ),
            (
                text.replace("\"Alice\"", "\"Al\u{1}ice\""),
                Fault::ControlCharacter,
            ),
            (
                text.replace("Max-Forwards: 70", "Max-Forwards: 70\u{7f}"),
                Fault::ControlCharacter,
            ),
            // The start line is judged first.
            (
                text.replace("INVITE sip:bob", "INVITE sip:\u{8}bob"),
                Fault::RequestUri,
            ),
            (
                text.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\u{0}\n"),
                Fault::BareCr,
            ),
            (
                text.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\rX-A: 1\r\n"),
                Fault::BareCr,
            ),
            (
                text.replace(
                    "Max-Forwards: 70\r\n",
                    "Max-Forwards: 70\nVia: SIP/2.0/UDP evil\r\n",
                ),
                Fault::MixedLineEnds,
            ),
        ] {
            let error = parse(hostile.as_bytes()).unwrap_err();
            assert_eq!(error.fault(), fault, "{hostile:?}");
            let (status, _) = error.reply().unwrap();
            assert_eq!(status, 400);
        }
        // RFC 4475 §3.1.1.2: a quoted-pair may escape a control character.
        let escaped = text.replace("\"Alice\"", "\"BEL:\\\u{7} NUL:\\\u{0}\"");
        let Message::Request(request) = parse(escaped.as_bytes()).unwrap() else {
            panic!()
        };
        // Echoed back, the NUL does not reach the wire.
        let mut echo = ok_response();
        echo.headers
            .set("From", request.headers.get("from").unwrap());
        assert!(!echo.to_bytes().contains(&0));
    }

    #[test]
    fn invite_contact_rules() {
        let text = bytes_of(&invite());
        let contact = "Contact: <sip:alice@192.0.2.10:5060>\r\n";
        for (hostile, fault) in [
            (text.replace(contact, ""), Fault::MissingHeader("Contact")),
            (
                text.replace(
                    contact,
                    "Contact: <sip:a@192.0.2.10>, <sip:b@192.0.2.11>\r\n",
                ),
                Fault::MultipleValues("Contact"),
            ),
            (
                text.replace(contact, &format!("{contact}{contact}")),
                Fault::MultipleValues("Contact"),
            ),
            (
                text.replace(contact, "Contact: *\r\n"),
                Fault::WildcardContact,
            ),
            (
                text.replace(contact, "Contact: <tel:+15551234567>\r\n"),
                Fault::ContactScheme,
            ),
            (
                text.replace(contact, "Contact: <http://evil.example.com/>\r\n"),
                Fault::ContactScheme,
            ),
            (
                text.replace(contact, "Contact: <sip:a@>\r\n"),
                Fault::BadHeader("Contact"),
            ),
        ] {
            let error = parse(hostile.as_bytes()).unwrap_err();
            assert_eq!(error.fault(), fault, "{hostile}");
            assert_eq!(error.reply().map(|(s, _)| s), Some(400));
        }
        // Quoted commas are one Contact; SIPS is fine.
        let quoted = text.replace(
            contact,
            "Contact: \"Doe, Jane\" <sips:alice@192.0.2.10>\r\n",
        );
        assert!(parse(quoted.as_bytes()).is_ok());
        // A re-INVITE may leave Contact out (§12.2.1.1 SHOULD); so may an RFC 2543 peer.
        let reinvite = text.replace(contact, "").replace(
            "<sip:bob@biloxi.example.com>",
            "<sip:bob@biloxi.example.com>;tag=x",
        );
        assert!(parse(reinvite.as_bytes()).is_ok());
        let rfc2543 = text
            .replace(contact, "")
            .replace(";branch=z9hG4bK776asdhds", "");
        assert!(parse(rfc2543.as_bytes()).is_ok());
        // `*` is for REGISTER only.
        let options = text
            .replace("INVITE", "OPTIONS")
            .replace(contact, "Contact: *\r\n");
        assert_eq!(fault_of(&options), Fault::WildcardContact);
    }

    #[test]
    fn streams_need_content_length_and_reasons_name_the_fault() {
        let text = bytes_of(&invite()).replace("Content-Length: 13\r\n", "");
        assert!(parse(text.as_bytes()).is_ok());
        let error = parse_stream(text.as_bytes()).unwrap_err();
        assert_eq!(error.fault(), Fault::MissingContentLength);
        assert_eq!(
            error.reason(),
            "Bad Request (no Content-Length on a stream)"
        );
        assert!(parse_stream(bytes_of(&invite()).as_bytes()).is_ok());
        let no_contact =
            bytes_of(&invite()).replace("Contact: <sip:alice@192.0.2.10:5060>\r\n", "");
        assert_eq!(
            parse(no_contact.as_bytes()).unwrap_err().reason(),
            "Bad Request (missing Contact header)"
        );
    }
}
