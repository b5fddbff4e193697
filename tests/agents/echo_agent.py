"""A minimal Twilio Media Streams agent for load runs: every caller `media` message is sent
straight back as agent audio, so earshot carries agent audio both ways on every call all the
time. Counts what it saw and prints one summary line per finished stream.

    python tests/agents/echo_agent.py --port PORT

Uses the `websockets` package of the agent venv (scripts/test.sh makes it).
"""

import argparse
import asyncio
import json
import sys

import websockets


async def handle(ws):
    stream_sid = None
    media = marks = 0
    try:
        async for text in ws:
            msg = json.loads(text)
            event = msg.get("event")
            if event == "start":
                stream_sid = msg["start"]["streamSid"]
            elif event == "media" and stream_sid:
                media += 1
                await ws.send(
                    json.dumps(
                        {
                            "event": "media",
                            "streamSid": stream_sid,
                            "media": {"payload": msg["media"]["payload"]},
                        }
                    )
                )
            elif event == "mark":
                marks += 1
            elif event == "stop":
                break
    except websockets.ConnectionClosed:
        pass
    print(f"stream {stream_sid} media={media} marks={marks}", flush=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    async with websockets.serve(handle, "127.0.0.1", args.port, max_size=1 << 20):
        print(f"LISTENING 127.0.0.1:{args.port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
