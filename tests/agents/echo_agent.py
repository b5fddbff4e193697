"""A minimal agent for load runs that sends the caller's audio straight back, so earshot
carries agent audio both ways on every call all the time. It speaks either protocol earshot's
[agent] does and prints one summary line per finished session:

- twilio: every caller `media` message comes back as a `media` message of the same payload;
- openai-realtime: after `session.update`, every `input_audio_buffer.append` comes back as a
  `response.output_audio.delta` of one long response (no model behind it).

    python tests/agents/echo_agent.py --port PORT [--protocol twilio|openai-realtime]

Uses the `websockets` package of the agent venv (scripts/test.sh makes it).
"""

import argparse
import asyncio
import json
import sys

import websockets


def twilio_reply(msg, state):
    """The answer to one Twilio Media Streams message, if any."""
    event = msg.get("event")
    if event == "start":
        state["sid"] = msg["start"]["streamSid"]
    elif event == "media" and state.get("sid"):
        state["echoed"] += 1
        return [{"event": "media", "streamSid": state["sid"], "media": {"payload": msg["media"]["payload"]}}]
    return []


def realtime_reply(msg, state):
    """The answer to one Realtime client event, if any."""
    kind = msg.get("type")
    if kind == "session.update":
        return [
            {"type": "session.updated", "session": msg.get("session", {})},
            {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        ]
    if kind == "input_audio_buffer.append":
        state["echoed"] += 1
        return [
            {
                "type": "response.output_audio.delta",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": msg["audio"],
            }
        ]
    return []


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=["twilio", "openai-realtime"], default="twilio")
    args = parser.parse_args()
    reply = twilio_reply if args.protocol == "twilio" else realtime_reply

    async def handle(ws):
        state = {"echoed": 0}
        try:
            async for text in ws:
                for answer in reply(json.loads(text), state):
                    await ws.send(json.dumps(answer))
        except websockets.ConnectionClosed:
            pass
        print(f"session echoed={state['echoed']}", flush=True)

    async with websockets.serve(handle, "127.0.0.1", args.port, max_size=1 << 20):
        print(f"LISTENING 127.0.0.1:{args.port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
