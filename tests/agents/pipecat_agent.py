#!/usr/bin/env python3
"""A real voice-agent peer for earshot's agent bridge, built on pipecat.

earshot plays Twilio's part of the Twilio Media Streams protocol; this server
is the agent side, using pipecat's own ``TwilioFrameSerializer`` over pipecat's
``FastAPIWebsocketTransport`` (nothing here speaks the protocol by hand).

    python tests/agents/pipecat_agent.py --port PORT --out DIR --reply-wav WAV \
        [--hangup-on-digit '#'] [--hangup-after-secs N] \
        [--twilio-api-base http://127.0.0.1:PORT] [--auth-token T]

Each WebSocket connection on ``/ws`` is one call and gets its own pipeline:

    transport.input() -> CallRecorder -> transport.output()

CallRecorder keeps the caller's audio (8 kHz mono PCM16, as pipecat hands it
over with ``audio_in_sample_rate=8000``), records DTMF digits, plays the reply
WAV as TTS-like ``TTSAudioRawFrame``s, and on the hang-up digit (or timer)
pushes ``EndWorkerFrame``. The worker then sends ``EndFrame`` down the
pipeline; when it reaches the output transport, pipecat's serializer POSTs
``Status=completed`` to ``{base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``
(its "auto hang-up") and closes the WebSocket.

At the end of each call it writes:
    DIR/<callSid>-in.wav   caller audio received (8 kHz, mono, 16-bit)
    DIR/<callSid>.json     see ``CallState.report`` for the fields

The listening address is printed on stdout as ``LISTENING 127.0.0.1:PORT``
(``--port 0`` picks a free port). ``GET /health`` answers ``ok``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from loguru import logger

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

TWILIO_RATE = 8000


# --------------------------------------------------------------------------------------------
# Per-call state and report
# --------------------------------------------------------------------------------------------


@dataclass
class CallState:
    call_sid: str
    stream_sid: str
    account_sid: str
    connected: dict | None
    start: dict
    opened_at: float = field(default_factory=time.time)
    audio_in: bytearray = field(default_factory=bytearray)
    audio_in_rate: int | None = None
    audio_in_frames: int = 0
    first_audio_at: float | None = None
    digits: list[dict] = field(default_factory=list)
    reply_started_at: float | None = None
    reply_samples: int = 0
    reply_rate: int | None = None
    hangup_reason: str | None = None
    hangup_requested_at: float | None = None
    hangup_log: list[dict] = field(default_factory=list)
    events_in: dict[str, int] = field(default_factory=dict)
    stop: dict | None = None
    marks_in: list[str] = field(default_factory=list)
    events_out: dict[str, int] = field(default_factory=dict)
    media_out_bytes: int = 0
    media_out_sizes: dict[int, int] = field(default_factory=dict)
    client_disconnected: bool = False
    finished: str | None = None
    errors: list[str] = field(default_factory=list)

    def hangup_post(self) -> dict:
        """What pipecat's auto hang-up did, read from the serializer's own log lines."""
        out: dict[str, Any] = {"attempted": False, "status": None, "outcome": None, "log": None}
        for rec in self.hangup_log:
            msg = rec["message"]
            out["log"] = msg
            if "Successfully terminated Twilio call" in msg:
                out.update(attempted=True, status=200, outcome="completed")
            elif "was already terminated" in msg:
                out.update(attempted=True, status=404, outcome="already_terminated")
            elif m := re.search(r"Failed to terminate Twilio call .*?: Status (\d+)", msg):
                out.update(attempted=True, status=int(m.group(1)), outcome="http_error")
            elif "Failed to hang up Twilio call" in msg:
                out.update(attempted=True, status=None, outcome="request_failed")
        return out

    def report(self, wav_path: Path | None, auto_hang_up: bool) -> dict:
        rate = self.audio_in_rate or TWILIO_RATE
        return {
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "account_sid": self.account_sid,
            "connected": self.connected,
            "start": self.start,
            "custom_parameters": (self.start.get("start") or {}).get("customParameters") or {},
            "digits": "".join(d["digit"] for d in self.digits),
            "digit_events": self.digits,
            "audio_in": {
                "samples": len(self.audio_in) // 2,
                "sample_rate": rate,
                "seconds": round(len(self.audio_in) / 2 / rate, 3),
                "frames": self.audio_in_frames,
                "wav": str(wav_path) if wav_path else None,
                "first_audio_after_secs": _rel(self.first_audio_at, self.opened_at),
            },
            "reply": {
                "samples": self.reply_samples,
                "sample_rate": self.reply_rate,
                "started_after_secs": _rel(self.reply_started_at, self.opened_at),
            },
            "events_in": self.events_in,
            "stop": self.stop,
            "marks_in": self.marks_in,
            "events_out": self.events_out,
            "media_out": {
                "bytes": self.media_out_bytes,
                "payload_sizes": {str(k): v for k, v in sorted(self.media_out_sizes.items())},
            },
            "hangup": {
                "auto_hang_up": auto_hang_up,
                "reason": self.hangup_reason,
                "requested_after_secs": _rel(self.hangup_requested_at, self.opened_at),
                "post": self.hangup_post(),
            },
            "client_disconnected": self.client_disconnected,
            "finished": self.finished,
            "duration_secs": round(time.time() - self.opened_at, 3),
            "errors": self.errors,
        }


def _rel(t: float | None, base: float) -> float | None:
    return None if t is None else round(t - base, 3)


# --------------------------------------------------------------------------------------------
# Pipecat pieces
# --------------------------------------------------------------------------------------------


class ObservedTwilioSerializer(TwilioFrameSerializer):
    """pipecat's TwilioFrameSerializer, unchanged; it only tallies what passes through.

    Every call goes straight to the parent class, which does all the protocol work
    (μ-law <-> PCM, media/clear JSON, DTMF, auto hang-up). The tally lets the report
    say which Twilio events the agent saw (pipecat itself ignores `stop` and `mark`).
    """

    def __init__(self, state: CallState, **kwargs):
        super().__init__(**kwargs)
        self._state = state

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            msg = json.loads(data)
            ev = str(msg.get("event"))
            st = self._state
            st.events_in[ev] = st.events_in.get(ev, 0) + 1
            if ev == "stop":
                st.stop = msg
            elif ev == "mark":
                st.marks_in.append(str((msg.get("mark") or {}).get("name")))
        except Exception:
            pass
        return await super().deserialize(data)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        out = await super().serialize(frame)
        if isinstance(out, str):
            try:
                msg = json.loads(out)
                ev = str(msg.get("event"))
                st = self._state
                st.events_out[ev] = st.events_out.get(ev, 0) + 1
                if ev == "media":
                    import base64

                    n = len(base64.b64decode(msg["media"]["payload"]))
                    st.media_out_bytes += n
                    st.media_out_sizes[n] = st.media_out_sizes.get(n, 0) + 1
            except Exception:
                pass
        return out


class CallRecorder(FrameProcessor):
    """Records caller audio and digits, plays the reply, ends the call on request."""

    def __init__(
        self,
        state: CallState,
        reply_pcm: bytes,
        reply_rate: int,
        reply_on: str,
        hangup_digit: str | None,
        hangup_after: float | None,
        clear_digit: str | None,
    ):
        super().__init__()
        self._state = state
        self._reply_pcm = reply_pcm
        self._reply_rate = reply_rate
        self._reply_on = reply_on
        self._hangup_digit = hangup_digit
        self._hangup_after = hangup_after
        self._clear_digit = clear_digit
        self._replied = False
        self._ending = False
        self._timer: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        st = self._state

        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            if self._hangup_after is not None:
                self._timer = self.create_task(self._hangup_timer(), name="hangup-timer")
            if self._reply_on == "start":
                await self._play_reply()
            return

        if isinstance(frame, InputAudioRawFrame):
            if st.first_audio_at is None:
                st.first_audio_at = time.time()
            st.audio_in_rate = frame.sample_rate
            st.audio_in.extend(frame.audio)
            st.audio_in_frames += 1
            # Caller audio is not echoed to the output transport.
            if self._reply_on == "first-audio" and not self._replied:
                await self._play_reply()
            return

        if isinstance(frame, InputDTMFFrame):
            digit = frame.button.value
            st.digits.append({"digit": digit, "at_secs": _rel(time.time(), st.opened_at)})
            logger.info(f"call {st.call_sid}: DTMF {digit}")
            if self._clear_digit and digit == self._clear_digit:
                # InterruptionFrame -> the serializer sends Twilio `clear`.
                await self.broadcast_interruption()
            if self._hangup_digit and digit == self._hangup_digit:
                await self._end(f"digit {digit}")
            return

        await self.push_frame(frame, direction)

    async def _play_reply(self):
        self._replied = True
        st = self._state
        st.reply_started_at = time.time()
        st.reply_samples = len(self._reply_pcm) // 2
        st.reply_rate = self._reply_rate
        logger.info(f"call {st.call_sid}: playing reply ({st.reply_samples} samples)")
        # Like a TTS service: started, audio in 20 ms pieces, stopped. The output
        # transport resamples to 8 kHz, re-chunks into 40 ms pieces (pipecat's
        # audio_out_10ms_chunks=4, i.e. 320-byte μ-law `media`) and paces them at real
        # time; TTSStoppedFrame flushes the last partial chunk, padded with silence.
        await self.push_frame(TTSStartedFrame())
        step = self._reply_rate // 50 * 2
        for i in range(0, len(self._reply_pcm), step):
            await self.push_frame(
                TTSAudioRawFrame(
                    audio=self._reply_pcm[i : i + step],
                    sample_rate=self._reply_rate,
                    num_channels=1,
                )
            )
        await self.push_frame(TTSStoppedFrame())

    async def _hangup_timer(self):
        await asyncio.sleep(self._hangup_after)
        await self._end(f"timer {self._hangup_after}s")

    async def _end(self, reason: str):
        if self._ending:
            return
        self._ending = True
        st = self._state
        st.hangup_reason = reason
        st.hangup_requested_at = time.time()
        logger.info(f"call {st.call_sid}: ending pipeline ({reason})")
        # Downstream, so the reply queued ahead of it is played out first; the worker
        # turns it into an EndFrame, whose arrival at the output transport makes the
        # Twilio serializer POST Status=completed.
        await self.push_frame(EndWorkerFrame(reason=reason))

    async def cleanup(self):
        if self._timer:
            await self.cancel_task(self._timer)
            self._timer = None
        await super().cleanup()


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


def load_wav(path: str) -> tuple[bytes, int]:
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16-bit PCM WAV, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = w.readframes(w.getnframes())
    if channels != 1:
        import numpy as np

        a = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).astype(np.int32)
        pcm = (a.sum(axis=1) // channels).astype("<i2").tobytes()
    return pcm, rate


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)[:128] or "unknown"


class HangupLogTap:
    """A loguru sink for the Twilio serializer's hang-up log lines, keyed by call."""

    def __init__(self):
        self.by_call: dict[str, list[dict]] = {}

    def sink(self, message):
        rec = message.record
        text = rec["message"]
        call = rec["extra"].get("earshot_call")
        if call is None:
            m = re.search(r"Twilio call (\S+?)[: ]", text + " ")
            call = m.group(1) if m else None
        if call is not None and call in self.by_call:
            self.by_call[call].append({"level": rec["level"].name, "message": text})

    @staticmethod
    def filter(rec) -> bool:
        # Every hang-up outcome line of TwilioFrameSerializer._hang_up_call says "Twilio call".
        return rec["name"] == "pipecat.serializers.twilio" and "Twilio call" in rec["message"]


def build_app(args, reply_pcm: bytes, reply_rate: int, tap: HangupLogTap) -> FastAPI:
    app = FastAPI()
    out_dir = Path(args.out)
    active: set[str] = set()

    @app.get("/health")
    async def health():
        return PlainTextResponse("ok")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()

        # As pipecat's Twilio examples do: read the first messages (`connected`, then
        # `start`) before building the transport, to get streamSid/callSid.
        connected, start = None, None
        try:
            texts = websocket.iter_text()
            for _ in range(5):
                msg = json.loads(await asyncio.wait_for(texts.__anext__(), timeout=10))
                if msg.get("event") == "connected":
                    connected = msg
                elif msg.get("event") == "start":
                    start = msg
                    break
        except Exception as e:
            logger.warning(f"connection closed before a usable `start`: {e!r}")
        if start is None:
            await _close_quietly(websocket)
            return

        info = start.get("start") or {}
        call_sid = str(info.get("callSid") or f"unknown-{time.time_ns()}")
        stream_sid = str(info.get("streamSid") or start.get("streamSid") or "")
        account_sid = str(args.account_sid or info.get("accountSid") or "")
        if call_sid in active:
            call_sid = f"{call_sid}-{time.time_ns()}"
        active.add(call_sid)
        state = CallState(call_sid, stream_sid, account_sid, connected, start)
        tap.by_call[call_sid] = state.hangup_log
        logger.info(
            f"call {call_sid}: start stream={stream_sid} account={account_sid} "
            f"custom={info.get('customParameters')}"
        )

        auto_hang_up = bool(args.twilio_api_base)
        try:
            with logger.contextualize(earshot_call=call_sid):
                await run_call(websocket, args, state, reply_pcm, reply_rate, auto_hang_up)
        except Exception as e:
            logger.exception(f"call {call_sid}: pipeline failed")
            state.errors.append(repr(e))
        finally:
            wav_path = out_dir / f"{safe_name(call_sid)}-in.wav"
            try:
                with wave.open(str(wav_path), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(state.audio_in_rate or TWILIO_RATE)
                    w.writeframes(bytes(state.audio_in))
            except Exception as e:
                state.errors.append(f"writing wav: {e!r}")
                wav_path = None
            report = state.report(wav_path, auto_hang_up)
            tmp = out_dir / f".{safe_name(call_sid)}.json.tmp"
            tmp.write_text(json.dumps(report, indent=2) + "\n")
            os.replace(tmp, out_dir / f"{safe_name(call_sid)}.json")
            tap.by_call.pop(call_sid, None)
            active.discard(call_sid)
            logger.info(
                f"call {call_sid}: done ({state.finished}); digits={report['digits']!r} "
                f"samples_in={report['audio_in']['samples']} hangup={report['hangup']['post']}"
            )
            await _close_quietly(websocket)

    return app


async def _close_quietly(websocket: WebSocket):
    try:
        await websocket.close()
    except Exception:
        pass


async def run_call(websocket, args, state: CallState, reply_pcm, reply_rate, auto_hang_up):
    serializer = ObservedTwilioSerializer(
        state,
        stream_sid=state.stream_sid,
        call_sid=state.call_sid,
        account_sid=state.account_sid,
        auth_token=args.auth_token,
        # TwilioFrameSerializer(base_url=...): the REST API root for auto hang-up.
        base_url=args.twilio_api_base,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=auto_hang_up),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
            allowed_origins=[],
            audio_out_end_silence_secs=args.end_silence_secs,
        ),
    )
    recorder = CallRecorder(
        state,
        reply_pcm,
        reply_rate,
        reply_on=args.reply_on,
        hangup_digit=args.hangup_on_digit,
        hangup_after=args.hangup_after_secs,
        clear_digit=args.clear_on_digit,
    )
    pipeline = Pipeline([transport.input(), recorder, transport.output()])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=TWILIO_RATE, audio_out_sample_rate=TWILIO_RATE),
        idle_timeout_secs=None,
        check_dangling_tasks=False,
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport, _ws):
        logger.info(f"call {state.call_sid}: client disconnected")
        state.client_disconnected = True
        await worker.cancel()

    @worker.event_handler("on_pipeline_finished")
    async def on_pipeline_finished(_worker, frame):
        if isinstance(frame, EndFrame):
            state.finished = "ended"
        elif isinstance(frame, CancelFrame):
            state.finished = "cancelled"
        else:
            state.finished = type(frame).__name__

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    if state.finished is None:
        state.finished = "cancelled" if state.client_disconnected else "finished"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--out", required=True, help="directory for <callSid>.json / -in.wav")
    ap.add_argument("--reply-wav", required=True, help="16-bit PCM WAV played to the caller")
    ap.add_argument(
        "--reply-on",
        choices=["first-audio", "start"],
        default="first-audio",
        help="play the reply on the caller's first audio (default) or right after `start`",
    )
    ap.add_argument("--hangup-on-digit", default=None, help="DTMF digit that ends the call")
    ap.add_argument("--hangup-after-secs", type=float, default=None)
    ap.add_argument(
        "--clear-on-digit",
        default=None,
        help="DTMF digit that interrupts playback (pipecat sends Twilio `clear`)",
    )
    ap.add_argument(
        "--twilio-api-base",
        default=None,
        help="REST API root for pipecat's auto hang-up, e.g. http://127.0.0.1:8080; "
        "without it auto hang-up is off (nothing is ever sent to api.twilio.com)",
    )
    ap.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN", "test-token"))
    ap.add_argument(
        "--account-sid", default=None, help="Basic-auth user; default: accountSid from `start`"
    )
    ap.add_argument(
        "--end-silence-secs",
        type=int,
        default=2,
        help="pipecat's audio_out_end_silence_secs (silence sent at EndFrame; pipecat default 2)",
    )
    ap.add_argument("--log-level", default=os.environ.get("AGENT_LOG_LEVEL", "INFO"))
    args = ap.parse_args()

    Path(args.out).mkdir(parents=True, exist_ok=True)
    reply_pcm, reply_rate = load_wav(args.reply_wav)

    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    tap = HangupLogTap()
    logger.add(tap.sink, level="DEBUG", filter=HangupLogTap.filter, format="{message}")

    app = build_app(args, reply_pcm, reply_rate, tap)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(64)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", ws_max_size=16 * 1024 * 1024, lifespan="off")
    server = uvicorn.Server(config)
    print(f"LISTENING {host}:{port}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
