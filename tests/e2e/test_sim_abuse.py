"""End-to-end tests of `dspyc sim` under abusive clients, over loopback: idle half-sent
requests and large partial bodies must not stop it answering a fresh client, nor grow its
memory without bound; and each limit flag (--header-timeout-ms, --body-timeout-ms,
--max-connections, --max-connections-per-ip, --max-body-bytes-total) has its effect. Loops
are bounded; times are generous bounds, far from the deadlines they check."""
import resource
import socket
import time

import httpx
import pytest

from conftest import start_sim

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HALF_HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             b"Content-Type: application/json\r\n")


def chat(base, timeout=10):
    body = {"model": "dspyc-sim", "messages": [{"role": "user", "content": "Hello there"}]}
    t0 = time.monotonic()
    r = httpx.post(base + "/chat/completions", json=body, timeout=timeout)
    return r, time.monotonic() - t0


def stats(base):
    return httpx.get(base[: -len("/v1")] + "/admin/stats", timeout=10).json()


def port_of(base):
    return int(base.rsplit(":", 1)[1].split("/")[0])


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect(port, data=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        s.sendall(data)
    return s


def closed_within(s, seconds):
    """True when the server closes s (EOF or reset) within `seconds`."""
    s.settimeout(seconds)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def open_many(port, n, data):
    socks = []
    for _ in range(n):
        try:
            socks.append(connect(port, data))
        except OSError:  # the server closed an older one meanwhile, or refused this one
            pass
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.fixture(autouse=True)
def _enough_fds_here():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and hard >= 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 2048, "the test needs 2048 fds"
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_half_sent_requests_do_not_lock_out_a_new_client():
    # Under a 1,024 open-files limit, 1,000 connections that sent half a request head and
    # then nothing used to take every slot until the 120 s idle timeout.
    proc, base = start_sim(preexec_fn=low_nofile)
    socks = open_many(port_of(base), 1000, HALF_HEAD)
    try:
        r, took = chat(base, timeout=30)
        assert r.status_code == 200, r.text
        assert took < 8  # answered long before the 10 s head deadline could have helped
        st = stats(base)
        assert st["evicted"] > 0  # room was made by closing the oldest half-sent ones
        assert st["connections"] <= 1024
        assert rss_mb(proc.pid) < 200
    finally:
        close_all(socks)


def test_large_partial_bodies_keep_memory_bounded():
    # Connections that announce a 4 MB body and send most of it, then stall: the bytes of
    # bodies being received are capped, so memory stays bounded and new clients are served.
    proc, base = start_sim("--max-body-bytes-total", "32M")
    port = port_of(base)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 4194304\r\n\r\n")
    chunk = b" " * (3 << 20)
    socks = []
    try:
        for _ in range(100):
            try:
                s = connect(port, head)
                socks.append(s)
                s.sendall(chunk)
            except OSError:  # refused with a 503 and closed: fine
                pass
        time.sleep(0.5)  # let the server read what was sent (not a barrier: a bound)
        st = stats(base)
        assert st["body_bytes"] <= 32 << 20
        assert st["bodies_refused"] >= 80
        assert rss_mb(proc.pid) < 150  # without the cap: 100 x 3 MB held
        refused = connect(port, head)
        reply = refused.recv(4096)
        refused.close()
        assert reply.startswith(b"HTTP/1.1 503") and b"Retry-After" in reply, reply
        r, _ = chat(base)
        assert r.status_code == 200, r.text
    finally:
        close_all(socks)
    # Once those connections go, their bytes are released and big bodies fit again.
    deadline = time.monotonic() + 10
    while stats(base)["body_bytes"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(base)["body_bytes"] == 0


def test_header_timeout_closes_a_slow_head():
    _, base = start_sim("--header-timeout-ms", "300")
    s = connect(port_of(base), HALF_HEAD)
    assert closed_within(s, 5)
    s.close()
    # Dripping bytes does not help: it is a deadline, not an idle timer.
    s = connect(port_of(base), b"POST /v1/chat/completions HTTP/1.1\r\n")
    t0, closed = time.monotonic(), False
    while not closed and time.monotonic() - t0 < 5:
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            closed = True
        closed = closed or closed_within(s, 0.1)
    s.close()
    assert closed
    assert stats(base)["header_timeouts"] >= 2
    # The default (10 s) leaves the same connection open for now.
    _, base2 = start_sim()
    s = connect(port_of(base2), HALF_HEAD)
    assert not closed_within(s, 1)
    s.close()
    assert stats(base2)["header_timeouts"] == 0


def test_body_timeout_closes_a_slow_body():
    _, base = start_sim("--body-timeout-ms", "300")
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
    s = connect(port_of(base), head)
    t0, closed = time.monotonic(), False
    while not closed and time.monotonic() - t0 < 5:  # drip a byte every 100 ms
        try:
            s.sendall(b" ")
        except OSError:
            closed = True
        closed = closed or closed_within(s, 0.1)
    s.close()
    assert closed
    st = stats(base)
    assert st["body_timeouts"] == 1 and st["header_timeouts"] == 0
    r, _ = chat(base)
    assert r.status_code == 200


def test_max_connections_closes_the_oldest_idle_ones():
    _, base = start_sim("--max-connections", "20")
    port = port_of(base)
    socks = [connect(port) for _ in range(30)]
    try:
        assert closed_within(socks[0], 5)  # the oldest made room
        assert not closed_within(socks[-1], 0.2)  # the newest is still open
        r, _ = chat(base)
        assert r.status_code == 200
        st = stats(base)
        assert st["evicted"] >= 10
        assert st["connections"] <= 20
    finally:
        close_all(socks)


def test_max_connections_per_ip_refuses_more_from_one_address():
    _, base = start_sim("--max-connections-per-ip", "3")
    port = port_of(base)
    socks = [connect(port) for _ in range(3)]
    try:
        extra = connect(port)
        assert closed_within(extra, 5)  # the fourth from 127.0.0.1 is closed at once
        extra.close()
        with pytest.raises(httpx.TransportError):
            chat(base)
    finally:
        close_all(socks)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            r, _ = chat(base)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    assert r.status_code == 200


def test_limit_flags_are_checked():
    import subprocess
    from conftest import DSPYC
    for args, says in ((["--header-timeout-ms", "0"], "--header-timeout-ms"),
                       (["--body-timeout-ms", "0"], "--body-timeout-ms"),
                       (["--max-body-bytes-total", "1k"], "--max-body-bytes-total")):
        r = subprocess.run([DSPYC, "sim", "--port", "0", *args], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and says in r.stderr, r.stderr
