"""forking_echo: socketserver.ForkingTCPServer, one process per client.

Usage: python3 forking_echo.py

Listens on 127.0.0.1 (a free port, printed as "port=N"), greets each
client with "hello" and echoes its lines until it leaves.
"""
import socketserver


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"hello\n")
        for line in self.rfile:
            self.wfile.write(line)


class Server(socketserver.ForkingTCPServer):
    allow_reuse_address = True


with Server(("127.0.0.1", 0), Echo) as server:
    print("port=%d" % server.server_address[1], flush=True)
    server.serve_forever()
