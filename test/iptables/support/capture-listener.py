"""Listens on the given TCP and UDP ports (IPv4 and IPv6) and answers every connection or datagram with one JSON line
saying who answered and the connection's original destination (SO_ORIGINAL_DST), which Node.js
cannot read. Usage: capture-listener.py ROLE PORT...; prints READY once every port is bound."""
import json
import socket
import struct
import sys
import threading

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST is 80 too (on SOL_IPV6)


def original_dst(conn, family):
    try:
        if family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            return "%s:%d" % (socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack("!H", raw[2:4])[0])
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return "[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack("!H", raw[2:4])[0])
    except OSError:
        return None  # no conntrack entry: the connection was not NATed


def serve(sock, family, role, port):
    while True:
        conn, peer = sock.accept()
        with conn:
            conn.settimeout(2)
            data = b""
            try:
                while not data.endswith(b"\n"):
                    chunk = conn.recv(256)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            reply = {
                "role": role,
                "port": port,
                "tag": data.decode().strip(),
                "peer": peer[0],
                "origDst": original_dst(conn, family),
            }
            try:
                conn.sendall((json.dumps(reply) + "\n").encode())
            except OSError:
                pass


def serve_udp(sock, role, port):
    while True:
        data, peer = sock.recvfrom(512)
        reply = {"role": role, "port": port, "tag": data.decode().strip(), "peer": peer[0], "origDst": None}
        sock.sendto(json.dumps(reply).encode(), peer)


def main():
    role = sys.argv[1]
    for port in map(int, sys.argv[2:]):
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, port))
            sock.listen(64)
            threading.Thread(target=serve, args=(sock, family, role, port), daemon=True).start()
            udp = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            udp.bind((addr, port))
            threading.Thread(target=serve_udp, args=(udp, role, port), daemon=True).start()
    print("READY", flush=True)
    sys.stdin.read()  # run until the test closes our stdin


main()
