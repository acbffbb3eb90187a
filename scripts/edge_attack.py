#!/usr/bin/env python3
"""Holds hostile connections against one TLS listener on loopback, for scripts/bench-edge.sh.

Four kinds in equal parts, each re-opened as soon as the server closes it, so the pressure
stays at TOTAL for the whole run:
  idle       TCP connected, nothing sent
  handshake  half a TLS ClientHello (a record header announcing more than is sent)
  head       TLS done, half an HTTP/1.1 request head
  body       TLS done, a POST head announcing 100 kB, then one byte a second

Usage: edge_attack.py HOST PORT TOTAL SECONDS [SOURCES]
Connections come from SOURCES loopback addresses 127.0.1.1.. (default 64), the way many
clients would. Only loopback targets are accepted. Prints one line of counts at the end.
"""

import asyncio
import ipaddress
import ssl
import sys
import time

HOST, PORT, TOTAL, SECONDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
SOURCES = int(sys.argv[5]) if len(sys.argv) > 5 else 64
if not ipaddress.ip_address(HOST).is_loopback:
    sys.exit("edge_attack.py: only loopback targets")

TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE
TLS.set_alpn_protocols(["http/1.1"])

counts = {"opened": 0, "closed_by_server": 0, "failed_to_open": 0}
stop_at = time.monotonic() + SECONDS


def source(i):
    return (f"127.0.1.{1 + i % SOURCES}", 0)


async def wait_for_close(reader, trickle=None):
    """Returns when the server closes the connection (or the run ends)."""
    while time.monotonic() < stop_at:
        try:
            data = await asyncio.wait_for(reader.read(4096), timeout=1.0)
            if not data:
                return True
        except asyncio.TimeoutError:
            if trickle:
                trickle()
        except (ConnectionError, OSError, ssl.SSLError):
            return True
    return False


async def one(kind, i):
    while time.monotonic() < stop_at:
        writer = None
        try:
            use_tls = kind in ("head", "body")
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    HOST, PORT, ssl=TLS if use_tls else None,
                    server_hostname="bench.local" if use_tls else None,
                    local_addr=source(i)),
                timeout=10)
            counts["opened"] += 1
            trickle = None
            if kind == "handshake":
                writer.write(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))
            elif kind == "head":
                writer.write(b"GET / HTTP/1.1\r\nHost: bench.local\r\nX-Slow: ")
            elif kind == "body":
                writer.write(b"POST /upload HTTP/1.1\r\nHost: bench.local\r\n"
                             b"Content-Length: 100000\r\n\r\n")
                trickle = lambda: writer.write(b"x")
            if await wait_for_close(reader, trickle):
                counts["closed_by_server"] += 1
        except (asyncio.TimeoutError, ConnectionError, OSError, ssl.SSLError):
            counts["failed_to_open"] += 1
            await asyncio.sleep(0.5)
        finally:
            if writer is not None:
                writer.transport.abort()


async def main():
    kinds = ["idle", "handshake", "head", "body"]
    tasks = []
    for i in range(TOTAL):
        tasks.append(asyncio.create_task(one(kinds[i % 4], i)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # ramp up instead of one SYN burst
    await asyncio.gather(*tasks)
    print(f"attack: {TOTAL} connections held for {SECONDS:.0f} s from {SOURCES} addresses: "
          f"{counts['opened']} opened, {counts['closed_by_server']} closed by the server, "
          f"{counts['failed_to_open']} failed to open")


asyncio.run(main())
