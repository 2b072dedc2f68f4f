"""What the tests that start worker processes on 127.0.0.1 share."""

import socket


def free_ports(count):
    """Ports free on 127.0.0.1 right now (held open together: distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
