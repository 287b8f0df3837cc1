"""A TCP proxy that delays every chunk by a fixed time each way: a network round trip for
benchmarks on a machine whose kernel has no `netem` (this VM's has none).

    .venv/bin/python bench/latency_proxy.py --upstream HOST:PORT [--listen 127.0.0.1:0]
        [--delay-ms 0.15]

Prints ``listening on HOST:PORT`` once it accepts. asyncio's timers have millisecond
resolution (the selector's timeout), so the last millisecond of a delay is spun, one loop
iteration at a time: the proxy keeps a CPU busy while data is in flight. It adds its own
forwarding time too: measure the round trip through it rather than trusting `--delay-ms`.
"""

from __future__ import annotations

import argparse
import asyncio


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy `reader` to `writer`, each chunk `delay` seconds after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                writer.close()
                return
            if (wait := due - loop.time()) > 0.001:
                await asyncio.sleep(wait - 0.001)
            while loop.time() < due:  # noqa: ASYNC110 (sub-millisecond: no timer is that fine)
                await asyncio.sleep(0)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    await sender


async def serve(listen: str, upstream: str, delay: float) -> None:
    up_host, _, up_port = upstream.rpartition(":")

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(up_host, int(up_port))
        await asyncio.gather(
            relay(reader, up_writer, delay), relay(up_reader, writer, delay),
            return_exceptions=True,
        )

    host, _, port = listen.rpartition(":")
    server = await asyncio.start_server(connect, host, int(port))
    address = server.sockets[0].getsockname()
    print(f"listening on {address[0]}:{address[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.15, help="each way")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.upstream, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
