"""Small socket programs for the network tests; stdlib only, so the host's Python can run
them inside a busybox container (with /usr bind-mounted) as well as on the host.

    peer.py serve-tcp ADDR PORT    answer each HTTP request with "peer-ok"; print "PEER GET"
    peer.py serve-udp ADDR PORT    print "PEER PAYLOAD" for each datagram; never answer
    peer.py echo-udp ADDR PORT     send every datagram back to where it came from
    peer.py send-udp SRC DST PORT PAYLOAD   one datagram from local address SRC

Servers print "listening" once bound, then one line per peer, flushed.
"""

import socket
import sys


def serve_tcp(addr: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(16)
        print("listening", flush=True)
        while True:
            conn, peer = s.accept()
            with conn:
                conn.settimeout(5)
                try:
                    request = conn.recv(4096)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: 8\r\n\r\npeer-ok\n")
                except OSError:
                    continue
            print(peer[0], request.split(b" ", 1)[0].decode(errors="replace"), flush=True)


def serve_udp(addr: str, port: int, echo: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((addr, port))
        print("listening", flush=True)
        while True:
            data, peer = s.recvfrom(65535)
            if echo:
                s.sendto(data, peer)
            else:
                print(peer[0], data.decode(errors="replace"), flush=True)


def send_udp(src: str, dst: str, port: int, payload: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.sendto(payload.encode(), (dst, port))


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "serve-tcp":
        serve_tcp(argv[1], int(argv[2]))
    elif mode in ("serve-udp", "echo-udp"):
        serve_udp(argv[1], int(argv[2]), echo=mode == "echo-udp")
    elif mode == "send-udp":
        send_udp(argv[1], argv[2], int(argv[3]), argv[4])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
