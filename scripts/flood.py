#!/usr/bin/env python3
"""Flood ferry: the full-size probes of issue 12, one attack at a time.

    scripts/flood.sh [--quick] [--only ROW,ROW] [--ferry-bin PATH]

Each row starts a fresh `ferry server` (release build, the defaults unless
the row says otherwise) on 127.0.0.1, with a token file of two strong
tokens: the legitimate client's and the attackers'. The attack comes from
127.0.0.2 and up (client sockets bound to those source addresses, so the
per-address limits see separate addresses where a row says so); the
legitimate client is the real `ferry client` binary on 127.0.0.1, pinned to
the server's fingerprint, with its own token file. While the attack runs,
the legitimate client makes a `list`, a `get` of 1 MiB and a `put` of
1 MiB, several times; the table shows the median and the largest of each,
wall clock from process start to exit. A thread samples the server's RSS,
open descriptors and threads from /proc ten times a second: before (after
one warm-up round of legitimate requests), the peak during the attack, and
after (once the attackers are gone, the descriptors and threads have come
back, and 12 s more: the server gives freed memory back every 10 s).

Rows (issue 12, "Why" and "Goal"):

  1a-d  900 connections trickling a put body (one byte every 50 s), TLS and
        plain; 900 gets of a 10 MiB file whose replies are never read, TLS
        and plain. Legitimate list/get/put each within 1 s.
  2a    1,000 connections asking `list -l` of a 200,000-entry directory and
        reading nothing: server RSS under 256 MiB, legitimate requests
        within 1 s.
  2b    `list -l` of a directory while 8 clients put and delete in it:
        no listing fails; vanished entries are counted instead.
  3     On a 256 MiB tmpfs: 1,000 uploads each declaring 64 MiB and sending
        one byte claim at most a few MiB (statvfs); a legitimate put works.
  4     200 puts to new 2,046-level paths, each declaring more than the free
        space, on one connection: all refused, 0 new directories.
  5     One address opening about 33 silent connections a second for 60 s:
        the token holder on 127.0.0.1 is served 25 of 25 times.
  6a    With --max-connections connections held, a flood of further
        connections for 15 s: descriptors and RSS bounded and given back,
        log lines few.
  6b    A replayed-ClientHello flood for 15 s: the same, and legitimate
        requests within 1 s.
  7     Server stdout a pipe nobody reads, 3,000 empty connections and
        10,000 report lines' worth of requests: the server keeps serving,
        and says `N report lines dropped` once the pipe is read.
  8a-b  One address guessing tokens as fast as it can for 30 s, TLS and
        plain: how many guesses reached the token check (from the
        server's reports); legitimate requests unaffected.
  9     Every row: RSS after the attack within 2x of RSS before it (the
        last column).

Rows 2a and 3 run with --max-connections 1024: their 1,000 attackers plus
the legitimate client would not fit in the default 1,000, and then the
legitimate client would be turned away by design. Row 6a expects the
legitimate client to be turned away (busy) while the slots are held, and
does not count that against the row. --quick scales the counts and times
down (about 3 minutes) and scales --max-connections down with them in 6a.

Every process is started in a session of its own and stopped by its id;
every socket, temporary directory and tmpfs mount is removed at the end,
Ctrl-C and SIGTERM included. The table is printed on stdout and saved to
target/flood/results.md; server logs stay in target/flood/logs/.
Standard library only; must run as root for the tmpfs of row 3 (the row
is skipped, with the reason, where mounting fails). Run it through
scripts/flood.sh, which builds ferry and passes --ferry-bin.
"""

import argparse
import concurrent.futures
import datetime
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# The benchmark's helpers for processes, logs and tables; no __pycache__
# left in the clone for importing them.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402  (after the path is set)
    FINGERPRINT_PATTERN, KIB, MIB, START_PATTERN, FerryConfig, Processes, ferry_trust, log,
    log_tail, markdown_table, read_start_line)

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOOD_DIR = REPO_ROOT / "target" / "flood"
LOG_DIR = FLOOD_DIR / "logs"
RESULTS_FILE = FLOOD_DIR / "results.md"

SERVER_ADDRESS = "127.0.0.1"
LEGIT_ADDRESS = "127.0.0.1"
# Attackers that must not be refused by the per-address cap (256) spread
# over these four; a single flooding address is the first of them.
ATTACKER_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
FLOOD_ADDRESS = "127.0.0.2"
# Row 6a: the flood beside the addresses holding the slots.
EXTRA_FLOOD_ADDRESS = "127.0.0.6"

LEGIT_LIMIT_S = 1.0
LISTING_RSS_LIMIT_MIB = 256
DISK_CLAIM_LIMIT_MIB = 8
LOG_LINES_LIMIT = 100
# The server's default --max-handshakes-per-ip.
PER_IP_HANDSHAKES = 8
# Failures of connections before their handshake are summed up once a
# window of 10 s ends: waiting this long after a flood sees its summaries.
SUMMARY_WAIT_S = 11
RSS_RETURN_FACTOR = 2
START_TIMEOUT_S = 30
CLIENT_TIMEOUT_S = 60
# How long, at most, the descriptors and threads are given to come back
# after an attack: tokio lets an idle blocking thread go after 10 s.
SETTLE_LIMIT_S = 20
# Then how long RSS is given to fall: the server gives freed memory back
# to the kernel every 10 s (malloc_trim), so one full period and a margin.
RSS_SETTLE_S = 12
SAMPLE_INTERVAL_S = 0.1
# Receive buffer asked for by attackers that never read, so that their
# own side holds little (the kernel doubles it). The server's send buffer
# still fills as far as the kernel lets it: the notes show the kernel's
# TCP memory beside the server's RSS.
TINY_RCVBUF = 4096
# IP_BIND_ADDRESS_NO_PORT from <linux/in.h>: a socket bound to a source
# address picks its port at connect, by the whole 4-tuple, so floods from
# one address do not run out of ports.
IP_BIND_ADDRESS_NO_PORT = 24

# The wire protocol, version 3 (PROTOCOL.md).
PREAMBLE = b"FERRY\x00\x00\x03"
TAG_PUT, TAG_GET, TAG_LIST, TAG_DELETE, TAG_HELLO, TAG_STAT = 0x01, 0x02, 0x03, 0x04, 0x05, 0x09
TAG_TRAILER, TAG_PROCEED, TAG_BODY, TAG_ENTRY, TAG_DONE = 0x10, 0x20, 0x21, 0x22, 0x23
TAG_WELCOME, TAG_INFO, TAG_OMITTED, TAG_ERROR = 0x24, 0x25, 0x26, 0x7F
OMITTED_VANISHED = 2
# BLAKE3 of no bytes: the trailer of an empty upload, so the raw clients
# need no BLAKE3 of their own.
EMPTY_DIGEST = bytes.fromhex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
ERROR_WORDS = {1: "bad-request", 4: "not-found", 5: "already-exists", 9: "permission-denied",
               10: "insufficient-storage", 12: "io-error", 13: "busy", 14: "too-large",
               15: "timeout", 16: "unauthorized", 17: "forbidden", 20: "shutting-down"}

TLS_CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
TLS_CONTEXT.check_hostname = False
# Attackers do not pin: they care for nothing the server says.
TLS_CONTEXT.verify_mode = ssl.CERT_NONE
TLS_CONTEXT.minimum_version = ssl.TLSVersion.TLSv1_3


@dataclass
class Scale:
    """Counts and times of every row; FULL is issue 12's."""
    tries: int              # legitimate rounds (list, get, put) per row
    trickle: int            # row 1: trickling puts
    trickle_hold: float
    trickle_every: float
    gets: int               # row 1: gets never read
    get_hold: float
    entries: int            # row 2a: directory size
    listers: int
    list_hold: float
    churn_lists: int        # row 2b
    churners: int
    uploads: int            # row 3
    upload_hold: float
    refused: int            # row 4
    silent_seconds: float   # row 5
    silent_rate: float
    silent_attempts: int
    held: int               # row 6a: slots held (and --max-connections in quick)
    flood_seconds: float    # rows 6a and 6b
    empty: int              # row 7
    spam_lines: int
    guess_seconds: float    # row 8


FULL = Scale(tries=5, trickle=900, trickle_hold=55, trickle_every=50, gets=900, get_hold=20,
             entries=200_000, listers=1000, list_hold=20, churn_lists=10, churners=8,
             uploads=1000, upload_hold=10, refused=200, silent_seconds=60, silent_rate=33,
             silent_attempts=25, held=1000, flood_seconds=15, empty=3000, spam_lines=10_000,
             guess_seconds=30)
QUICK = Scale(tries=3, trickle=100, trickle_hold=6, trickle_every=50, gets=100, get_hold=4,
              entries=20_000, listers=100, list_hold=4, churn_lists=5, churners=8,
              uploads=100, upload_hold=3, refused=50, silent_seconds=12, silent_rate=33,
              silent_attempts=8, held=100, flood_seconds=5, empty=500, spam_lines=8000,
              guess_seconds=6)


class FloodError(Exception):
    """A failure that leaves a row without a verdict."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived; unwinds like Ctrl-C so that cleanup runs."""


class Refused(Exception):
    """The server answered with an Error frame."""

    def __init__(self, code, message):
        super().__init__(f"{ERROR_WORDS.get(code, f'error-{code}')}: {message}")
        self.code = code


# ---------------------------------------------------------------- wire


def wire_str(text):
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def frame(tag, payload=b""):
    body = bytes([tag]) + payload
    return len(body).to_bytes(4, "big") + body


def hello(token):
    return PREAMBLE + frame(TAG_HELLO, wire_str(token))


def put_frame(size, name):
    return frame(TAG_PUT, size.to_bytes(8, "big") + wire_str(name))


def get_frame(name):
    return frame(TAG_GET, wire_str(name))


def list_frame(directory, long=True):
    return frame(TAG_LIST, bytes([1 if long else 0]) + wire_str(directory))


def delete_frame(name):
    return frame(TAG_DELETE, b"\x00" + wire_str(name))


def stat_frame(name):
    return frame(TAG_STAT, wire_str(name))


def recv_exactly(sock, count):
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return bytes(data)


def read_frame(sock):
    length = int.from_bytes(recv_exactly(sock, 4), "big")
    body = recv_exactly(sock, length)
    return body[0], body[1:]


def raise_error(payload):
    code = int.from_bytes(payload[:2], "big")
    length = int.from_bytes(payload[2:4], "big")
    raise Refused(code, payload[4:4 + length].decode(errors="replace"))


def expect(sock, tag):
    """Reads one frame; its payload if it has `tag`, Refused if an Error."""
    got, payload = read_frame(sock)
    if got == TAG_ERROR:
        raise_error(payload)
    if got != tag:
        raise FloodError(f"expected frame {tag:#x}, got {got:#x}")
    return payload


def source_socket(source, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    return sock


def abort(sock):
    """Closes with a reset: no TIME_WAIT left behind on our side."""
    try:
        raw = sock
        if isinstance(sock, ssl.SSLSocket):
            raw = socket.socket(fileno=os.dup(sock.fileno()))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        if raw is not sock:
            raw.close()
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def open_session(target, source, token, rcvbuf=None, timeout=10):
    """A connection through the handshake, Welcome read: a socket (TLS or
    plain) ready for requests. Refused if the server answers an Error."""
    sock = source_socket(source, rcvbuf)
    try:
        sock.settimeout(timeout)
        sock.connect((SERVER_ADDRESS, target.port))
        if not target.plain:
            sock = TLS_CONTEXT.wrap_socket(sock, server_hostname=None)
        sock.sendall(hello(token))
        if recv_exactly(sock, len(PREAMBLE)) != PREAMBLE:
            raise FloodError("the server's preamble is not ferry 3's")
        expect(sock, TAG_WELCOME)
        return sock
    except BaseException:
        abort(sock)
        raise


def failure_word(error):
    if isinstance(error, Refused):
        return ERROR_WORDS.get(error.code, f"error-{error.code}")
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(error, ssl.SSLError):
        return "tls-closed"
    if isinstance(error, (ConnectionError, OSError)):
        return "closed"
    return type(error).__name__


# ---------------------------------------------------------------- server


def listen_drops():
    """The kernel's counts of connections dropped at a full listen queue
    (TcpExt ListenOverflows and ListenDrops), machine-wide: a dropped SYN
    is sent again after a second, which a client sees as latency."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines, lines[1:]):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:])))
            return table.get("ListenOverflows", 0), table.get("ListenDrops", 0)
    return 0, 0


@dataclass
class Sample:
    rss_kib: int
    fds: int
    threads: int


def sample_process(pid):
    rss = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return Sample(rss, len(os.listdir(f"/proc/{pid}/fd")), threads)


def listen_backlog(port):
    """The listening socket's backlog, as `ss` shows it (Send-Q), or '?'."""
    try:
        done = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                              text=True, timeout=5)
        return done.stdout.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def kernel_tcp_kib():
    """Memory the kernel holds in TCP socket buffers, machine-wide: what
    a peer that reads nothing makes the server's socket hold, which RSS
    does not show."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") // KIB
    return 0


class Monitor:
    """Samples a process ten times a second and keeps the peaks since
    the last reset, with the kernel's TCP buffers beside them."""

    def __init__(self, pid):
        self.pid = pid
        self.lock = threading.Lock()
        self.peak = sample_process(pid)
        self.peak_tcp_kib = kernel_tcp_kib()
        self.last = self.peak
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.wait(SAMPLE_INTERVAL_S):
            try:
                now = sample_process(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            tcp = kernel_tcp_kib()
            with self.lock:
                self.last = now
                self.peak_tcp_kib = max(self.peak_tcp_kib, tcp)
                self.peak = Sample(max(self.peak.rss_kib, now.rss_kib),
                                   max(self.peak.fds, now.fds),
                                   max(self.peak.threads, now.threads))

    def now(self):
        return sample_process(self.pid)

    def reset_peak(self):
        with self.lock:
            self.peak = sample_process(self.pid)
            self.peak_tcp_kib = kernel_tcp_kib()

    def peaks(self):
        with self.lock:
            return self.peak

    def stop(self):
        self.stopping.set()
        self.thread.join()


class Server:
    """One `ferry server` for one row."""

    def __init__(self, run, name, root, plain=False, extra=(), stdout_pipe=False):
        self.run = run
        self.name = name
        self.plain = plain
        self.out_path = LOG_DIR / f"{name}.out"
        self.err_path = LOG_DIR / f"{name}.err"
        command = [run.ferry_bin, "server", "0", "--bind", SERVER_ADDRESS, "--root", root,
                   "--token-file", run.server_tokens]
        command += ["--plain"] if plain else ["--identity", run.identity]
        command += list(extra)
        self.command = command
        self.err_file = open(self.err_path, "wb")
        self.out_file = None if stdout_pipe else open(self.out_path, "wb")
        self.proc = run.procs.start(
            command, stdout=subprocess.PIPE if stdout_pipe else self.out_file,
            stderr=self.err_file, env=run.config.env)
        start_line = self._pipe_start_line() if stdout_pipe else self._file_start_line()
        port = START_PATTERN.search(start_line)
        if not port:
            raise FloodError(f"{name}: no port in the start line: {start_line!r}")
        self.port = int(port.group(1))
        fingerprint = FINGERPRINT_PATTERN.search(start_line)
        self.fingerprint = None if plain else fingerprint and fingerprint.group(1)
        if not plain and not self.fingerprint:
            raise FloodError(f"{name}: no fingerprint in the start line: {start_line!r}")
        self.monitor = Monitor(self.proc.pid)
        self.backlog = listen_backlog(self.port)

    def _file_start_line(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = read_start_line(self.out_path)
            if line:
                return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise FloodError(f"{self.name}: the server did not start:\n{log_tail(self.err_path)}")

    def _pipe_start_line(self):
        """The first line on a stdout pipe; the rest is left unread."""
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"\n" not in data and time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.1)
            if readable:
                chunk = os.read(fd, 1)
                if not chunk:
                    break
                data += chunk
        if b"\n" not in data:
            raise FloodError(f"{self.name}: the server did not start:\n{log_tail(self.err_path)}")
        return data.decode(errors="replace")

    def is_running(self):
        return self.proc.poll() is None

    def stop(self):
        self.monitor.stop()
        self.run.procs.stop(self.proc)
        for handle in (self.out_file, self.err_file):
            if handle:
                handle.close()

    def log_text(self):
        return "".join(path.read_text(errors="replace")
                       for path in (self.out_path, self.err_path) if path.exists())

    def attacker_lines(self):
        """Lines in the log so far but the legitimate client's reports."""
        legit = f" {LEGIT_ADDRESS}:"
        return sum(1 for line in self.log_text().splitlines() if legit not in line[:60])


@dataclass
class Target:
    port: int
    plain: bool


# ---------------------------------------------------------------- legitimate client


@dataclass
class Try:
    op: str
    ok: bool
    seconds: float
    detail: str = ""


class Legit:
    """The token holder on 127.0.0.1: the real `ferry client` binary."""

    def __init__(self, run, server):
        self.run = run
        self.server = server
        self.tries = {"list": [], "get": [], "put": []}
        self.count = 0

    def request(self, op, *args):
        self.count += 1
        command = [self.run.ferry_bin, "client", SERVER_ADDRESS, str(self.server.port),
                   *ferry_trust(self.server.fingerprint), "--token-file", self.run.legit_token,
                   "-q", op, *args]
        started = time.monotonic()
        try:
            done = subprocess.run([str(part) for part in command], stdin=subprocess.DEVNULL,
                                  capture_output=True, env=self.run.config.env,
                                  timeout=CLIENT_TIMEOUT_S)
            seconds = time.monotonic() - started
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            return Try(op, done.returncode == 0, seconds, detail[-1] if detail else "")
        except subprocess.TimeoutExpired:
            return Try(op, False, time.monotonic() - started, "client hung")

    def one(self, op):
        n = self.count
        if op == "list":
            result = self.request("list")
        elif op == "get":
            destination = self.run.downloads / f"get-{n}.bin"
            result = self.request("get", "legit/source-1MiB.bin", destination)
            destination.unlink(missing_ok=True)
        else:
            result = self.request("put", self.run.legit_source, f"legit/put-{n}.bin")
        return result

    def round(self, record=True):
        results = [self.one(op) for op in ("list", "get", "put")]
        if record:
            for result in results:
                self.tries[result.op].append(result)
        return results

    def rounds_over(self, seconds, count):
        """`count` rounds spread over `seconds`."""
        gap = seconds / max(count, 1)
        for _ in range(count):
            began = time.monotonic()
            self.round()
            time.sleep(max(0.0, gap - (time.monotonic() - began)))

    def all_tries(self):
        return [t for tries in self.tries.values() for t in tries]

    def verdict(self):
        """Whether every request succeeded within the limit, and if not why."""
        tries = self.all_tries()
        if not tries:
            return False, "no legitimate request was made"
        failed = [t for t in tries if not t.ok]
        slow = [t for t in tries if t.ok and t.seconds > LEGIT_LIMIT_S]
        if failed:
            return False, f"{len(failed)} legit requests failed ({failed[0].op}: {failed[0].detail})"
        if slow:
            worst = max(slow, key=lambda t: t.seconds)
            return False, f"{len(slow)} legit requests over {LEGIT_LIMIT_S:.0f} s (worst {worst.op} {worst.seconds:.2f} s)"
        return True, ""


def latency_cell(tries):
    if not tries:
        return "–"
    ok = [t.seconds for t in tries if t.ok]
    failed = [t for t in tries if not t.ok]
    cell = ""
    if ok:
        cell = f"{statistics.median(ok) * 1000:.0f} / {max(ok) * 1000:.0f}"
    if failed:
        words = sorted({short_failure(t.detail) for t in failed})
        cell += f"{'; ' if cell else ''}{len(failed)}/{len(tries)} failed ({', '.join(words)})"
    return cell


def short_failure(detail):
    match = re.search(r"failed ([a-z0-9-]+)", detail) or re.search(r"\b(busy|closed)\b", detail)
    return match.group(1) if match else (detail[:40] or "?")


# ---------------------------------------------------------------- attacks


class Attack:
    """Sockets and threads of one attack; close() ends them all."""

    def __init__(self):
        self.sockets = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []

    def keep(self, sock):
        with self.lock:
            self.sockets.append(sock)

    def thread(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def close(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            abort(sock)


def open_many(attack, target, count, sources, token, begin, rcvbuf=None):
    """`count` sessions from `sources` in turn, each given to `begin(sock,
    i)` after its Welcome; two handshakes at a time per address, under the
    server's per-address cap. Returns the failures by word."""
    failures = {}
    lock = threading.Lock()

    def note(word):
        with lock:
            failures[word] = failures.get(word, 0) + 1

    def one(i):
        if attack.stopping.is_set():
            return
        try:
            sock = open_session(target, sources[i % len(sources)], token, rcvbuf)
        except (OSError, Refused, FloodError) as error:
            note(failure_word(error))
            return
        attack.keep(sock)
        try:
            begin(sock, i)
        except (OSError, Refused, FloodError) as error:
            note(failure_word(error))

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2 * len(sources))
    try:
        for future in [pool.submit(one, i) for i in range(count)]:
            future.result()
    except BaseException:
        # Ctrl-C: the handshakes under way end within their timeout.
        attack.stopping.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failures


def failures_text(failures):
    return ", ".join(f"{count} {word}" for word, count in sorted(failures.items())) or "none"


def readable_count(sockets):
    """How many of `sockets` have something to read or are closed: for a
    connection the server should be silent on, the ones it ended."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    return len(poller.poll(0))


# ---------------------------------------------------------------- rows


@dataclass
class RowResult:
    row: str
    attack: str
    legit: dict = field(default_factory=dict)
    before: Sample = None
    peak: Sample = None
    after: Sample = None
    measured: str = ""
    verdict: str = "SKIP"
    why: str = ""
    # Listen-queue overflows and drops during the row (machine-wide).
    drops: tuple = None
    # The kernel's TCP buffers at their peak during the row (machine-wide).
    tcp_peak_kib: int = 0


def mib(kib):
    return kib / 1024


def memory_cell(result):
    if not (result.before and result.after):
        return "–"
    ratio = result.after.rss_kib / max(result.before.rss_kib, 1)
    word = "PASS" if ratio <= RSS_RETURN_FACTOR else "FAIL"
    return f"{word} (×{ratio:.1f})"


class Run:
    """What every row shares: the binary, tokens, identity, scratch space."""

    def __init__(self, args):
        self.args = args
        self.scale = QUICK if args.quick else FULL
        self.ferry_bin = args.ferry_bin
        self.procs = Processes()
        self.config = FerryConfig("ferry-flood-config-")
        self.work = Path(tempfile.mkdtemp(prefix="ferry-flood-"))
        self.mounts = []
        self.downloads = self.work / "downloads"
        self.downloads.mkdir()
        self.identity = self.config.path / "identity.pem"
        self.legit_token_value = secrets.token_hex(32)
        self.attacker_token = secrets.token_hex(32)
        self.server_tokens = self.config.path / "tokens"
        write_secret(self.server_tokens,
                     f"{self.legit_token_value} rw\n{self.attacker_token} rw\n")
        self.legit_token = self.config.path / "legit.token"
        write_secret(self.legit_token, self.legit_token_value + "\n")
        self.legit_source = self.work / "legit-1MiB.bin"
        self.legit_source.write_bytes(os.urandom(MIB))
        self.roots = 0

    def fresh_root(self, parent=None):
        """A served directory holding the legitimate client's 1 MiB file."""
        self.roots += 1
        root = Path(parent) if parent else self.work / f"root-{self.roots}"
        (root / "legit").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.legit_source, root / "legit" / "source-1MiB.bin")
        return root

    def mount_tmpfs(self, size):
        """A tmpfs of `size`, or None and why not."""
        point = self.work / f"tmpfs-{len(self.mounts) + 1}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            return None, (done.stderr.strip() or f"mount exited {done.returncode}")
        self.mounts.append(point)
        return point, ""

    def unmount(self, point):
        if point in self.mounts:
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)
            self.mounts.remove(point)

    def cleanup(self):
        self.procs.stop_all()
        for point in list(self.mounts):
            self.unmount(point)
        shutil.rmtree(self.work, ignore_errors=True)
        self.config.remove()


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class RowRun:
    """One row: its server, its legitimate client, its measurements."""

    def __init__(self, run, result, root, plain=False, extra=(), stdout_pipe=False):
        self.run = run
        self.result = result
        self.server = Server(run, f"{result.row}", root, plain, extra, stdout_pipe)
        self.target = Target(self.server.port, plain)
        self.legit = Legit(run, self.server)
        # Warm-up: the first requests of a server cost more than the rest.
        self.legit.round(record=False)
        result.before = self.server.monitor.now()
        self.server.monitor.reset_peak()
        self.drops_before = listen_drops()

    def attack_over(self):
        """Takes the peak; then waits for the descriptors to come back,
        and takes the after sample."""
        self.result.peak = self.server.monitor.peaks()
        self.result.tcp_peak_kib = self.server.monitor.peak_tcp_kib
        now = listen_drops()
        self.result.drops = tuple(n - b for n, b in zip(now, self.drops_before))
        self.settle()

    def settle(self):
        before = self.result.before
        deadline = time.monotonic() + SETTLE_LIMIT_S
        while time.monotonic() < deadline:
            now = self.server.monitor.now()
            if now.fds <= before.fds + 2 and now.threads <= before.threads + 2:
                break
            time.sleep(0.25)
        time.sleep(RSS_SETTLE_S)
        self.result.after = self.server.monitor.now()

    def finish(self):
        self.result.legit = self.legit.tries
        self.server.stop()


def row_trickle(run, plain):
    """1a/1b: connections that each declare a put of 1000 bytes and send a
    byte every 50 s, just under the stall limit."""
    s = run.scale
    mode = "plain" if plain else "TLS"
    result = RowResult(f"1{'b' if plain else 'a'}", f"{s.trickle} trickling puts ({mode})")
    row = RowRun(run, result, run.fresh_root(), plain)
    attack = Attack()
    try:
        def begin(sock, i):
            sock.sendall(put_frame(1000, f"trickle-{i}.bin"))
            expect(sock, TAG_PROCEED)
            sock.sendall(b"x")

        opened = time.monotonic()
        failures = open_many(attack, row.target, s.trickle, ATTACKER_ADDRESSES,
                             run.attacker_token, begin)
        held = len(attack.sockets)
        log(f"  {held} trickling in {time.monotonic() - opened:.1f} s; failures: {failures_text(failures)}")

        def trickle():
            while not attack.stopping.wait(s.trickle_every):
                for sock in list(attack.sockets):
                    try:
                        sock.send(b"x")
                    except OSError:
                        pass

        attack.thread(trickle)
        row.legit.rounds_over(s.trickle_hold, s.tries)
        left = max(0.0, s.trickle_hold - (time.monotonic() - opened))
        time.sleep(left)
        ended = readable_count(attack.sockets)
        server_fds = row.server.monitor.now().fds
    finally:
        attack.close()
    row.attack_over()
    row.finish()
    ok, why = row.legit.verdict()
    result.measured = (f"{held}/{s.trickle} trickling (failed to open: {failures_text(failures)}); "
                       f"{held - ended} still open after {s.trickle_hold:.0f} s; "
                       f"server fds at the end {server_fds}; threads peak {result.peak.threads}")
    result.verdict, result.why = ("PASS", "") if ok and held >= s.trickle * 0.95 else (
        "FAIL", why or f"only {held} of {s.trickle} attackers got going")
    return result


def row_gets(run, plain):
    """1c/1d: gets of a 10 MiB file whose replies are never read."""
    s = run.scale
    mode = "plain" if plain else "TLS"
    result = RowResult(f"1{'d' if plain else 'c'}", f"{s.gets} unread gets of 10 MiB ({mode})")
    root = run.fresh_root()
    (root / "big-10MiB.bin").write_bytes(os.urandom(10 * MIB))
    row = RowRun(run, result, root, plain)
    attack = Attack()
    try:
        def begin(sock, _i):
            sock.sendall(get_frame("big-10MiB.bin"))

        opened = time.monotonic()
        failures = open_many(attack, row.target, s.gets, ATTACKER_ADDRESSES,
                             run.attacker_token, begin, rcvbuf=TINY_RCVBUF)
        held = len(attack.sockets)
        log(f"  {held} gets unread in {time.monotonic() - opened:.1f} s; failures: {failures_text(failures)}")
        row.legit.rounds_over(s.get_hold, s.tries)
        server_fds = row.server.monitor.now().fds
    finally:
        attack.close()
    row.attack_over()
    row.finish()
    ok, why = row.legit.verdict()
    result.measured = (f"{held}/{s.gets} gets in flight (failed to open: {failures_text(failures)}); "
                       f"server fds at the end {server_fds}; threads peak {result.peak.threads}")
    result.verdict, result.why = ("PASS", "") if ok and held >= s.gets * 0.95 else (
        "FAIL", why or f"only {held} of {s.gets} attackers got going")
    return result


def make_entries(directory, count):
    directory.mkdir()
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            os.close(os.open(f"e{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def connections_for(attackers):
    """--max-connections for a row whose attackers and the legitimate
    client would not fit in the default."""
    return ["--max-connections", "1024"] if attackers + 8 > 1000 else []


def row_listings(run):
    """2a: list -l of a huge directory, the replies never read."""
    s = run.scale
    result = RowResult("2a", f"{s.listers} unread `list -l` of {s.entries:,} entries")
    root = run.fresh_root()
    began = time.monotonic()
    make_entries(root / "big", s.entries)
    log(f"  {s.entries:,} entries made in {time.monotonic() - began:.1f} s")
    row = RowRun(run, result, root, extra=connections_for(s.listers))
    attack = Attack()
    try:
        def begin(sock, _i):
            sock.sendall(list_frame("big", long=True))

        opened = time.monotonic()
        failures = open_many(attack, row.target, s.listers, ATTACKER_ADDRESSES,
                             run.attacker_token, begin, rcvbuf=TINY_RCVBUF)
        held = len(attack.sockets)
        log(f"  {held} listings unread in {time.monotonic() - opened:.1f} s; failures: {failures_text(failures)}")
        row.legit.rounds_over(s.list_hold, s.tries)
        server_fds = row.server.monitor.now().fds
    finally:
        attack.close()
    row.attack_over()
    row.finish()
    shutil.rmtree(root, ignore_errors=True)
    ok, why = row.legit.verdict()
    peak_mib = mib(result.peak.rss_kib)
    result.measured = (f"{held}/{s.listers} listings in flight (failed to open: {failures_text(failures)}); "
                       f"peak RSS {peak_mib:.0f} MiB (limit {LISTING_RSS_LIMIT_MIB}); "
                       f"server fds at the end {server_fds}; threads peak {result.peak.threads}")
    problems = [why] if not ok else []
    if peak_mib >= LISTING_RSS_LIMIT_MIB:
        problems.append(f"peak RSS {peak_mib:.0f} MiB")
    if held < s.listers * 0.95:
        problems.append(f"only {held} of {s.listers} attackers got going")
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


def row_churn(run):
    """2b: long listings of a directory in which 8 clients put and delete."""
    s = run.scale
    result = RowResult("2b", f"`list -l` while {s.churners} clients put and delete")
    root = run.fresh_root()
    (root / "churn").mkdir()
    row = RowRun(run, result, root)
    attack = Attack()
    churned = [0] * s.churners
    churn_errors = {}
    try:
        def churn(k):
            own = []
            try:
                sock = open_session(row.target, ATTACKER_ADDRESSES[k % len(ATTACKER_ADDRESSES)],
                                    run.attacker_token)
            except (OSError, Refused) as error:
                churn_errors[failure_word(error)] = churn_errors.get(failure_word(error), 0) + 1
                return
            attack.keep(sock)
            n = 0
            while not attack.stopping.is_set():
                try:
                    if len(own) < 250:
                        name = f"churn/c{k}-{n}"
                        n += 1
                        sock.sendall(put_frame(0, name))
                        expect(sock, TAG_PROCEED)
                        sock.sendall(frame(TAG_TRAILER, EMPTY_DIGEST))
                        expect(sock, TAG_DONE)
                        own.append(name)
                    else:
                        sock.sendall(delete_frame(own.pop(0)))
                        expect(sock, TAG_DONE)
                    churned[k] += 1
                except (OSError, Refused, FloodError) as error:
                    churn_errors[failure_word(error)] = churn_errors.get(failure_word(error), 0) + 1
                    return

        for k in range(s.churners):
            attack.thread(churn, k)
        time.sleep(1)
        listings = entries = vanished = 0
        failed = []
        lister = open_session(row.target, LEGIT_ADDRESS, run.legit_token_value)
        attack.keep(lister)
        for _ in range(s.churn_lists):
            lister.sendall(list_frame("churn", long=True))
            try:
                while True:
                    tag, payload = read_frame(lister)
                    if tag == TAG_ENTRY:
                        entries += 1
                    elif tag == TAG_OMITTED:
                        if payload[0] == OMITTED_VANISHED:
                            vanished += int.from_bytes(payload[1:9], "big")
                    elif tag == TAG_DONE:
                        listings += 1
                        break
                    elif tag == TAG_ERROR:
                        raise_error(payload)
            except Refused as error:
                failed.append(str(error))
            row.legit.round()
        operations = sum(churned)
    finally:
        attack.close()
    row.attack_over()
    row.finish()
    ok, why = row.legit.verdict()
    result.measured = (f"{listings}/{s.churn_lists} listings complete, {len(failed)} failed"
                       f"{' (' + failed[0] + ')' if failed else ''}; {entries:,} entries listed, "
                       f"{vanished} counted as vanished; {operations:,} puts and deletes by the churners"
                       f"{' (churner failures: ' + failures_text(churn_errors) + ')' if churn_errors else ''}")
    problems = ([why] if not ok else []) + ([f"{len(failed)} listings failed"] if failed else [])
    if listings < s.churn_lists and not failed:
        problems.append("a listing did not complete")
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


def used_bytes(path):
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def row_disk(run):
    """3: uploads that declare 64 MiB and send one byte, on a small tmpfs."""
    s = run.scale
    result = RowResult("3", f"{s.uploads} uploads declaring 64 MiB, 1 byte sent (256 MiB tmpfs)")
    point, why_not = run.mount_tmpfs("256m")
    if point is None:
        result.why = f"skipped: cannot mount a tmpfs ({why_not}); run as root"
        return result
    try:
        root = run.fresh_root(point)
        row = RowRun(run, result, root, extra=connections_for(s.uploads))
        attack = Attack()
        answers = {"proceed": 0}
        answers_lock = threading.Lock()
        try:
            used_before = used_bytes(point)

            def begin(sock, i):
                sock.sendall(put_frame(64 * MIB, f"upload-{i}.bin"))
                expect(sock, TAG_PROCEED)
                with answers_lock:
                    answers["proceed"] += 1
                sock.sendall(b"x")

            failures = open_many(attack, row.target, s.uploads, ATTACKER_ADDRESSES,
                                 run.attacker_token, begin)
            log(f"  {answers['proceed']} uploads under way; failures: {failures_text(failures)}")
            time.sleep(1)
            used_during = used_bytes(point)
            row.legit.rounds_over(s.upload_hold, s.tries)
            server_fds = row.server.monitor.now().fds
        finally:
            attack.close()
        row.attack_over()
        row.finish()
        used_after = used_bytes(point)
    finally:
        run.unmount(point)
    claim = used_during - used_before
    legit_puts = len(row.legit.tries["put"])
    ok, why = row.legit.verdict()
    result.measured = (f"{answers['proceed']}/{s.uploads} uploads proceeding (failed: {failures_text(failures)}); "
                       f"tmpfs used before {used_before / MIB:.1f} MiB, with the uploads "
                       f"{used_during / MIB:.1f} MiB (claim {claim / MIB:.1f} MiB, limit {DISK_CLAIM_LIMIT_MIB}), "
                       f"after {used_after / MIB:.1f} MiB ({legit_puts} legit puts of 1 MiB among it); "
                       f"server fds at the end {server_fds}")
    problems = [why] if not ok else []
    if claim > DISK_CLAIM_LIMIT_MIB * MIB:
        problems.append(f"claimed {claim / MIB:.1f} MiB")
    if answers["proceed"] < s.uploads * 0.95:
        problems.append(f"only {answers['proceed']} of {s.uploads} uploads proceeded")
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


def count_directories(root):
    """Directories beneath root, however deep: walked by descriptors, so
    paths longer than PATH_MAX cost nothing."""
    count = 0
    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    while stack:
        fd = stack.pop()
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        count += 1
                        stack.append(os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                             dir_fd=fd))
        finally:
            os.close(fd)
    return count


def deep_name(i):
    """A name of 2,046 components (2,045 directories and a file) in 4,093
    bytes, just under the 4,096-byte limit."""
    return "/".join([f"r{i:03d}"] + ["a"] * 2044 + ["f"])


def row_refused(run):
    """4: deep puts refused for declaring more than the free space."""
    s = run.scale
    result = RowResult("4", f"{s.refused} refused puts to new 2,046-level paths")
    root = run.fresh_root()
    row = RowRun(run, result, root)
    attack = Attack()
    answers = {}
    before_dirs = count_directories(root)
    try:
        declared = 1 << 50  # 1 PiB: more than any disk here has free

        def refuse_all():
            try:
                sock = open_session(row.target, FLOOD_ADDRESS, run.attacker_token)
            except (OSError, Refused) as error:
                answers[failure_word(error)] = 1
                return
            attack.keep(sock)
            for i in range(s.refused):
                try:
                    sock.sendall(put_frame(declared, deep_name(i)))
                    expect(sock, TAG_PROCEED)
                    answers["proceed"] = answers.get("proceed", 0) + 1
                    abort(sock)
                    return
                except Refused as error:
                    word = failure_word(error)
                    answers[word] = answers.get(word, 0) + 1
                except (OSError, FloodError) as error:
                    answers[failure_word(error)] = answers.get(failure_word(error), 0) + 1
                    return

        worker = attack.thread(refuse_all)
        row.legit.rounds_over(2, s.tries)
        worker.join()
    finally:
        attack.close()
    row.attack_over()
    row.finish()
    after_dirs = count_directories(root)
    new_dirs = after_dirs - before_dirs
    ok, why = row.legit.verdict()
    refused = answers.get("insufficient-storage", 0)
    result.measured = (f"answers: {failures_text(answers)}; directories under the root before "
                       f"{before_dirs}, after {after_dirs} ({new_dirs} new)")
    problems = [why] if not ok else []
    if new_dirs:
        problems.append(f"{new_dirs} new directories")
    if refused != s.refused:
        problems.append(f"{refused} of {s.refused} refused insufficient-storage")
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


def row_silent(run):
    """5: one address refilling silent connections: the token holder on
    another address is served every time."""
    s = run.scale
    result = RowResult("5", f"~{s.silent_rate:.0f} silent connections/s from one address, "
                            f"{s.silent_seconds:.0f} s")
    row = RowRun(run, result, run.fresh_root())
    attack = Attack()
    counts = {"opened": 0, "closed by server": 0, "refused at connect": 0}
    try:
        def flood():
            held = {}
            poller = select.poll()
            gap = 1.0 / s.silent_rate
            next_open = time.monotonic()
            while not attack.stopping.is_set():
                now = time.monotonic()
                if now >= next_open and len(held) < 1000:
                    next_open += gap
                    try:
                        sock = source_socket(FLOOD_ADDRESS)
                        sock.setblocking(False)
                        try:
                            sock.connect((SERVER_ADDRESS, row.target.port))
                        except BlockingIOError:
                            pass
                        held[sock.fileno()] = sock
                        poller.register(sock.fileno(), select.POLLIN | select.POLLHUP)
                        counts["opened"] += 1
                    except OSError:
                        counts["refused at connect"] += 1
                full = len(held) >= 1000
                wait_ms = 100 if full else max(0, int((next_open - time.monotonic()) * 1000))
                for fd, _ in poller.poll(wait_ms):
                    sock = held.pop(fd, None)
                    if sock:
                        poller.unregister(fd)
                        counts["closed by server"] += 1
                        abort(sock)
            for sock in held.values():
                abort(sock)

        attack.thread(flood)
        row.legit.rounds_over(s.silent_seconds, s.silent_attempts)
        server_fds = row.server.monitor.now().fds
    finally:
        attack.close()
    row.attack_over()
    row.finish()
    rounds = list(zip(*row.legit.tries.values()))
    served = sum(1 for one in rounds if all(t.ok for t in one))
    ok, why = row.legit.verdict()
    result.measured = (f"token holder served {served}/{len(rounds)} times (list, get and put each time); "
                       f"flood: {counts['opened']} opened, {counts['closed by server']} closed by the server; "
                       f"server fds at the end {server_fds}")
    problems = []
    if served != len(rounds) or len(rounds) < s.silent_attempts:
        problems.append(f"served {served} of {s.silent_attempts}")
    if not ok:
        problems.append(why)
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


def hold_slots(attack, row, count):
    """`count` authenticated idle connections from the four addresses."""
    return open_many(attack, row.target, count, ATTACKER_ADDRESSES, row.run.attacker_token,
                     lambda _sock, _i: None)


def row_turn_away(run):
    """6a: with every slot held, a flood of further connections."""
    s = run.scale
    result = RowResult("6a", f"slots held ({s.held}), {s.flood_seconds:.0f} s connection flood")
    extra = [] if s.held == 1000 else ["--max-connections", str(s.held)]
    row = RowRun(run, result, run.fresh_root(), extra=extra)
    attack = Attack()
    flood_attack = Attack()
    made = [0]
    try:
        failures = hold_slots(attack, row, s.held)
        held = len(attack.sockets)
        with_slots = row.server.monitor.now()
        lines_before = row.server.attacker_lines()
        log(f"  {held} slots held (failures: {failures_text(failures)}); fds {with_slots.fds}, "
            f"RSS {mib(with_slots.rss_kib):.1f} MiB")

        def flood():
            open_socks = []
            end = time.monotonic() + s.flood_seconds
            while time.monotonic() < end and not flood_attack.stopping.is_set():
                try:
                    sock = source_socket(EXTRA_FLOOD_ADDRESS)
                    sock.setblocking(False)
                    try:
                        sock.connect((SERVER_ADDRESS, row.target.port))
                    except BlockingIOError:
                        pass
                    open_socks.append(sock)
                    made[0] += 1
                except OSError:
                    time.sleep(0.01)
                if len(open_socks) > 2000:
                    for sock in open_socks[:1000]:
                        abort(sock)
                    del open_socks[:1000]
            for sock in open_socks:
                abort(sock)

        flooder = flood_attack.thread(flood)
        row.legit.rounds_over(s.flood_seconds, s.tries)
        flooder.join()
        flood_peak = row.server.monitor.peaks()
        flood_attack.close()
        # Counted before the held slots go, whose ends are not the flood's.
        time.sleep(SUMMARY_WAIT_S)
        lines = row.server.attacker_lines() - lines_before
    finally:
        flood_attack.close()
        attack.close()
    row.attack_over()
    row.finish()
    log_bytes = sum(p.stat().st_size for p in (row.server.out_path, row.server.err_path))
    legit_words = sorted({short_failure(t.detail) for t in row.legit.all_tries() if not t.ok})
    result.measured = (f"{held} slots held; {made[0]:,} flood connections in {s.flood_seconds:.0f} s; "
                       f"with slots held fds {with_slots.fds}, RSS {mib(with_slots.rss_kib):.1f} MiB; "
                       f"peak during the flood fds {flood_peak.fds}, RSS {mib(flood_peak.rss_kib):.1f} MiB, "
                       f"threads {flood_peak.threads}; {lines} log lines from the flood, its summaries "
                       f"included (log {log_bytes:,} bytes in all); listen backlog {row.server.backlog}; legit while full: "
                       f"{', '.join(legit_words) or 'served'} (expected busy)")
    problems = []
    if flood_peak.fds > with_slots.fds + 100:
        problems.append(f"fds rose by {flood_peak.fds - with_slots.fds} over the held slots")
    if mib(flood_peak.rss_kib) > mib(with_slots.rss_kib) + 64:
        problems.append(f"RSS rose by {mib(flood_peak.rss_kib - with_slots.rss_kib):.0f} MiB")
    if result.after.fds > result.before.fds + 2:
        problems.append(f"fds after {result.after.fds} vs {result.before.fds} before")
    if lines > LOG_LINES_LIMIT:
        problems.append(f"{lines} log lines")
    if held < s.held * 0.95:
        problems.append(f"only {held} of {s.held} slots held")
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


def client_hello_bytes():
    """A TLS 1.3 ClientHello, as a client would send it first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = TLS_CONTEXT.wrap_bio(incoming, outgoing, server_hostname=None)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def row_hello_flood(run):
    """6b: the same ClientHello sent again and again from one address."""
    s = run.scale
    result = RowResult("6b", f"replayed ClientHello flood, {s.flood_seconds:.0f} s, one address")
    row = RowRun(run, result, run.fresh_root())
    attack = Attack()
    counts = {"sent": 0, "failed": 0}
    lock = threading.Lock()
    lines_before = row.server.attacker_lines()
    client_hello = client_hello_bytes()
    try:
        end = time.monotonic() + s.flood_seconds

        def replay():
            while time.monotonic() < end and not attack.stopping.is_set():
                sock = source_socket(FLOOD_ADDRESS)
                sock.settimeout(2)
                try:
                    sock.connect((SERVER_ADDRESS, row.target.port))
                    sock.sendall(client_hello)
                    key = "sent"
                except OSError:
                    key = "failed"
                with lock:
                    counts[key] += 1
                abort(sock)

        for _ in range(8):
            attack.thread(replay)
        row.legit.rounds_over(s.flood_seconds, s.tries)
        for thread in attack.threads:
            thread.join()
    finally:
        attack.close()
    time.sleep(SUMMARY_WAIT_S)
    lines = row.server.attacker_lines() - lines_before
    row.attack_over()
    row.finish()
    ok, why = row.legit.verdict()
    result.measured = (f"{counts['sent']:,} ClientHellos replayed by 8 threads ({counts['failed']} connects failed); "
                       f"{lines} log lines from the flood, its summaries included; threads peak {result.peak.threads}; "
                       f"listen backlog {row.server.backlog}")
    problems = [why] if not ok else []
    if lines > LOG_LINES_LIMIT:
        problems.append(f"{lines} log lines")
    if result.after.fds > result.before.fds + 2:
        problems.append(f"fds after {result.after.fds} vs {result.before.fds} before")
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


def row_stalled_log(run):
    """7: stdout a pipe nobody reads while reports pile up."""
    s = run.scale
    result = RowResult("7", f"stdout never read; {s.empty:,} empty connections, "
                            f"{s.spam_lines:,} requests reported")
    row = RowRun(run, result, run.fresh_root(), stdout_pipe=True)
    attack = Attack()
    try:
        for _ in range(s.empty):
            sock = source_socket(FLOOD_ADDRESS)
            try:
                sock.connect((SERVER_ADDRESS, row.target.port))
            except OSError:
                pass
            sock.close()
        spammer = open_session(row.target, ATTACKER_ADDRESSES[1], run.attacker_token)
        attack.keep(spammer)
        stat = stat_frame("legit")
        for _ in range(s.spam_lines):
            spammer.sendall(stat)
            expect(spammer, TAG_INFO)
        alive_during = row.server.is_running()
        row.legit.rounds_over(1, s.tries)
    finally:
        attack.close()
    row.attack_over()
    # Now someone reads: the writer catches up and says what it dropped.
    out = bytearray()
    stopping = threading.Event()

    def drain():
        fd = row.server.proc.stdout.fileno()
        while not stopping.is_set():
            readable, _, _ = select.select([fd], [], [], 0.2)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                out.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    dropped = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        match = re.search(rb"(\d+) report lines? dropped", bytes(out))
        if match:
            dropped = int(match.group(1))
            break
        time.sleep(0.2)
    row.finish()
    stopping.set()
    reader.join()
    row.server.out_path.write_bytes(bytes(out))
    read_lines = bytes(out).count(b"\n")
    ok, why = row.legit.verdict()
    result.measured = (f"server {'served on' if alive_during else 'DIED'} with the pipe full; "
                       f"once read: {read_lines:,} lines, "
                       f"{'`' + str(dropped) + ' report lines dropped`' if dropped is not None else 'no dropped-lines notice'}; "
                       f"threads peak {result.peak.threads}")
    problems = [why] if not ok else []
    if not alive_during:
        problems.append("the server died")
    if dropped is None:
        problems.append("no `report lines dropped` line")
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


UNAUTHORIZED_LINE = re.compile(r" failed unauthorized: (?:(\d+) more like this)?")


def guesses_reaching_check(text):
    """Guesses the server's reports say reached the token check: each line
    of a failed `unauthorized` handshake, with the counts of the lines
    that sum them up."""
    total = 0
    for match in UNAUTHORIZED_LINE.finditer(text):
        total += int(match.group(1)) if match.group(1) else 1
    return total


def row_guessing(run, plain):
    """8a/8b: one address trying wrong tokens as fast as it can."""
    s = run.scale
    mode = "plain" if plain else "TLS"
    result = RowResult(f"8{'b' if plain else 'a'}",
                       f"token guessing from one address, {s.guess_seconds:.0f} s ({mode})")
    row = RowRun(run, result, run.fresh_root(), plain)
    attack = Attack()
    counts = {"unauthorized": 0, "turned away": 0}
    lock = threading.Lock()
    try:
        end = time.monotonic() + s.guess_seconds

        def guess():
            while time.monotonic() < end and not attack.stopping.is_set():
                try:
                    sock = open_session(row.target, FLOOD_ADDRESS, secrets.token_hex(32), timeout=5)
                    abort(sock)
                    key = "welcomed"
                except Refused as error:
                    key = "unauthorized" if error.code == 16 else "turned away"
                except (OSError, FloodError):
                    key = "turned away"
                with lock:
                    counts[key] = counts.get(key, 0) + 1

        for _ in range(8):
            attack.thread(guess)
        row.legit.rounds_over(s.guess_seconds, s.tries)
        for thread in attack.threads:
            thread.join()
    finally:
        attack.close()
    row.attack_over()
    row.finish()
    reached = guesses_reaching_check(row.server.log_text())
    attempts = sum(counts.values())
    ok, why = row.legit.verdict()
    # The first burst can bring the per-address handshake cap (8) to the
    # token check before the first failure is known; after it a penalty of
    # 1 s doubling with each failure lets about log2(T) + 1 more through
    # in T seconds.
    allowed = PER_IP_HANDSHAKES + int(s.guess_seconds).bit_length() + 1
    result.measured = (f"{attempts:,} guesses by 8 threads; {reached} reached the token check "
                       f"(server reports; {counts['unauthorized']} answered unauthorized client-side), "
                       f"the rest turned away; {counts.get('welcomed', 0)} welcomed")
    problems = [why] if not ok else []
    if reached > allowed:
        problems.append(f"{reached} guesses reached the token check (bound {allowed})")
    if counts.get("welcomed"):
        problems.append("a wrong token was welcomed")
    result.verdict, result.why = ("FAIL", "; ".join(problems)) if problems else ("PASS", "")
    return result


ROWS = [
    ("1a", lambda run: row_trickle(run, plain=False)),
    ("1b", lambda run: row_trickle(run, plain=True)),
    ("1c", lambda run: row_gets(run, plain=False)),
    ("1d", lambda run: row_gets(run, plain=True)),
    ("2a", row_listings),
    ("2b", row_churn),
    ("3", row_disk),
    ("4", row_refused),
    ("5", row_silent),
    ("6a", row_turn_away),
    ("6b", row_hello_flood),
    ("7", row_stalled_log),
    ("8a", lambda run: row_guessing(run, plain=False)),
    ("8b", lambda run: row_guessing(run, plain=True)),
]


# ---------------------------------------------------------------- report


def commit_line():
    def git(*args):
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{commit}{dirty}"


def machine_line(args, loads, seconds):
    cpu_model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    size = "quick (scaled down)" if args.quick else "full size"
    load_text = ", ".join(f"{label} {a:.2f} {b:.2f} {c:.2f}" for label, (a, b, c) in loads)
    return (f"Machine: {os.cpu_count()} CPUs ({cpu_model}), Linux {platform.release()}, {now}. "
            f"Commit {commit_line()}, binary {args.ferry_bin}. {size}, {seconds / 60:.1f} minutes. "
            f"Load average (1, 5, 15 min): {load_text}.")


def drops_note(result):
    """What the kernel did meanwhile, machine-wide: TCP buffers at their
    peak, and connections dropped at a full listen queue."""
    note = f"; kernel TCP buffers peak {mib(result.tcp_peak_kib):.0f} MiB" if result.tcp_peak_kib else ""
    if result.drops and any(result.drops):
        overflows, drops = result.drops
        note += f"; listen queue overflowed {overflows:,} times ({drops:,} SYNs or handshakes dropped)"
    return note


def report(args, results, loads, seconds):
    header = ["row", "attack", "list ms med / max", "get 1 MiB ms", "put 1 MiB ms",
              "RSS MiB before / peak / after", "fds before / peak / after", "verdict",
              "RSS back ≤2× (row 9)"]
    rows = []
    for r in results:
        rss = fds = "–"
        if r.before and r.peak and r.after:
            rss = f"{mib(r.before.rss_kib):.1f} / {mib(r.peak.rss_kib):.1f} / {mib(r.after.rss_kib):.1f}"
            fds = f"{r.before.fds} / {r.peak.fds} / {r.after.fds}"
        verdict = r.verdict + (f": {r.why}" if r.why else "")
        rows.append([r.row, r.attack, latency_cell(r.legit.get("list")),
                     latency_cell(r.legit.get("get")), latency_cell(r.legit.get("put")),
                     rss, fds, verdict, memory_cell(r)])
    notes = "\n".join(f"- **{r.row}** {r.measured}{drops_note(r)}" for r in results if r.measured)
    counted = [r for r in results if r.before and r.after]
    back = sum(1 for r in counted if memory_cell(r).startswith("PASS"))
    held = sum(1 for r in results if r.verdict == "PASS")
    return (f"{machine_line(args, loads, seconds)}\n\n"
            "Legitimate client: the `ferry client` binary on 127.0.0.1 with its own token; "
            "median / largest wall time of its requests during the attack (goal: each within 1 s). "
            "RSS and descriptors of the server from /proc: before the attack (after one warm-up "
            "round), its peak, and after the attackers left. The kernel's TCP buffers and "
            "listen-queue overflows in the notes are machine-wide counts.\n\n"
            f"{markdown_table(header, rows)}\n\n"
            f"Rows held: {held} of {len(results)}. Row 9, RSS back within 2× of before: "
            f"{back} of {len(counted)}.\n\n"
            f"Measured:\n\n{notes}\n")


# ---------------------------------------------------------------- main


def parse_args():
    parser = argparse.ArgumentParser(
        description="Run issue 12's flood probes against a real ferry server, one at a time.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--ferry-bin", required=True, help="the ferry binary to attack")
    parser.add_argument("--quick", action="store_true",
                        help="scaled-down counts and times, about 3 minutes")
    parser.add_argument("--only", metavar="ROW,ROW",
                        help="run only these rows: numbers (1 runs 1a-1d) or ids (2b)")
    args = parser.parse_args()
    args.ferry_bin = str(Path(args.ferry_bin).resolve())
    return args


def chosen_rows(args):
    if not args.only:
        return ROWS
    wanted = {word.strip() for word in args.only.split(",") if word.strip()}
    known = {row_id for row_id, _ in ROWS} | {row_id[0] for row_id, _ in ROWS} | {"9"}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"flood.py: no row {', '.join(sorted(unknown))}; rows are "
                         f"{', '.join(row_id for row_id, _ in ROWS)} (9 is every row's last column)")
    return [(row_id, fn) for row_id, fn in ROWS
            if row_id in wanted or row_id.rstrip("abcd") in wanted or "9" in wanted]


def raise_open_file_limit():
    """Room for a thousand attackers, their floods, and the legitimate
    client; the servers inherit it and raise their own further."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def main():
    args = parse_args()
    rows = chosen_rows(args)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    LOG_DIR.mkdir(parents=True)
    limit = raise_open_file_limit()
    if limit < 4096:
        log(f"flood.py: only {limit} open files allowed; rows with a thousand connections will fail")
    loads = [("start", os.getloadavg())]
    log(f"flood.py: {'quick' if args.quick else 'full size'}, rows {', '.join(r for r, _ in rows)}; "
        f"load average {loads[0][1][0]:.2f} {loads[0][1][1]:.2f} {loads[0][1][2]:.2f}")
    started = time.monotonic()
    run = Run(args)
    results = []
    try:
        for row_id, fn in rows:
            log(f"row {row_id}")
            began = time.monotonic()
            try:
                result = fn(run)
            except FloodError as error:
                result = RowResult(row_id, "(stopped)", verdict="FAIL", why=str(error))
            results.append(result)
            log(f"  {result.verdict}{': ' + result.why if result.why else ''} "
                f"({time.monotonic() - began:.0f} s)")
            if result.measured:
                log(f"  {result.measured}{drops_note(result)}")
            loads.append((f"after {row_id}", os.getloadavg()))
    except (KeyboardInterrupt, Interrupted):
        log("flood.py: interrupted; cleaning up")
        return 130
    finally:
        run.cleanup()
    seconds = time.monotonic() - started
    peak_load = max(loads[1:], key=lambda item: item[1][0]) if len(loads) > 1 else loads[0]
    shown = [loads[0], (f"peak 1-min ({peak_load[0]})", peak_load[1]), ("end", os.getloadavg())]
    text = report(args, results, shown, seconds)
    RESULTS_FILE.write_text(text)
    print(text, end="")
    log(f"saved to {RESULTS_FILE}; server logs in {LOG_DIR}")
    return 0 if all(r.verdict in ("PASS", "SKIP") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
