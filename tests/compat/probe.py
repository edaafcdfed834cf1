"""probe: one request to a line-based server from a chosen source address.

Usage: python3 probe.py SRC PORT SEND EXPECT

Connects from SRC (port 0) to 127.0.0.1:PORT, sends SEND (Python escapes
such as \\r\\n are decoded; empty sends nothing), then reads until a line
matches the regular expression EXPECT or 5 seconds pass.  Prints what it
read; exit status 0 on a match, 1 otherwise.
"""
import re
import socket
import sys
import time


def main():
    src, port, send, expect = sys.argv[1:5]
    pattern = re.compile(expect.encode(), re.MULTILINE)
    deadline = time.monotonic() + 5
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5,
                                  source_address=(src, 0)) as s:
        if send:
            s.sendall(send.encode().decode("unicode_escape").encode())
        got = b""
        while not pattern.search(got) and time.monotonic() < deadline:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
    sys.stdout.write(got.decode(errors="replace"))
    return 0 if pattern.search(got) else 1


if __name__ == "__main__":
    sys.exit(main())
