#!/usr/bin/env python3
"""Standalone check of tests/agents/pipecat_agent.py, without earshot.

This script plays Twilio: it starts the agent, opens Media Streams WebSockets to
its /ws, and serves the REST endpoint the agent's auto hang-up POSTs to. It is a
developer check of the test peer, not part of the test suite.

    target/agent-venv/bin/python tests/agents/fake_twilio_check.py [--keep DIR]

Calls made:
  A and B at the same time: `connected`, `start`, 3 s of 440 Hz (A) / 550 Hz (B)
      μ-law as `media` every 20 ms, then `dtmf` '#'; media continues (silence)
      until the agent hangs up through the REST API, then `stop`.
  C afterwards: 2 s of tone, digits '1' '2', then Twilio-side hang-up (`stop` and
      close) with no '#': the agent must not POST and must still write its report.

Message shapes follow Twilio's "Media Streams - WebSocket Messages" examples.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path

import numpy as np
import websockets
from aiohttp import web

HERE = Path(__file__).resolve().parent
AUTH_TOKEN = "check-auth-token"
REPLY_FREQ = 660.0
REPLY_SECS = 1.5
REPLY_RATE = 16000  # deliberately not 8 kHz: pipecat resamples to Twilio's 8 kHz

# ---------------------------------------------------------------------------- G.711 μ-law


def lin2ulaw(pcm: np.ndarray) -> bytes:
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    x = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.clip(np.floor(np.log2(x >> 7)).astype(np.int32), 0, 7)
    mant = (x >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def ulaw2lin(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign, exp, mant = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def tone(freq: float, secs: float, rate: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(secs * rate)) / rate
    return (amp * 32767 * np.sin(2 * math.pi * freq * t)).astype(np.int16)


def peak_freq(pcm: np.ndarray, rate: int) -> float:
    if len(pcm) < 256:
        return 0.0
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


def sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# ---------------------------------------------------------------------------- REST server


class FakeRest:
    def __init__(self):
        self.posts: list[dict] = []
        self.known_calls: set[str] = set()
        self.events: dict[str, asyncio.Event] = {}

    async def handle(self, request: web.Request):
        form = await request.post()
        auth = request.headers.get("Authorization", "")
        user = password = None
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        call = request.match_info["call"]
        rec = {
            "path": request.path,
            "account": request.match_info["account"],
            "call": call,
            "content_type": request.content_type,
            "form": dict(form),
            "user": user,
            "password": password,
            "t": time.time(),
        }
        self.posts.append(rec)
        if call in self.events:
            self.events[call].set()
        if call not in self.known_calls:
            return web.json_response({"code": 20404, "status": 404}, status=404)
        return web.json_response({"sid": call, "status": "completed"})


# ---------------------------------------------------------------------------- one fake call


async def twilio_call(
    ws_url: str,
    rest: FakeRest,
    *,
    freq: float,
    tone_secs: float,
    digits: list[str],
    wait_for_rest_hangup: bool,
    custom: dict,
) -> dict:
    account, call, stream = sid("AC"), sid("CA"), sid("MZ")
    rest.known_calls.add(call)
    rest.events[call] = asyncio.Event()
    out = {
        "account": account, "call": call, "stream": stream, "custom": custom,
        "digits": digits, "freq": freq, "tone_secs": tone_secs,
        "received": [], "media_bytes": 0, "media_frames": 0, "bad_stream_sid": 0,
        "closed_by_agent": False, "sent_media": 0,
    }
    seq = 0

    def nseq() -> str:
        nonlocal seq
        seq += 1
        return str(seq)

    async with websockets.connect(ws_url, max_size=None) as ws:

        async def reader():
            received_pcm = []
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    ev = msg.get("event")
                    out["received"].append(ev)
                    if msg.get("streamSid") != stream:
                        out["bad_stream_sid"] += 1
                    if ev == "media":
                        payload = base64.b64decode(msg["media"]["payload"])
                        out["media_frames"] += 1
                        out["media_bytes"] += len(payload)
                        out.setdefault("media_sizes", {}).setdefault(len(payload), 0)
                        out["media_sizes"][len(payload)] += 1
                        received_pcm.append(ulaw2lin(payload))
            except websockets.ConnectionClosed:
                pass
            out["closed_by_agent"] = True
            out["pcm_out"] = np.concatenate(received_pcm) if received_pcm else np.zeros(0, np.int16)

        rtask = asyncio.create_task(reader())

        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({
            "event": "start",
            "sequenceNumber": nseq(),
            "start": {
                "accountSid": account,
                "streamSid": stream,
                "callSid": call,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": custom,
            },
            "streamSid": stream,
        }))

        ulaw = lin2ulaw(tone(freq, tone_secs, 8000))
        silence = lin2ulaw(np.zeros(160, np.int16))
        t0 = time.monotonic()
        chunk = 0

        async def send_media(payload: bytes):
            nonlocal chunk
            chunk += 1
            await ws.send(json.dumps({
                "event": "media",
                "sequenceNumber": nseq(),
                "media": {
                    "track": "inbound",
                    "chunk": str(chunk),
                    "timestamp": str((chunk - 1) * 20),
                    "payload": base64.b64encode(payload).decode(),
                },
                "streamSid": stream,
            }))
            out["sent_media"] += 1
            # pace at 20 ms on a fixed clock, like Twilio
            await asyncio.sleep(max(0.0, t0 + chunk * 0.02 - time.monotonic()))

        try:
            for i in range(0, len(ulaw), 160):
                await send_media(ulaw[i : i + 160])
            for d in digits:
                out.setdefault("digit_sent_at", {})[d] = time.time()
                await ws.send(json.dumps({
                    "event": "dtmf",
                    "streamSid": stream,
                    "sequenceNumber": nseq(),
                    "dtmf": {"track": "inbound_track", "digit": d},
                }))
                for _ in range(10):  # 200 ms of silence between digits
                    await send_media(silence)
            if wait_for_rest_hangup:
                deadline = time.monotonic() + 15
                while not rest.events[call].is_set() and not rtask.done():
                    if time.monotonic() > deadline:
                        break
                    await send_media(silence)
            # Call over: Twilio sends `stop` and closes.
            await ws.send(json.dumps({
                "event": "stop",
                "sequenceNumber": nseq(),
                "stop": {"accountSid": account, "callSid": call},
                "streamSid": stream,
            }))
        except websockets.ConnectionClosed:
            out["agent_closed_while_sending"] = True
        await ws.close()
        await asyncio.wait_for(rtask, 10)
    return out


# ---------------------------------------------------------------------------- checks


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def __call__(self, name: str, ok: bool, detail: str = ""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"  {'ok  ' if ok else 'FAIL'} {name}{(' — ' + detail) if detail else ''}")


async def wait_file(path: Path, secs: float = 15) -> bool:
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if path.exists():
            return True
        await asyncio.sleep(0.05)
    return False


def check_call(check: Checks, name: str, res: dict, rest: FakeRest, out_dir: Path, expect_post: bool):
    call = res["call"]
    print(f"call {name}: callSid={call}")
    report_path = out_dir / f"{call}.json"
    check(f"{name}: agent wrote {report_path.name}", report_path.exists())
    if not report_path.exists():
        return
    rep = json.loads(report_path.read_text())

    # What came back over the WebSocket: pipecat's media (base64 μ-law 8 kHz).
    pcm = res["pcm_out"]
    loud = pcm[: int(REPLY_SECS * 8000)]
    reply_bytes = int(REPLY_SECS * 8000)
    print(
        f"  agent -> us: events={dict((e, res['received'].count(e)) for e in set(res['received']))} "
        f"media frames={res['media_frames']} bytes={res['media_bytes']} "
        f"payload sizes={res.get('media_sizes')} closed_by_agent={res['closed_by_agent']}"
    )
    check(f"{name}: agent sent media", res["media_frames"] > 0)
    check(f"{name}: every message carries our streamSid", res["bad_stream_sid"] == 0)
    check(
        f"{name}: media holds the {REPLY_SECS}s reply (≥ {reply_bytes} μ-law bytes)",
        res["media_bytes"] >= reply_bytes,
        f"{res['media_bytes']} bytes",
    )
    f = peak_freq(loud, 8000)
    check(f"{name}: reply tone is {REPLY_FREQ:.0f} Hz", abs(f - REPLY_FREQ) < 10, f"peak {f:.1f} Hz")

    # What the agent recorded.
    check(
        f"{name}: digits recorded",
        rep["digits"] == "".join(res["digits"]),
        f"{rep['digits']!r}",
    )
    check(f"{name}: customParameters recorded", rep["custom_parameters"] == res["custom"])
    check(f"{name}: start recorded as sent", rep["start"]["start"]["callSid"] == call
          and rep["start"]["start"]["mediaFormat"]["encoding"] == "audio/x-mulaw")
    sent = res["sent_media"] * 160
    tone_samples = int(res["tone_secs"] * 8000)
    # Everything up to the last digit must arrive; after its pipeline has ended the agent
    # stops reading, so media we kept sending during the hang-up may be left unread.
    check(
        f"{name}: audio samples received (tone {tone_samples} ≤ n ≤ sent {sent})",
        tone_samples <= rep["audio_in"]["samples"] <= sent
        and rep["audio_in"]["sample_rate"] == 8000,
        f"{rep['audio_in']['samples']} at {rep['audio_in']['sample_rate']} Hz",
    )
    wav_path = Path(rep["audio_in"]["wav"])
    with wave.open(str(wav_path), "rb") as w:
        rate = w.getframerate()
        rec = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    f_in = peak_freq(rec[: int(res["tone_secs"] * rate)], rate)
    check(f"{name}: {wav_path.name} holds our {res['freq']:.0f} Hz tone",
          abs(f_in - res["freq"]) < 10, f"peak {f_in:.1f} Hz, {rate} Hz, {len(rec)} samples")
    if expect_post:
        # pipecat closes the WebSocket right after its POST, before Twilio's `stop`.
        print(f"  `stop` seen by agent: {rep['stop'] is not None} (it closes the socket after its POST)")
    else:
        check(f"{name}: agent saw our `stop`", rep["stop"] is not None
              and rep["stop"]["stop"]["callSid"] == call)

    posts = [p for p in rest.posts if p["call"] == call]
    hp = rep["hangup"]["post"]
    if expect_post:
        check(f"{name}: exactly one REST hang-up POST", len(posts) == 1, f"{len(posts)}")
        if posts:
            p = posts[0]
            print(f"  POST {p['path']} form={p['form']} auth={p['user']}:{p['password']} "
                  f"({p['content_type']})")
            check(f"{name}: POST path", p["path"] ==
                  f"/2010-04-01/Accounts/{res['account']}/Calls/{call}.json")
            check(f"{name}: Basic auth AccountSid:token",
                  p["user"] == res["account"] and p["password"] == AUTH_TOKEN)
            check(f"{name}: form Status=completed", p["form"] == {"Status": "completed"})
            lat = p["t"] - res["digit_sent_at"]["#"]
            check(f"{name}: POST within 2 s of '#'", 0 <= lat < 2.0, f"{lat * 1000:.0f} ms")
        check(f"{name}: report says POST answered 200", hp["attempted"] and hp["status"] == 200,
              json.dumps(hp))
        check(f"{name}: pipeline ended (EndFrame)", rep["finished"] == "ended", rep["finished"])
    else:
        check(f"{name}: no REST POST", len(posts) == 0, f"{len(posts)}")
        check(f"{name}: report says no POST", not hp["attempted"], json.dumps(hp))
        check(f"{name}: pipeline cancelled on caller hang-up", rep["finished"] == "cancelled",
              rep["finished"])
    print(f"  report: events_in={rep['events_in']} events_out={rep['events_out']} "
          f"media_out={rep['media_out']} hangup={rep['hangup']}")


# ---------------------------------------------------------------------------- main


async def amain(args):
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pipecat-check-"))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = work / "out"
    reply_wav = work / "reply.wav"
    with wave.open(str(reply_wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(REPLY_RATE)
        w.writeframes(tone(REPLY_FREQ, REPLY_SECS, REPLY_RATE).tobytes())

    rest = FakeRest()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", rest.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rest_port = site._server.sockets[0].getsockname()[1]
    api_base = f"http://127.0.0.1:{rest_port}"

    log = open(work / "agent.log", "w")
    agent = subprocess.Popen(
        [sys.executable, str(HERE / "pipecat_agent.py"), "--port", "0", "--out", str(out_dir),
         "--reply-wav", str(reply_wav), "--hangup-on-digit", "#",
         "--twilio-api-base", api_base, "--auth-token", AUTH_TOKEN],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    check = Checks()
    try:
        line = await asyncio.wait_for(asyncio.to_thread(agent.stdout.readline), 60)
        if not line.startswith("LISTENING "):
            raise SystemExit(f"agent did not start: {line!r}; see {work / 'agent.log'}")
        ws_url = f"ws://{line.split()[1]}/ws"
        print(f"agent {ws_url}, fake Twilio REST {api_base}, files in {work}")

        t = time.monotonic()
        a, b = await asyncio.gather(
            twilio_call(ws_url, rest, freq=440.0, tone_secs=3.0, digits=["#"],
                        wait_for_rest_hangup=True, custom={"FirstName": "Jane", "LastName": "Doe"}),
            twilio_call(ws_url, rest, freq=550.0, tone_secs=3.0, digits=["#"],
                        wait_for_rest_hangup=True, custom={"RemoteParty": "Bob"}),
        )
        print(f"calls A and B (concurrent) took {time.monotonic() - t:.2f}s")
        c = await twilio_call(ws_url, rest, freq=440.0, tone_secs=2.0, digits=["1", "2"],
                              wait_for_rest_hangup=False, custom={})
        for r in (a, b, c):
            await wait_file(out_dir / f"{r['call']}.json")
        check_call(check, "A", a, rest, out_dir, expect_post=True)
        check_call(check, "B", b, rest, out_dir, expect_post=True)
        check_call(check, "C", c, rest, out_dir, expect_post=False)
        check("agent still running after three calls", agent.poll() is None)
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
        log.close()
        await runner.cleanup()
    errors = [l for l in (work / "agent.log").read_text().splitlines()
              if "| ERROR" in l or "Traceback" in l]
    check("agent log has no ERROR lines", not errors, "; ".join(errors[:3]))
    print(f"{check.passed} passed, {check.failed} failed")
    if not args.keep and check.failed == 0:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if check.failed == 0 else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="keep the agent's files and log in this directory")
    sys.exit(asyncio.run(amain(ap.parse_args())))


if __name__ == "__main__":
    main()
