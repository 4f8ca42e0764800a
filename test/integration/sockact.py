"""sockact.py PORT SNDBUF ARGV...: listen on 127.0.0.1:PORT with SO_SNDBUF
set to SNDBUF bytes, then exec ARGV with that socket passed the systemd way
(fd 3, LISTEN_FDNAMES=lst), so dmtls serves `--listen systemd:lst`.

Accepted sockets inherit the listener's send buffer size: this is how a
test gives dmtls a small send buffer without touching its code."""

import os
import socket
import sys


def main():
    port, sndbuf, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    if s.fileno() != 3:
        os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1",
                      LISTEN_FDNAMES="lst")
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
