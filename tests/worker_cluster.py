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


def wait_for_all(processes, timeout):
    """Waits for every worker; kills them all if one fails or hangs.

    A worker whose peer died blocks in a collective op forever, so the
    first failure ends the others.
    """
    errors = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=timeout)
            if process.returncode != 0:
                errors.append(stderr[-3000:])
                break
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert not errors, errors[0]
