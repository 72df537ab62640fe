"""A canned OpenAI-compatible endpoint on loopback, for measuring a peer through its own
HTTP transport: every POST answers with the same chat-completion body (given as a JSON
string on the command line), with keep-alive; GET /health answers 200. It runs as its own
process so it never competes with the peer for the GIL.

usage: python bench/canned_server.py BODY_JSON   (prints "listening on http://HOST:PORT/v1")
"""
import http.server
import socket
import sys


def main():
    body = sys.argv[1].encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms per answer

        def _answer(self, code, payload):
            head = (f"HTTP/1.1 {code} OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n").encode()
            self.wfile.write(head + payload)  # one write: headers and body together

        def do_POST(self):  # noqa: N802 - http.server's naming
            # A client that writes headers and body apart would otherwise wait for this
            # side's delayed ACK (tens of ms) before its body leaves: acknowledge at once.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(200, body)

        def do_GET(self):  # noqa: N802
            self._answer(200, b"{}")

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on http://127.0.0.1:{srv.server_address[1]}/v1", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
