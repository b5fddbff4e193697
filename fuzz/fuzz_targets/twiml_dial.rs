//! Fuzz target: the TwiML an agent sends through the call REST (`Twiml=`), read by
//! `earshot::twilio::twiml::parse_dial`, and the destination it yields as earshot then reads it
//! (`earshot::config::destination`, the one parser of destinations).
//!
//! Whatever the document, nothing may panic; a destination that parses must survive the round
//! trip through the `<Dial>` TwiML earshot answers Twilio with.

#![no_main]

use earshot::config::destination::{DialPattern, DialTarget, allowed};
use earshot::twilio::twiml::{dial, parse_dial};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(to) = parse_dial(doc) else {
        return;
    };
    let patterns: Vec<DialPattern> = ["+1555*", "sip:*@*"]
        .into_iter()
        .filter_map(|p| DialPattern::parse(p).ok())
        .collect();
    if let Ok(target) = DialTarget::parse(&to) {
        let _ = allowed(&patterns, &target);
        assert_eq!(parse_dial(&dial(target.as_str())).as_deref(), Ok(to.as_str()));
    }
});
