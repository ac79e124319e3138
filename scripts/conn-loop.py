#!/usr/bin/env python3
"""A new-connection loop: opens one HTTP connection after another (GET /peer,
`Connection: close`) for a while and reports how many failed and the longest
time no connection succeeded (tests/fleet_e2e.rs and scripts/demo-ha.sh run
it across a gateway failover).

usage: conn-loop.py HOST PORT SECS [INTERVAL_MS] [TIMEOUT_S]
  a new connection every INTERVAL_MS (default 20), each given TIMEOUT_S
  (default 3: a lost SYN is retransmitted after 1 s and may still succeed)

prints `attempts=<n> ok=<n> failed=<n> longest_gap_ms=<ms> slowest_ms=<ms>
errors=<kinds>`; longest_gap_ms is the longest time between two successful
connections' completions (the failover as a client sees it).
"""
import collections
import socket
import sys
import time

host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
interval = (float(sys.argv[4]) if len(sys.argv) > 4 else 20.0) / 1000.0
timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0

attempts = ok = 0
errors = collections.Counter()
last_ok = start = time.monotonic()
longest_gap = 0.0
slowest = 0.0
while time.monotonic() - start < secs:
    t0 = time.monotonic()
    attempts += 1
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /peer HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            if not data.startswith(b"HTTP/1.") or b" 200 " not in data.split(b"\r\n", 1)[0]:
                raise ValueError("bad response")
        now = time.monotonic()
        ok += 1
        longest_gap = max(longest_gap, now - last_ok)
        last_ok = now
        slowest = max(slowest, now - t0)
    except Exception as e:  # noqa: BLE001 - counted by kind
        errors[type(e).__name__] += 1
    rest = interval - (time.monotonic() - t0)
    if rest > 0:
        time.sleep(rest)
longest_gap = max(longest_gap, time.monotonic() - last_ok)
kinds = ",".join(f"{k}x{v}" for k, v in sorted(errors.items())) or "none"
print(
    f"attempts={attempts} ok={ok} failed={attempts - ok} longest_gap_ms={longest_gap * 1000:.0f} "
    f"slowest_ms={slowest * 1000:.0f} errors={kinds}",
    flush=True,
)
