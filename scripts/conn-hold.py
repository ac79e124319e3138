#!/usr/bin/env python3
"""Opens and holds many HTTP keep-alive connections (scripts/bench-cps.sh's
concurrency run; wrk cannot bind source addresses, and from one address the
kernel's search for a free port slows connect() to a crawl near 60,000).

usage: conn-hold.py HOST PORT N SOURCES HOLD_SECS
  SOURCES  comma-separated client addresses; connection i binds to
           SOURCES[i % len] with a kernel-chosen port

Opens N connections (at most 512 connecting at once; 5 s to connect, one
SYN retransmission), each does one HTTP/1.1 GET and reads the whole
response; prints `opened=<n> failed=<n> secs=<s> errors=<kinds>` when every
attempt has ended, holds them HOLD_SECS, then does one more GET on every
held connection (`again_ok=<n> again_failed=<n>`) and closes them.
"""
import asyncio
import collections
import resource
import sys
import time

TIMEOUT = 5.0


async def request(r, w):
    w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), TIMEOUT)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await asyncio.wait_for(r.readexactly(length), TIMEOUT)


async def one(host, port, src, sem, errors):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(src, 0)), TIMEOUT)
        except Exception as e:  # noqa: BLE001 - counted by kind
            errors[f"connect: {type(e).__name__}"] += 1
            return None
        try:
            await request(r, w)
        except Exception as e:  # noqa: BLE001
            errors[f"request: {type(e).__name__}"] += 1
            w.close()
            return None
        return r, w


async def again(conn, sem):
    async with sem:
        try:
            await request(*conn)
            return True
        except Exception:  # noqa: BLE001
            return False


async def main():
    host, port, n, sources, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","), float(sys.argv[5])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sem = asyncio.Semaphore(512)
    errors = collections.Counter()
    t0 = time.monotonic()
    conns = await asyncio.gather(*(one(host, port, sources[i % len(sources)], sem, errors) for i in range(n)))
    held = [c for c in conns if c is not None]
    kinds = ",".join(f"{k.replace(' ', '')}x{v}" for k, v in sorted(errors.items())) or "none"
    print(f"opened={len(held)} failed={n - len(held)} secs={time.monotonic() - t0:.1f} errors={kinds}", flush=True)
    await asyncio.sleep(hold)
    ok = sum(await asyncio.gather(*(again(c, sem) for c in held)))
    print(f"again_ok={ok} again_failed={len(held) - ok}", flush=True)
    for _, w in held:
        w.close()


asyncio.run(main())
