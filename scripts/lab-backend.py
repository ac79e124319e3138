#!/usr/bin/env python3
"""A lab backend: HTTP on :80 answering with its name, UDP echo on :7.

Runs inside a backend namespace (scripts/demo.sh starts one per Pod).
Usage: lab-backend.py NAME
"""
import http.server
import socket
import sys
import threading

NAME = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{NAME}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def udp_echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 7))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(f"{NAME}: ".encode() + data, peer)


threading.Thread(target=udp_echo, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 80), Handler).serve_forever()
