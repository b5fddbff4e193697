//! IO drivers: thin loops that move bytes between sockets and the sans-IO cores.
//!
//! [`sip`] runs the SIP transport (UDP and TCP on `[sip].listen`) around
//! [`crate::sip::endpoint::Endpoint`]; [`rtp`] hands out RTP/RTCP socket pairs from
//! `[rtp].ports`; [`twilio`] serves Twilio's webhooks and media-stream WebSockets around
//! [`crate::twilio::stream::Stream`].
//! [`sip_leg`] is a SIP call's caller leg (its RTP sockets and session); [`sip_dial`] turns a
//! dial request into a placed call (`[calls].outbound_allow`, trunks); [`sip_bridge`] bridges a
//! caller whose side does not take REFER to a transfer target through a far leg; [`agent`] is the
//! WebSocket client of voice agents; [`tls`] the TLS client settings it and the webhooks share.
//! The process clock is [`crate::clock`].

pub mod agent;
pub mod rtp;
pub mod sip;
pub mod sip_bridge;
pub mod sip_dial;
pub mod sip_leg;
pub mod sip_referred;
pub mod tcp;
pub mod tls;
pub mod twilio;
