#!/usr/bin/env python3
"""A TCP proxy for the network fault test (tests/faults/network_test.sh), under its control.

    tcp_proxy.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT CONTROL_FILE

Forwards every connection to the target. CONTROL_FILE holds the mode, read again for every
chunk, so the test changes it while connections are open:
    pass          forward as it comes
    delay MS      hold each chunk MS milliseconds before forwarding it, both ways
    stall         stop reading from both sides: the connections stay open, nothing moves
                  (a peer that stops reading, a half-open path); what was read is kept
    reset         close every connection and refuse new ones until the mode changes
Prints "listening" once it accepts.
"""
import asyncio
import sys


def mode(control):
    try:
        with open(control) as f:
            words = f.read().split()
    except OSError:
        return ("pass", 0)
    if not words:
        return ("pass", 0)
    if words[0] == "delay" and len(words) > 1:
        return ("delay", int(words[1]))
    return (words[0], 0)


async def pump(reader, writer, control, closing):
    try:
        while not closing.is_set():
            m, arg = mode(control)
            if m == "stall":
                await asyncio.sleep(0.05)
                continue
            if m == "reset":
                break
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.2)
            except asyncio.TimeoutError:
                continue  # look at the mode (and the other direction's end) again
            if not data:
                break
            if m == "delay":
                await asyncio.sleep(arg / 1000)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        closing.set()
        writer.close()


async def main():
    host, port, target_host, target_port, control = sys.argv[1:6]

    async def serve(reader, writer):
        if mode(control)[0] == "reset":
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, int(target_port))
        except OSError:
            writer.close()
            return
        closing = asyncio.Event()
        await asyncio.gather(pump(reader, up_writer, control, closing),
                             pump(up_reader, writer, control, closing))

    server = await asyncio.start_server(serve, host, int(port))
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
