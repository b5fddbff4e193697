//! The requests the endpoint sends, as a UAC: a call's BYE (§15.1.1), REFER and NOTIFY (RFC
//! 3515, answered in `transfer`) and the trunks' REGISTER
//! (§10.2), each in a non-INVITE client transaction (§17.1.2) keyed by its branch, and the
//! responses that come back for them (§8.1.3, §17.1.3 matching by the top Via's branch).
//! `set_trunks` is here; what a registration does with a response is `sip::registration`'s.
//! REGISTER transactions name their registration by its Call-ID and CSeq, never by position,
//! so a reload that reorders or removes trunks cannot hand a response to the wrong one.

use std::time::Instant;

use super::{CallRef, Endpoint, Event, Transmit};
use crate::sip::dialog::Flow;
use crate::sip::message::{Headers, Request, Response};
use crate::sip::registration::{Registration, TrunkRegistration};
use crate::sip::transaction::{Action, ClientNonInvite, Delivery};

/// Why we sent a request, so its response reaches the right place.
#[derive(Debug, Clone)]
pub(super) enum Purpose {
    Bye(CallRef),
    /// Our REFER in the call's dialog (RFC 3515).
    Refer(CallRef),
    /// A NOTIFY of the subscription a peer's REFER made: its answer lets the next one go.
    Notify(CallRef),
    /// The registration's Call-ID and the request's CSeq.
    Register {
        call_id: String,
        cseq: u32,
    },
    /// The BYE of a dialog no call owns (a forked 2xx, or one that crossed our CANCEL): its
    /// answer changes nothing.
    Stray,
}

#[derive(Debug)]
pub(super) struct ClientEntry {
    pub(super) tx: ClientNonInvite,
    flow: Flow,
    purpose: Purpose,
}

impl Endpoint {
    /// Replaces the trunks to register with (startup and reload). Existing bindings of trunks
    /// that stay are kept; removed trunks are unregistered (Expires: 0), then dropped.
    pub fn set_trunks(&mut self, now: Instant, trunks: Vec<TrunkRegistration>) {
        let mut keep = Vec::new();
        for mut reg in std::mem::take(&mut self.registrations) {
            let same = !reg.retired
                && trunks.iter().any(|t| {
                    t.name == reg.trunk.name
                        && t.registrar == reg.trunk.registrar
                        && t.username == reg.trunk.username
                });
            if same {
                keep.push(reg);
            } else {
                reg.retired = true;
                reg.start_unregister(now);
                self.registrations.push(reg);
            }
        }
        for trunk in trunks {
            if let Some(pos) = keep.iter().position(|r| r.trunk.name == trunk.name) {
                let mut reg = keep.swap_remove(pos);
                reg.trunk = trunk;
                reg.restart_if_failed(now);
                self.registrations.push(reg);
            } else {
                let call_id = self.random_token(16);
                let tag = self.random_token(8);
                self.registrations
                    .push(Registration::new(trunk, now, call_id, tag));
            }
        }
        self.drive_registrations(now);
    }

    /// Shutdown: unregisters every trunk.
    pub(super) fn unregister_all(&mut self, now: Instant) {
        for reg in &mut self.registrations {
            reg.start_unregister(now);
        }
        self.drive_registrations(now);
    }

    /// True while an unregistration waits for its answer.
    pub(super) fn unregistering(&self) -> bool {
        self.registrations
            .iter()
            .any(Registration::is_unregistering)
    }

    fn registration(&mut self, call_id: &str) -> Option<&mut Registration> {
        self.registrations
            .iter_mut()
            .find(|r| r.call_id() == call_id)
    }

    /// A response from the network: to the client transaction its top Via's branch names, or
    /// dropped.
    pub(super) fn handle_response(&mut self, now: Instant, resp: Response) {
        let Some(branch) = resp
            .headers
            .via()
            .and_then(|v| v.branch().map(str::to_string))
        else {
            self.stats.dropped += 1;
            return;
        };
        if self.outbound_response(now, &branch, &resp) || self.refresh_response(now, &branch, &resp)
        {
            return;
        }
        let Some(entry) = self.client.get_mut(&branch) else {
            // bcast.dat, strays, retransmitted 200s of finished transactions.
            self.stats.dropped += 1;
            return;
        };
        if entry.tx.on_response(now, resp.status) == Delivery::Absorb || resp.status < 200 {
            return;
        }
        let purpose = entry.purpose.clone();
        if entry.tx.is_terminated() {
            self.client.remove(&branch);
        }
        match purpose {
            Purpose::Bye(call) => {
                self.calls.remove(&call);
            }
            Purpose::Refer(call) => self.refer_answered(now, call, resp.status),
            Purpose::Notify(call) => self.notify_answered(now, call),
            Purpose::Stray => {}
            Purpose::Register { call_id, cseq } => {
                // A registration dropped since, or an answer to a REGISTER superseded by a
                // newer one (an unregistration sent while it was in flight).
                let Some(reg) = self
                    .registration(&call_id)
                    .filter(|reg| reg.is_current(cseq))
                else {
                    self.stats.dropped += 1;
                    return;
                };
                let outcome = reg.on_response(now, &resp);
                let trunk = reg.trunk.name.clone();
                self.events
                    .push_back(Event::Registration { trunk, outcome });
                self.drive_registrations(now);
            }
        }
    }

    pub(super) fn client_timeouts(&mut self, now: Instant) {
        let mut finished = Vec::new();
        for (branch, entry) in &mut self.client {
            while let Some(action) = entry.tx.handle_timeout(now) {
                match action {
                    Action::Retransmit(bytes) => {
                        self.transmits.push_back(Transmit {
                            flow: entry.flow,
                            bytes,
                        });
                    }
                    Action::TimedOut => {
                        finished.push((branch.clone(), Some(entry.purpose.clone())))
                    }
                    _ => finished.push((branch.clone(), None)),
                }
            }
        }
        for (branch, timed_out) in finished {
            self.client.remove(&branch);
            match timed_out {
                Some(Purpose::Bye(call)) => {
                    self.calls.remove(&call);
                }
                // §8.1.3.1: a timeout is a 408.
                Some(Purpose::Refer(call)) => self.refer_answered(now, call, 408),
                Some(Purpose::Notify(call)) => self.notify_answered(now, call),
                Some(Purpose::Register { call_id, cseq }) => {
                    if let Some(reg) = self
                        .registration(&call_id)
                        .filter(|reg| reg.is_current(cseq))
                    {
                        let outcome = reg.on_timeout(now);
                        let trunk = reg.trunk.name.clone();
                        self.events
                            .push_back(Event::Registration { trunk, outcome });
                    }
                }
                Some(Purpose::Stray) | None => {}
            }
        }
    }

    /// Sends the REGISTER of every registration that is due (while shutting down, only
    /// unregistrations), abandons unregistrations past their deadline, and drops retired
    /// registrations that are finished.
    pub(super) fn drive_registrations(&mut self, now: Instant) {
        for idx in 0..self.registrations.len() {
            let Some(reg) = self.registrations.get_mut(idx) else {
                continue;
            };
            if let Some(outcome) = reg.expire(now) {
                let trunk = reg.trunk.name.clone();
                self.events
                    .push_back(Event::Registration { trunk, outcome });
                continue;
            }
            if reg.is_due(now) && (self.accepting || reg.is_unregistering()) {
                self.send_register(now, idx);
            }
        }
        self.registrations
            .retain(|r| !(r.retired && r.is_finished()));
    }

    fn send_register(&mut self, now: Instant, idx: usize) {
        let advertised = self.config.advertised.to_string();
        let cnonce = self.random_token(16);
        let Some(reg) = self.registrations.get_mut(idx) else {
            return;
        };
        let flow = Flow {
            transport: reg.trunk.transport,
            remote: reg.trunk.registrar,
        };
        let mut request = reg.request(&advertised, &cnonce);
        request
            .headers
            .push("User-Agent", self.config.user_agent.clone());
        let purpose = Purpose::Register {
            call_id: reg.call_id().to_string(),
            cseq: request.headers.cseq().map_or(0, |c| c.seq),
        };
        self.send_request(now, flow, request, purpose);
    }

    /// Adds our Via and starts a non-INVITE client transaction.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        flow: Flow,
        mut request: Request,
        purpose: Purpose,
    ) {
        let branch = self.stamp_via(flow, &mut request);
        let bytes = request.to_bytes();
        let tx = ClientNonInvite::new(now, bytes.clone(), flow.transport.is_reliable());
        self.client
            .insert(branch, ClientEntry { tx, flow, purpose });
        self.send(flow, bytes);
    }

    /// Puts our Via, with a fresh branch, on top of `request`; returns the branch.
    pub(super) fn stamp_via(&mut self, flow: Flow, request: &mut Request) -> String {
        let branch = format!("z9hG4bK{}", self.random_token(16));
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            flow.transport.via_token(),
            self.config.advertised
        );
        let mut headers = Headers::default();
        headers.push("Via", via);
        for (name, value) in request.headers.iter() {
            headers.push(name, value);
        }
        request.headers = headers;
        branch
    }
}

#[cfg(test)]
#[path = "uac_tests.rs"]
mod tests;
