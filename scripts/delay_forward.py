#!/usr/bin/env python3
"""A TCP forwarder that adds latency: every chunk a client sends reaches the
upstream server `delay_ms` later (replies pass at once), so each request of
an HTTP client (one or more chunks, sent back to back) is `delay_ms` late.
Used to measure ingest with a slow object store:

    python3 scripts/delay_forward.py LISTEN_PORT UPSTREAM_HOST:PORT DELAY_MS
"""
import asyncio
import sys


async def pipe_delayed(reader, writer, delay):
    queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def send():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((0, None))
    await sender


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def main():
    port, upstream, delay_ms = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    host, up_port = upstream.rsplit(":", 1)

    async def serve(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(up_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe_delayed(client_reader, up_writer, delay_ms / 1000.0),
            pipe(up_reader, client_writer),
            return_exceptions=True,
        )

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
