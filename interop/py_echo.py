"""An echo server on Python `websockets` with permessage-deflate, for scripts/interop.sh.

    python interop/py_echo.py [--variant default|no-takeover] [--fragment BYTES]

Listens on a free 127.0.0.1 port and prints ``listening PORT`` once ready.

  default      compression="deflate": websockets' defaults (context takeover,
               server_max_window_bits=12, client_max_window_bits=12, memLevel 5)
  no-takeover  server_ and client_no_context_takeover, server window 10, client window 9

--fragment BYTES echoes longer messages in frames of BYTES (each compressed
on its own, RSV1 on the first only).
"""

import argparse
import asyncio
import signal
import sys

from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


def chunks(message, size):
    return [message[i : i + size] for i in range(0, len(message), size)]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["default", "no-takeover"], default="default")
    parser.add_argument("--fragment", type=int, default=0)
    args = parser.parse_args()

    async def echo(ws):
        offer = ws.request.headers.get("Sec-WebSocket-Extensions")
        print(f"py_echo: {args.variant}: connection, offer {offer}", file=sys.stderr, flush=True)
        async for message in ws:
            if args.fragment and len(message) > args.fragment:
                await ws.send(chunks(message, args.fragment))
            else:
                await ws.send(message)

    options = {"compression": "deflate"}
    if args.variant == "no-takeover":
        options = {
            "compression": None,
            "extensions": [
                ServerPerMessageDeflateFactory(
                    server_no_context_takeover=True,
                    client_no_context_takeover=True,
                    server_max_window_bits=10,
                    client_max_window_bits=9,
                )
            ],
        }
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(echo, "127.0.0.1", 0, max_size=64 << 20, **options) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening {port}", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
