//! RFC 3261 §12 dialogs, seen from the UAS that earshot is: the dialog identity, the route set
//! and remote target learned from the INVITE, and in-dialog requests built per §12.2.1.1.

use std::net::SocketAddr;

use super::message::{Headers, Method, NameAddr, Request, Uri, Via};

/// How a message travels: over the UDP socket, or on one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// A TCP connection by its driver-assigned id; `None` asks the driver to open (or reuse) a
    /// connection to the destination.
    Tcp(Option<ConnId>),
}

impl Transport {
    /// RFC 3261 §17: reliable transports need no retransmissions.
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp(_))
    }

    /// The transport token used in Via.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp(_) => "TCP",
        }
    }
}

/// Identifies one TCP connection of the transport driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub transport: Transport,
    /// The peer's address (source of what we received, destination of what we send).
    pub remote: SocketAddr,
}

/// The dialog identity of §12: Call-ID plus both tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

/// A dialog created by an INVITE that earshot answered (§12.1.1).
#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    /// Our party: the INVITE's To, with our tag.
    pub local: NameAddr,
    /// The caller: the INVITE's From.
    pub remote: NameAddr,
    /// The caller's Contact: where in-dialog requests go when there is no route set.
    pub remote_target: Option<Uri>,
    /// Record-Route values of the INVITE, in order (§12.1.1: the UAS keeps them as received).
    pub route_set: Vec<String>,
    /// The last CSeq we used; the first in-dialog request from us uses a fresh number.
    pub local_cseq: u32,
    /// The highest CSeq seen from the caller; lower ones are out of order (§12.2.2, 500).
    pub remote_cseq: u32,
    /// The flow the INVITE arrived on; in-dialog requests reuse it where they can.
    pub flow: Flow,
}

impl Dialog {
    /// Builds the UAS dialog of §12.1.1 from the INVITE and the To tag we chose.
    pub fn from_invite(
        invite: &Request,
        local_tag: &str,
        flow: Flow,
        first_cseq: u32,
    ) -> Option<Self> {
        let headers = &invite.headers;
        let call_id = headers.call_id()?.to_string();
        let remote = headers.from()?;
        let remote_tag = remote.tag().unwrap_or_default().to_string();
        let local = headers.to()?.with_tag(local_tag);
        let route_set = headers
            .values("record-route")
            .into_iter()
            .map(str::to_string)
            .collect();
        Some(Self {
            id: DialogId {
                call_id,
                local_tag: local_tag.to_string(),
                remote_tag,
            },
            local,
            remote,
            remote_target: headers.contact().map(|c| c.uri),
            route_set,
            local_cseq: first_cseq,
            remote_cseq: headers.cseq().map_or(0, |c| c.seq),
            flow,
        })
    }

    /// §12.2.1.1: a request within the dialog. The caller adds the Via.
    pub fn request(&mut self, method: Method) -> Request {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        let uri = self
            .remote_target
            .clone()
            .unwrap_or_else(|| self.remote.uri.clone());
        let mut headers = Headers::default();
        for route in &self.route_set {
            headers.push("Route", route.clone());
        }
        headers.push("Max-Forwards", "70");
        headers.push("From", self.local.to_string());
        headers.push("To", self.remote.to_string());
        headers.push("Call-ID", self.id.call_id.clone());
        headers.push("CSeq", format!("{} {}", self.local_cseq, method));
        Request {
            method,
            uri,
            headers,
            body: Vec::new(),
        }
    }

    /// §13.2.2.4: the ACK for a 2xx to our re-INVITE with CSeq `cseq`, built like any request
    /// of the dialog but with the INVITE's sequence number. The caller adds the Via.
    pub fn ack(&self, cseq: u32) -> Request {
        let mut clone = self.clone();
        clone.local_cseq = cseq.wrapping_sub(1);
        clone.request(Method::Ack)
    }

    /// Where an in-dialog request goes: the first route (loose routing), else the remote
    /// target, when either names an IP address; otherwise back along the INVITE's flow.
    pub fn next_hop(&self) -> Flow {
        let first_route = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .map(|r| r.uri);
        let target = first_route.or_else(|| self.remote_target.clone());
        let addr = target.and_then(|uri| {
            let ip = uri.host.parse().ok()?;
            Some(SocketAddr::new(ip, uri.port.unwrap_or(5060)))
        });
        match self.flow.transport {
            // A TCP dialog keeps using its connection: the peer may not accept new ones.
            Transport::Tcp(_) => self.flow,
            Transport::Udp => Flow {
                transport: Transport::Udp,
                remote: addr.unwrap_or(self.flow.remote),
            },
        }
    }
}

/// §18.2.2: where a response to a request with this top Via goes, having arrived on `flow`.
pub fn response_destination(via: Option<&Via>, flow: Flow) -> Flow {
    if flow.transport.is_reliable() {
        return flow;
    }
    let Some(via) = via else { return flow };
    let port = match via.rport() {
        // RFC 3581 §4: rport means "send to the source port".
        Some(_) => flow.remote.port(),
        None => via.port.unwrap_or(5060),
    };
    // The received address is the source address whenever it differs from sent-by.
    Flow {
        transport: flow.transport,
        remote: SocketAddr::new(flow.remote.ip(), port),
    }
}
