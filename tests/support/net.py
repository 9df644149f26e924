import random
import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def spare_loopback_ip(port: int = 25) -> str:
    """A random 127.x.y.z other than 127.0.0.1 with nothing bound on `port` (mail hosts found by MX use 25).

    Raises PermissionError where the port is privileged and we are not root.
    """
    for _ in range(100):
        ip = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((ip, port))
                return ip
            except PermissionError:
                raise
            except OSError:
                continue
    raise AssertionError(f"no free loopback address for port {port}")
