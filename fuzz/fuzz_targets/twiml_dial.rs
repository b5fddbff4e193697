//! Fuzz target: the TwiML an agent sends through the call REST (`Twiml=`), read by
//! `earshot::twilio::twiml::parse_dial`, and the destination it yields as earshot then checks it
//! (`earshot::config::dial_allow`).
//!
//! Whatever the document, nothing may panic; a destination that parses and passes the check
//! must survive the round trip through the `<Dial>` TwiML earshot answers Twilio with.

#![no_main]

use earshot::config::DialPattern;
use earshot::config::dial_allow::{allowed, check_target};
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
    let _ = allowed(&patterns, &to);
    if check_target(&to).is_ok() {
        assert_eq!(parse_dial(&dial(&to)).as_deref(), Ok(to.as_str()));
    }
});
