"""A minimal OpenAI Realtime-protocol server for load runs: every `input_audio_buffer.append`
is sent straight back as a `response.output_audio.delta` of one long response, so earshot
carries Realtime audio both ways on every call all the time. Speaks only what earshot needs
(no model); prints one summary line per finished session.

    python tests/agents/realtime_echo.py --port PORT

Uses the `websockets` package of the agent venv (scripts/test.sh makes it).
"""

import argparse
import asyncio
import json
import sys

import websockets


async def handle(ws):
    appends = 0
    try:
        async for text in ws:
            msg = json.loads(text)
            kind = msg.get("type")
            if kind == "session.update":
                await ws.send(json.dumps({"type": "session.updated", "session": msg.get("session", {})}))
                await ws.send(json.dumps({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}))
            elif kind == "input_audio_buffer.append":
                appends += 1
                await ws.send(
                    json.dumps(
                        {
                            "type": "response.output_audio.delta",
                            "response_id": "resp_1",
                            "item_id": "item_1",
                            "output_index": 0,
                            "content_index": 0,
                            "delta": msg["audio"],
                        }
                    )
                )
    except websockets.ConnectionClosed:
        pass
    print(f"session appends={appends}", flush=True)


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
