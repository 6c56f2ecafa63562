#!/usr/bin/env python3
"""Pixel hits at a steady rate, as a busy page would send them (tests/faults/network_test.sh).

    pixel_sender.py HOST PORT RATE SECONDS TAG

Sends GET /p.gif?site=faults&tag=TAG&i=N over keep-alive connections, about RATE a second for
SECONDS, and prints how many were answered 200 (each such hit is an event the agent owes).
"""
import http.client
import sys
import time
import urllib.parse

host, port = sys.argv[1], int(sys.argv[2])
rate, seconds = float(sys.argv[3]), float(sys.argv[4])
tag = urllib.parse.quote(sys.argv[5])
answered = 0
conn = None
start = time.monotonic()
i = 0
while time.monotonic() - start < seconds:
    i += 1
    try:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", f"/p.gif?site=faults&tag={tag}&i={i}")
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            answered += 1
    except (OSError, http.client.HTTPException):
        conn = None
    next_at = start + i / rate
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(answered)
