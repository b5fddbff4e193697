#!/usr/bin/env bash
# Builds the fuzz corpora's seeds from tests/data (nothing generated is committed):
#   fuzz/corpus/<target>/seed-*  for sip_message, sip_endpoint, sdp, sip_auth, twilio
# The RFC 4475 / RFC 5118 torture messages, a few hundred PROTOS c07-sip cases (extracted from
# tests/data/protos-c07-sip.tar.xz), the hostile INVITEs, scripted dialogs for the endpoint
# (INVITE → ACK → INFO DTMF → re-INVITE → BYE, multipart bodies, CANCEL, OPTIONS over TCP),
# digest challenges, and Twilio webhook forms, signature vectors and Media Streams messages.
#
#   fuzz/seed.sh [PROTOS_CASES]     (default 300; idempotent, existing seeds are rewritten)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python3 - "${1:-300}" <<'PY'
import base64, io, json, lzma, os, pathlib, struct, sys, tarfile

protos_cases = int(sys.argv[1])
data = pathlib.Path("tests/data")
corpus = pathlib.Path("fuzz/corpus")

def put(target, name, payload):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(payload)

def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()

# --- raw SIP messages: torture suites, hostile INVITEs, PROTOS ---------------------------
raw = {}
for suite in ("sip-rfc4475", "sip-rfc5118"):
    for f in sorted((data / suite).glob("*.dat")):
        raw[f"{suite}-{f.stem}"] = f.read_bytes()
for f in sorted((data / "hostile-invites").glob("*.sip")):
    text = f.read_bytes()
    for key, value in ((b"$TARGET", b"127.0.0.1:5060"), (b"$LOCAL", b"127.0.0.1:5070"),
                       (b"$ID", f.stem.encode())):
        text = text.replace(key, value)
    raw[f"hostile-{f.stem}"] = text
with tarfile.open(fileobj=io.BytesIO(lzma.decompress((data / "protos-c07-sip.tar.xz").read_bytes()))) as tar:
    members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
    step = max(1, len(members) // max(1, protos_cases))
    for m in members[::step][:protos_cases]:
        raw["protos-" + m.name.replace("/", "_")] = tar.extractfile(m).read()

for name, payload in raw.items():
    put("sip_message", name, payload)

# --- the endpoint: records of opcode, operands ---------------------------------------------
def dgram(payload, source=0, tcp=False):
    op = (source << 4) | (0x08 if tcp else 0)
    return bytes([op]) + struct.pack("<H", len(payload)) + payload
def wait(tenths):  return bytes([0x03, tenths])
def wait_s(secs):  return bytes([0x83, secs])
def answer(i=0, ring=0): return bytes([0x04 | (ring << 3), i])
def reject(i=0):   return bytes([0x05, i])
def hangup(i=0):   return bytes([0x06, i])
def closed(conn):  return bytes([0x07 | (conn << 4), 0])
def shutdown():    return bytes([0x07, 2])

SDP = "v=0\no=- 1 {v} IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 8 0 101\na=rtpmap:101 telephone-event/8000\n{dir}"
def sdp(v=1, direction=""):
    return SDP.format(v=v, dir=direction).replace("\n", "\r\n")

def invite(branch, call_id, body=None, ctype="application/sdp", transport="UDP"):
    body = sdp() if body is None else body
    return crlf(f"INVITE sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/{transport} 127.0.0.1:5070;branch={branch};rport\n"
                f"From: <sip:2000@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>\nCall-ID: {call_id}\n"
                f"CSeq: 1 INVITE\nContact: <sip:2000@127.0.0.1:5070>\nMax-Forwards: 70\n"
                f"Content-Type: {ctype}\nContent-Length: {len(body)}\n\n") + body.encode()

def in_dialog(method, cseq, branch, call_id, body="", ctype=None):
    head = (f"{method} sip:earshot@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\n"
            f"From: <sip:2000@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>;tag=$TAG\nCall-ID: {call_id}\n"
            f"CSeq: {cseq} {method}\nMax-Forwards: 70\n")
    if ctype:
        head += f"Content-Type: {ctype}\n"
    return crlf(head + f"Content-Length: {len(body)}\n\n") + body.encode()

def cancel(branch, call_id):
    return crlf(f"CANCEL sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\n"
                f"From: <sip:2000@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>\nCall-ID: {call_id}\n"
                f"CSeq: 1 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n")

def options(branch, transport="UDP"):
    return crlf(f"OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/{transport} 127.0.0.1:5070;branch={branch}\n"
                f"From: <sip:2000@127.0.0.1>;tag=o\nTo: <sip:127.0.0.1>\nCall-ID: opt-{branch}\n"
                f"CSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n")

MULTIPART = ("--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdp() +
             "\r\n--b1\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n\x01\x00\x49\x00\x00\x03\x02\x00\x07\r\n--b1--\r\n")
DTMF_RELAY = "Signal=5\r\nDuration=250\r\n"

full_call = (dgram(invite("z9hG4bK1", "c1")) + answer() + dgram(in_dialog("ACK", 1, "z9hG4bK1a", "c1"))
             + wait(2) + dgram(in_dialog("INFO", 2, "z9hG4bK1i", "c1", DTMF_RELAY, "application/dtmf-relay"))
             + dgram(in_dialog("INFO", 3, "z9hG4bK1j", "c1", "7", "application/dtmf"))
             + dgram(in_dialog("INVITE", 4, "z9hG4bK1r", "c1", sdp(2, "a=sendonly\n"), "application/sdp"))
             + dgram(in_dialog("ACK", 4, "z9hG4bK1s", "c1")) + wait(5)
             + dgram(in_dialog("BYE", 5, "z9hG4bK1b", "c1")) + wait_s(40))
put("sip_endpoint", "dialog-invite-ack-info-reinvite-bye", full_call)
put("sip_endpoint", "dialog-multipart", dgram(invite("z9hG4bK2", "c2", MULTIPART, "multipart/mixed;boundary=b1"))
    + answer(0, 3) + wait(5) + dgram(in_dialog("ACK", 1, "z9hG4bK2a", "c2")) + hangup() + wait_s(5))
put("sip_endpoint", "dialog-cancel", dgram(invite("z9hG4bK3", "c3")) + answer(0, 20) + wait(1)
    + dgram(cancel("z9hG4bK3", "c3")) + wait_s(35))
put("sip_endpoint", "dialog-no-ack", dgram(invite("z9hG4bK4", "c4")) + answer() + wait_s(40))
put("sip_endpoint", "dialog-busy-and-reject", dgram(invite("z9hG4bK5", "c5")) + dgram(invite("z9hG4bK6", "c6", transport="TCP"), 1, True)
    + dgram(invite("z9hG4bK7", "c7"), 2) + dgram(invite("z9hG4bK8", "c8")) + reject(1) + answer(0) + closed(1) + shutdown()
    + dgram(options("z9hG4bK9")) + wait_s(40))
put("sip_endpoint", "dialog-late-offer", dgram(invite("z9hG4bK10", "c10", "", "application/sdp")) + answer()
    + dgram(in_dialog("ACK", 1, "z9hG4bK10a", "c10", sdp(), "application/sdp")) + dgram(in_dialog("BYE", 2, "z9hG4bK10b", "c10")))
put("sip_endpoint", "options-tcp", dgram(options("z9hG4bK11", "TCP"), 1, True) + wait(1))
for name, payload in raw.items():
    if name.startswith(("sip-rfc", "hostile")):
        put("sip_endpoint", name, dgram(payload[:65535]) + answer() + wait_s(40))
for name in list(raw)[-protos_cases // 10:]:
    if name.startswith("protos"):
        put("sip_endpoint", name, dgram(raw[name][:65535]) + wait_s(40))

# --- SDP bodies ---------------------------------------------------------------------------
put("sdp", "basic", sdp().encode())
put("sdp", "sendonly", sdp(2, "a=sendonly\n").encode())
for name, payload in raw.items():
    if b"\r\n\r\nv=0" in payload:
        put("sdp", name, payload.split(b"\r\n\r\n", 1)[1])

# --- digest challenges --------------------------------------------------------------------
challenges = [
    'Digest realm="atlanta.example.com", nonce="84a4cc6f3082121f32b42a2187831a9e", qop="auth"',
    'Digest realm="biloxi.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
    'Digest realm="sip.example", nonce="abc", algorithm=MD5-sess, stale=TRUE',
    'Digest realm="a\\"b\\\\c", nonce="n", algorithm=SHA-256-sess',
    'digest REALM = "x" ,, NONCE="y", foo=bar, qop=auth',
    'Basic realm="x", Digest realm="y", nonce="z"',
    'Digest realm="md5", nonce="1"\nDigest realm="sha", nonce="2", algorithm=SHA-256',
    'Digest realm="x", nonce="y", algorithm=SHA-512-256',
]
for i, c in enumerate(challenges):
    put("sip_auth", f"challenge-{i}", c.encode())
for name, payload in raw.items():
    for line in payload.split(b"\n"):
        if line.lower().startswith((b"www-authenticate:", b"proxy-authenticate:")):
            put("sip_auth", name, line.split(b":", 1)[1].strip())

# --- Twilio: forms (0), signatures (1), messages (2), streams (3) -------------------------
form = (b"CallSid=CA1234567890abcdef1234567890abcdef&AccountSid=AC1234567890abcdef1234567890abcdef"
        b"&From=%2B15551234567&To=%2B15557654321&CallStatus=ringing&Direction=inbound&ApiVersion=2010-04-01")
put("twilio", "form-voice", b"\x00" + form)
put("twilio", "form-status", b"\x00CallSid=CA1&CallStatus=completed&CallDuration=12&Caller=+1555+x%20y&Empty=&Flag")
put("twilio", "form-bad-escape", b"\x00a=%zz&b=%e2%82&c=%")
# The common inputs of tests/data/twilio-signature-vectors.txt (vector 1).
url, token = "https://mycompany.com/myapp.php?foo=1&bar=2", "12345"
vector_form = "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212"
put("twilio", "signature-vectors", b"\x01" + "\n".join([url, token, vector_form, "RSOYDt4T1cUTdK1PDd93/VVr8B8="]).encode())
put("twilio", "signature-port-1234", b"\x01" + "\n".join([url.replace(".com/", ".com:1234/"), token, vector_form, "RSOYDt4T1cUTdK1PDd93/VVr8B8="]).encode())
put("twilio", "signature-json", b"\x01" + "\n".join([url + "?bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620", token, '{"property": "value", "boolean": true}', "a"]).encode())
put("twilio", "signature-port", b"\x01https://example.com:443/voice?x=1\n12345\nFrom=%2B1\nAAAA")
payload = base64.b64encode(bytes([0xff] * 160)).decode()
sid, call = "MZ18ad3ab5a668481ce02b83e7395059f0", "CA12345678901234567890123456789012"
msgs = [
    {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    {"event": "start", "sequenceNumber": "1", "streamSid": sid,
     "start": {"accountSid": "AC12345678901234567890123456789012", "streamSid": sid, "callSid": call,
               "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
               "customParameters": {"token": "t0k"}}},
    {"event": "media", "sequenceNumber": "2", "streamSid": sid,
     "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": payload}},
    {"event": "media", "sequenceNumber": "3", "streamSid": sid,
     "media": {"track": "inbound", "chunk": "2", "timestamp": "25", "payload": payload}},
    {"event": "dtmf", "sequenceNumber": "4", "streamSid": sid, "dtmf": {"track": "inbound_track", "digit": "7"}},
    {"event": "mark", "sequenceNumber": "5", "streamSid": sid, "mark": {"name": "m"}},
    {"event": "stop", "sequenceNumber": "6", "streamSid": sid, "stop": {"accountSid": "AC1", "callSid": call}},
]
texts = [json.dumps(m) for m in msgs]
for i, t in enumerate(texts):
    put("twilio", f"message-{msgs[i]['event']}-{i}", b"\x02" + t.encode())
put("twilio", "stream-whole-call", b"\x03" + "\n".join(texts).encode())
put("twilio", "stream-disorder", b"\x03" + "\n".join([texts[0], texts[1], texts[3], texts[2], texts[2], "{}", "not json", texts[6], texts[2]]).encode())
put("twilio", "stream-silence", b"\x03" + "\n".join(texts[:3] + ["x"] * 40).encode())

print("seeded:", ", ".join(f"{d.name} {len(list(d.glob('seed-*')))}" for d in sorted(corpus.iterdir())))
PY
