#!/usr/bin/env python3
"""Writes the hostile INVITEs of this directory (see README.md). Run from anywhere; rewrites
every *.sip file. Placeholders the test fills per send: $TARGET (earshot's SIP address),
$LOCAL (the sender's address), $ID (unique per send: branch, tag, Call-ID)."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))

SDP = (b"v=0\r\n"
       b"o=caller 1 1 IN IP4 127.0.0.1\r\n"
       b"s=-\r\n"
       b"c=IN IP4 127.0.0.1\r\n"
       b"t=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0 8\r\n"
       b"a=rtpmap:0 PCMU/8000\r\n"
       b"a=rtpmap:8 PCMA/8000\r\n"
       b"a=sendrecv\r\n")

HEADERS = [
    b"Via: SIP/2.0/UDP $LOCAL;branch=z9hG4bK$ID;rport",
    b"Max-Forwards: 70",
    b"From: <sip:caller@$LOCAL>;tag=$ID",
    b"To: <sip:earshot@$TARGET>",
    b"Call-ID: $ID",
    b"CSeq: 1 INVITE",
    b"Contact: <sip:caller@$LOCAL>",
    b"Content-Type: application/sdp",
]


def invite(headers=None, body=SDP, length=None, start=b"INVITE sip:earshot@$TARGET SIP/2.0",
           sep=b"\r\n", blank=b"\r\n"):
    headers = HEADERS if headers is None else headers
    length = len(body) if length is None else length
    lines = [start] + headers + [b"Content-Length: " + str(length).encode()]
    return sep.join(lines) + sep + blank + body


def replace_header(old, new):
    return [new if h.startswith(old) else h for h in HEADERS if not (h.startswith(old) and new is None)]


def sdp(old, new):
    assert old in SDP, old
    return SDP.replace(old, new)


MESSAGES = {
    # Control and NUL bytes in header values.
    "01-nul-in-call-id": invite(replace_header(b"Call-ID", b"Call-ID: $ID\x00@evil")),
    "02-ctl-in-from-display-name": invite(
        replace_header(b"From", b"From: Mal\x01lory <sip:caller@$LOCAL>;tag=$ID")),
    "03-nul-in-user-agent": invite(HEADERS + [b"User-Agent: pwn\x00\x00\x00"]),
    "04-escape-sequence-in-subject": invite(HEADERS + [b"Subject: \x1b[2J\x1b[31mhi"]),
    "05-del-in-to": invite(replace_header(b"To", b"To: <sip:earshot@$TARGET>\x7f")),
    # Line-ending framing.
    "06-cr-nul-line-end": invite(HEADERS[:1] + [b"Max-Forwards: 70\r\x00"] + HEADERS[2:]),
    "07-bare-cr-header-separator": invite(
        HEADERS[:1] + [b"Max-Forwards: 70\rX-Injected: yes"] + HEADERS[2:]),
    "08-bare-lf-smuggles-a-via": invite(
        HEADERS[:1] + [b"Max-Forwards: 70\nVia: SIP/2.0/UDP 192.0.2.66;branch=z9hG4bKevil"]
        + HEADERS[2:]),
    "09-fold-before-first-header": invite([b" folded: into the start line"] + HEADERS),
    "10-fold-carrying-bare-cr": invite(HEADERS + [b"Subject: one", b" two\rthree"]),
    "11-no-empty-line-before-body": invite(blank=b""),
    "12-body-shorter-than-content-length": invite(length=len(SDP) + 200),
    "13-content-length-cuts-the-sdp": invite(body=SDP + b"m=audio 4002 RTP/AVP 0\r\n",
                                             length=len(SDP) + len(b"m=aud")),
    "14-two-content-lengths": invite(HEADERS + [b"Content-Length: 5"]),
    "15-content-length-overflow": invite(length=4294967296 + len(SDP)),
    "16-header-name-of-9000-bytes": invite(HEADERS + [b"X-" + b"A" * 9000 + b": 1"]),
    # Control and NUL bytes in SDP.
    "17-nul-in-sdp-attribute": invite(body=sdp(b"a=rtpmap:8 PCMA/8000\r\n",
                                               b"a=rtpmap:8 PCMA/8000\x00AAAA\r\n")),
    "18-sdp-ends-in-bare-cr": invite(body=SDP[:-2] + b"\r"),
    "19-bare-cr-inside-sdp": invite(body=sdp(b"a=sendrecv\r\n", b"a=sendrecv\ra=inactive\r\n")),
    "20-ctl-in-sdp-session-name": invite(body=sdp(b"s=-", b"s=\x07\x08\x1b")),
    # SDP connection lines that are not addresses earshot can use.
    "21-c-ip4-octet-999": invite(body=sdp(b"c=IN IP4 127.0.0.1", b"c=IN IP4 999.1.1.1")),
    "22-c-ip4-punctuation": invite(body=sdp(b"c=IN IP4 127.0.0.1", b"c=IN IP4 ;;;")),
    "23-c-ip6-with-ipv4-address": invite(body=sdp(b"c=IN IP4 127.0.0.1", b"c=IN IP6 1.2.3.4")),
    "24-c-non-numeric-ttl": invite(body=sdp(b"c=IN IP4 127.0.0.1", b"c=IN IP4 127.0.0.1/x")),
    "25-c-missing": invite(body=sdp(b"c=IN IP4 127.0.0.1\r\n", b"")),
    "26-c-host-name": invite(body=sdp(b"c=IN IP4 127.0.0.1", b"c=IN IP4 media.example.com")),
    "27-c-multicast": invite(body=sdp(b"c=IN IP4 127.0.0.1", b"c=IN IP4 224.2.1.1/127")),
    "28-payload-type-overflow": invite(body=sdp(b"RTP/AVP 0 8", b"RTP/AVP 4294967296")),
    # RFC 3261 Contact rules for a dialog-creating INVITE.
    "29-contact-missing": invite(replace_header(b"Contact", None)),
    "30-contact-two-values": invite(replace_header(
        b"Contact", b"Contact: <sip:caller@$LOCAL>, <sip:other@192.0.2.66>")),
    "31-contact-two-headers": invite(HEADERS + [b"Contact: <sip:other@192.0.2.66>"]),
    "32-contact-wildcard": invite(replace_header(b"Contact", b"Contact: *")),
    "33-contact-tel-uri": invite(replace_header(b"Contact", b"Contact: <tel:+15555550100>")),
    # Other edges of the published bugs.
    "34-request-uri-ends-in-percent": invite(start=b"INVITE sip:earshot%@$TARGET SIP/2.0"),
    "35-xml-body": invite(replace_header(b"Content-Type", b"Content-Type: application/pidf+xml"),
                          body=b"<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x \"&x;\">]><a>&x;</a>"),
    "36-from-tag-of-9000-bytes": invite(
        replace_header(b"From", b"From: <sip:caller@$LOCAL>;tag=$ID" + b"9" * 9000)),
}

if __name__ == "__main__":
    for old in os.listdir(HERE):
        if old.endswith(".sip"):
            os.remove(os.path.join(HERE, old))
    for name, data in MESSAGES.items():
        with open(os.path.join(HERE, name + ".sip"), "wb") as f:
            f.write(data)
    print(len(MESSAGES), "messages")
