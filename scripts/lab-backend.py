#!/usr/bin/env python3
"""A lab backend: HTTP on :80 answering with its name, UDP echo on :7.

Both families: one dual-stack socket each ([::], IPV6_V6ONLY off), so the
Pod answers on its IPv4 and its IPv6 address.
GET /peer answers "NAME PEER" (the connection's source address: the
gateway's SNAT address in snat mode, the client's in dnat mode); a UDP
datagram "peer?" gets "NAME PEER" back, any other "NAME: <datagram>".

Runs inside a backend namespace (scripts/demo.sh starts one per Pod).
Usage: lab-backend.py NAME [--keep-alive]
  --keep-alive: HTTP/1.1 persistent connections (scripts/conn-hold.py holds
  them); without it HTTP/1.0, one request per connection
"""
import http.server
import socket
import sys
import threading

NAME = sys.argv[1]
KEEP_ALIVE = "--keep-alive" in sys.argv[2:]


def peer_ip(addr):
    ip = addr[0]
    return ip[7:] if ip.startswith("::ffff:") else ip


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1" if KEEP_ALIVE else "HTTP/1.0"

    def do_GET(self):
        if self.path == "/peer":
            body = f"{NAME} {peer_ip(self.client_address)}\n".encode()
        else:
            body = f"{NAME}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def udp_echo():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 7))
    while True:
        data, peer = s.recvfrom(2048)
        if data == b"peer?":
            s.sendto(f"{NAME} {peer_ip(peer)}".encode(), peer)
        else:
            s.sendto(f"{NAME}: ".encode() + data, peer)


threading.Thread(target=udp_echo, daemon=True).start()
Server(("::", 80), Handler).serve_forever()
