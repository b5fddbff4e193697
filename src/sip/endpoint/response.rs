//! The one way the endpoint builds a response, whatever sends it afterwards (statelessly, a
//! server transaction, or a call's INVITE transaction).
//!
//! RFC 3261 §8.2.6.2: a UAS response copies the request's Via, From, To, Call-ID and CSeq, and
//! adds a To tag to a request that had none, except to 100 Trying. What a caller adds on top
//! (Allow for 405, Accept for 415, Unsupported for 420, the Record-Route set and Contact of a
//! dialog-creating response per §12.1.1, an SDP body) goes through the same builder. This
//! module decides no status and sends nothing.
//!
//! §8.2.7: a response sent statelessly takes a To tag derived from the request
//! ([`stateless_tag`]), so a retransmitted request gets the very same response.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::ACCEPT;
use crate::sip::message::{Headers, Response};

/// A response under construction, from the request's headers to [`ResponseBuilder::build`].
#[derive(Debug)]
pub(super) struct ResponseBuilder {
    response: Response,
}

impl ResponseBuilder {
    /// §8.2.6.2: `status` with the request's Via, From, To, Call-ID and CSeq, as far as they
    /// could be read (a request refused by the parser still has some). `to_tag` goes into To
    /// when the status is above 100 and the request's To has no tag of its own.
    pub(super) fn new(request: &Headers, status: u16, to_tag: Option<String>) -> Self {
        let mut headers = Headers::default();
        for name in ["via", "from", "to", "call-id", "cseq"] {
            for value in request.get_all(name) {
                headers.push(canonical_name(name), value);
            }
        }
        if let (Some(tag), true) = (to_tag, status > 100)
            && let Some(to) = request.to()
            && to.tag().is_none()
        {
            headers.set("To", to.with_tag(&tag).to_string());
        }
        Self {
            response: Response {
                status,
                reason: Response::reason_for(status).to_string(),
                headers,
                body: Vec::new(),
            },
        }
    }

    /// Replaces the standard reason phrase, to name what was wrong with the request.
    pub(super) fn reason(mut self, reason: impl Into<String>) -> Self {
        self.response.reason = reason.into();
        self
    }

    /// Appends one header line, after those already there.
    pub(super) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.response.headers.push(name, value);
        self
    }

    /// An SDP offer or answer as the body (RFC 3264), with its Content-Type.
    pub(super) fn sdp(mut self, body: String) -> Self {
        self.response.headers.push("Content-Type", ACCEPT);
        self.response.body = body.into_bytes();
        self
    }

    pub(super) fn build(self) -> Response {
        self.response
    }
}

/// §8.2.6.2: whether a response with `status` needs a To tag of ours — a final or provisional
/// response (not 100) to a request whose To has no tag yet. The tag itself comes from the
/// endpoint's random source, or from the dialog the response belongs to.
pub(super) fn wants_to_tag(request: &Headers, status: u16) -> bool {
    let tagged = request.to().is_some_and(|to| to.tag().is_some());
    status > 100 && !tagged
}

/// §8.2.7: the To tag of a stateless response — the same for the same request (its Call-ID,
/// From tag, CSeq and top Via branch) and, keyed by `secret`, not guessable from outside.
pub(super) fn stateless_tag(secret: u64, request: &Headers) -> String {
    let mut hasher = DefaultHasher::new();
    secret.hash(&mut hasher);
    request.call_id().hash(&mut hasher);
    request
        .from()
        .and_then(|f| f.tag().map(str::to_owned))
        .hash(&mut hasher);
    request.cseq().map(|c| c.seq).hash(&mut hasher);
    request
        .via()
        .and_then(|v| v.branch().map(str::to_owned))
        .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn canonical_name(name: &str) -> &'static str {
    match name {
        "via" => "Via",
        "from" => "From",
        "to" => "To",
        "call-id" => "Call-ID",
        _ => "CSeq",
    }
}
