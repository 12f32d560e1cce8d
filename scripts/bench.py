#!/usr/bin/env python3
"""Benchmark ferry against a raw socat pipe and common file-transfer tools.

    scripts/bench.sh [--reps N] [--quick] [--only CASE,...] [--dufs] [--concurrent N]
                     [--baseline-bin PATH]

Everything runs on 127.0.0.1: every server is started here on a free port and
stopped here by its process id, also on Ctrl-C or an error. Run it through
scripts/bench.sh, which installs the peer tools, builds ferry and passes
--ferry-bin (and --dufs-bin) on.

Results go to stdout as Markdown (and to target/bench/results.md); progress
goes to stderr; server logs stay in target/bench/logs/. Cases, each a name
for --only:

  transfer methods  put/get (or one-way send) of 1 KiB, 1 MiB, 100 MiB and
                    1 GiB of random data; every copy is checked by SHA-256:
                    ferry-plain (--plain on both ends: sendfile/splice),
                    ferry-tls (TLS 1.3, the client pinned to the server's
                    fingerprint), socat (-b131072, the reference of every
                    ratio), socat-default, nc, iperf3, rsync, scp, sftp,
                    http, dufs (needs --dufs); `ferry` selects both ferry
                    modes, and with both a table gives TLS MB/s / plain
                    MB/s per size and direction, met or NOT met against
                    issue 15's goal of 0.80 at 1 GiB
  latency           ferry `list` (plain) against spawning /bin/true plus one
                    TCP round trip; the same `list` over TLS beside it
  concurrent        N ferry clients (plain) at once, each with its own 1 MiB
                    file
  idle-memory       ferry server RSS with 1,000 idle handshaken
                    connections, plain and TLS (the TLS handshake done,
                    then ferry's; no request)
  transfer-memory   ferry client peak RSS, plain and TLS, big file against a
                    1 MiB one
  trees             put -r and get -r of two trees to a new name: 10,000
                    files of 4 KiB and 100 files of 10 MiB (--quick: 2,000
                    and 20), in a few subdirectories; ferry (plain and TLS)
                    against rsync -r to and from an rsync daemon (the
                    reference of its ratios), tar c | socat and socat |
                    tar x, and scp -r; files/s and MB/s; every copy checked
                    file by file. Beside the 100 x 10 MiB tree, ferry
                    (plain and TLS) also puts and gets a single 1 GiB file
                    (plain put and get, no -r), each run right next to the
                    same mode's put -r or get -r in the same direction, so
                    that load from elsewhere hits both alike, its copy
                    checked by SHA-256; a table beside the trees' gives per
                    mode and direction both medians and tree MB/s / file
                    MB/s, met or NOT met against issue 13's goal of 0.90
                    (the tree within 10% of the file). With --quick the file
                    is 200 MiB, the bytes of the 20-file tree, so that the
                    two stay like for like. The peers get no single-file
                    runs. A ferry build without put -r or get -r (a usage
                    error on a trial tree) gets rows saying "not supported
                    by this build", and no single-file runs in that
                    direction, instead of stopping the run. --baseline-bin
                    does not apply to it
  resume            a 1 GiB ferry put and get (plain and TLS), the client
                    sent SIGINT (Ctrl-C) once the receiver's partial passes
                    512 MiB, then the same command run again: the bytes it
                    moved, where it resumed (whole 64 MiB steps), its time
                    against a fresh put or get of a file of exactly those
                    bytes (run in the same repetition, which goes first
                    alternating), met or NOT met against issue 14's goal of
                    1.1, and the bytes of the partial that the side holding
                    it (the server for a put, the client for a get) read
                    again to prove it, by its report line (goal: 0). Every
                    copy checked by SHA-256; every partial left over is
                    removed and listed. Also 1 GiB with --quick: a step is
                    64 MiB. --baseline-bin does not apply to it
  rate              a 100 MiB ferry put and get (plain and TLS) with the
                    client's --limit-rate 20M (20,000,000 bytes a second:
                    ferry's M is decimal, README "Bandwidth"): the MB/s
                    achieved, its ratio to 20 MB/s, met or NOT met against
                    issue 16's goal of within 5% of the limit either way.
                    Every copy checked by SHA-256. Also 100 MiB with
                    --quick. --baseline-bin does not apply to it

  s3                ferry serving an S3 bucket (--store) against rclone, both
                    talking to the same S3 server on 127.0.0.1 (moto, behind
                    tests/s3/locked_moto.py, from the venv the tests make
                    under target/s3-venv): a 1 GiB put and get (ferry plain;
                    rclone copyto), and a tree of 10,000 files of 4 KiB
                    put and got (ferry put -r and get -r; rclone copy), its
                    files in 10 subdirectories. rclone's rows are the
                    reference of the ratios. Every copy is checked; what
                    the S3 store does not serve gets a row saying so. Not
                    in the default run: --s3 or --only s3 (bench.sh then
                    installs rclone and the venv). With --quick, 2,000 files
                    and 200 MiB. --baseline-bin does not apply to it

Before and after: --baseline-bin PATH (bench.sh also takes it from
FERRY_BASELINE_BIN) benchmarks a second ferry binary, such as a build of an
earlier commit, in the same run. Its rows, ferry base (plain) and ferry base
(TLS), run for whichever ferry modes are chosen, taking turns rep by rep with
the same mode of --ferry-bin (which of the two goes first alternates), so
that load from elsewhere hits both alike; a table then compares the two
medians row by row. Each binary's clients talk only to its own servers, so
the two need not speak the same protocol version. The other cases measure
--ferry-bin alone. Before and after, ferry rows only (with --quick, 3 runs
and no 1 GiB, the ratios are too noisy to show a small regression):

    scripts/bench.sh --only ferry --baseline-bin PATH

Every ferry process runs with XDG_CONFIG_HOME set to a temporary directory
made for the run and removed at its end (one directory per binary), and
without FERRY_TOKEN, so neither the TLS server's identity nor the client's
known hosts touch the invoking user's ~/.config/ferry.

Standard library only.
"""

import argparse
import datetime
import fcntl
import hashlib
import os
import platform
import pwd
import re
import resource
import select
import shlex
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
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# (label, bytes); the label doubles as a file-name stem.
SIZES = [("1KiB", KIB), ("1MiB", MIB), ("100MiB", 100 * MIB), ("1GiB", GIB)]


@dataclass(frozen=True)
class Method:
    """One family of rows in the transfers table."""
    label: str
    directions: tuple


# In table order. "send" is a one-way pipe into /dev/null (or iperf3's memory).
# The TLS rows sit next to scp and sftp, the other encrypted transfers.
METHODS = {
    "ferry-plain": Method("ferry (plain)", ("put", "get")),
    "ferry-base-plain": Method("ferry base (plain)", ("put", "get")),
    "socat": Method("socat -b131072", ("send",)),
    "socat-default": Method("socat (default 8 KiB buffer)", ("send",)),
    "nc": Method("nc (openbsd)", ("send",)),
    "iperf3": Method("iperf3 (memory to memory)", ("send",)),
    "rsync": Method("rsync daemon", ("put", "get")),
    "ferry-tls": Method("ferry (TLS)", ("put", "get")),
    "ferry-base-tls": Method("ferry base (TLS)", ("put", "get")),
    "scp": Method("scp", ("put", "get")),
    "sftp": Method("sftp", ("put", "get")),
    "http": Method("python http.server + curl", ("get",)),
    "dufs": Method("dufs + curl", ("put", "get")),
}
# Every row's ratio is against this one, so it runs whenever any method does.
REFERENCE = "socat"
FERRY_METHODS = ("ferry-plain", "ferry-tls")
# The same modes run by --baseline-bin: each ferry method -> its baseline twin.
# They are not names for --only; they run with their twin when a baseline is
# given.
BASELINE_METHODS = {"ferry-plain": "ferry-base-plain", "ferry-tls": "ferry-base-tls"}
ANY_FERRY_METHODS = FERRY_METHODS + tuple(BASELINE_METHODS.values())
# What ferry is compared with in the summary below the transfers table.
FERRY_PEERS = (REFERENCE, "rsync", "scp", "sftp")
# Names for --only that stand for several cases.
CASE_GROUPS = {"ferry": FERRY_METHODS}
OTHER_CASES = ["latency", "concurrent", "idle-memory", "transfer-memory", "trees", "resume",
               "rate"]
# Cases that run only when named: --s3 or --only s3.
OPT_IN_CASES = ["s3"]
ALL_CASES = [name for name in METHODS if name not in BASELINE_METHODS.values()] + OTHER_CASES

LATENCY_RUNS = 200
IDLE_CONNECTIONS = 1000
IDLE_RSS_GOAL_MIB = 64
# Issue 15: a client's peak RSS, whatever the file size, plain or TLS.
CLIENT_RSS_GOAL_MIB = 16
LATENCY_RATIO_GOAL = 2
# Goal of issue 15: at this size, ferry (TLS) at least this share of ferry
# (plain)'s speed, both ways.
TLS_PLAIN_RATIO_GOAL = 0.80
TLS_PLAIN_GOAL_SIZE = GIB
CONCURRENT_FILE_SIZE = MIB


@dataclass(frozen=True)
class Tree:
    """A directory tree of the trees case: files random bytes of one size,
    dealt round-robin into subdirectories of the tree's top.

    single_file: the bytes of one file that ferry puts and gets (no -r) in
    the same run, in turns with this tree's put -r and get -r, so that the
    tree's MB/s can be held against a single file's; 0 for none.
    """
    label: str
    files: int
    file_size: int
    subdirectories: int
    single_file: int = 0


# Issue 13's trees; --quick scales both down to a fifth of the files. Its
# goal holds the 100 x 10 MiB tree against one 1 GiB file (1000 MiB against
# 1024: the ratio is of MB/s, so the 2% hardly matters); the quick tree of
# 20 gets a file of its own 200 MiB rather than a 1 GiB one five times its
# size, which would dominate a quick run and compare unlike transfers.
TREES = [Tree("10000x4KiB", 10_000, 4 * KIB, 10),
         Tree("100x10MiB", 100, 10 * MIB, 4, single_file=GIB)]
QUICK_TREES = [Tree("2000x4KiB", 2_000, 4 * KIB, 4),
               Tree("20x10MiB", 20, 10 * MIB, 2, single_file=200 * MIB)]
# Goal of issue 13: the big-file tree's MB/s at least this share of the
# single file's.
TREE_FILE_RATIO_GOAL = 0.90
# In table order: (key, label). Every ratio is against rsync's row.
TREE_METHODS = [
    ("ferry-plain", "ferry (plain) -r"),
    ("ferry-tls", "ferry (TLS) -r"),
    ("rsync", "rsync -r, daemon"),
    # No `|` in a label: it would split the Markdown table's cell.
    ("tar-socat", "tar + socat"),
    ("scp", "scp -r"),
]
TREE_REFERENCE = "rsync"
# The single-file runs beside a tree: ferry method -> their key in the
# trees' runs. A key of its own lets turn_order place each right next to
# its method's put -r or get -r.
TREE_FILE_TWINS = {"ferry-plain": "ferry-plain-file", "ferry-tls": "ferry-tls-file"}
# What a ferry row says when the binary has no put -r or get -r.
NOT_SUPPORTED = "not supported by this build"

# Issue 14's resume case: a file of RESUME_SIZE put and got, the client
# sent SIGINT once the receiver's partial passes RESUME_CUT_AT, then the
# same command run again. The receiver keeps whole steps of RESUME_STEP,
# each once it is synced (README, Resuming), so the second run goes on
# from the last step on disk when the cut came: RESUME_CUT_AT, or a step
# before it if that step's sync was still under way. --quick keeps the
# size: a smaller file would resume from one or two steps.
RESUME_SIZE = GIB
RESUME_CUT_AT = 512 * MIB
RESUME_STEP = 64 * MIB
# Goal of issue 14: the resumed run takes at most this many times a fresh
# transfer of the bytes it moves; and reads none of the partial again.
RESUME_RATIO_GOAL = 1.1
# Issue 16's rate case: a file of RATE_SIZE put and got with the client's
# --limit-rate RATE_LIMIT, which is RATE_LIMIT_BYTES a second (decimal M,
# as ferry parses it); the MB/s achieved must be within RATE_TOLERANCE of
# it, either way.
RATE_SIZE = 100 * MIB
RATE_LIMIT = "20M"
RATE_LIMIT_BYTES = 20_000_000
RATE_TOLERANCE = 0.05
# Issue 17's s3 case: a file of S3_FILE_SIZE and a tree put and got through
# ferry on an S3 store, and through rclone, to the same S3 server.
S3_FILE_SIZE = GIB
S3_TREE = Tree("10000x4KiB", 10_000, 4 * KIB, 10)
QUICK_S3_FILE_SIZE = 200 * MIB
QUICK_S3_TREE = Tree("2000x4KiB", 2_000, 4 * KIB, 4)
S3_BUCKET = "bench"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
           "AWS_REGION": "us-east-1"}
S3_VENV_PYTHON = Path(__file__).resolve().parent.parent / "target" / "s3-venv" / "bin" / "python"
S3_WRAPPER = Path(__file__).resolve().parent.parent / "tests" / "s3" / "locked_moto.py"
# (key, label) in table order; rclone is the reference of the ratios.
S3_METHODS = [("ferry", "ferry (plain) on --store s3://"), ("rclone", "rclone")]
# A server's partial uploads, under its root: each one's data file is
# named by 40 hex digits, its record adds .rec (.rec.new while written).
SERVER_PARTIALS = ".ferry-tmp-partials"
# A download's partial beside its target NAME: .NAME + this; its record
# adds .rec.
CLIENT_PARTIAL_SUFFIX = ".ferry-partial"
# The end of a file transfer's report line, the client's or the server's
# (src/report.rs): the bytes moved this time and, for a resumed one, where
# it went on from and how much of the partial was read again to prove it;
# no parenthesis means none.
TRANSFER_REPORT = re.compile(
    r" ok (\d+) bytes in [0-9.]+s(?: \([0-9.]+ MB/s\))?"
    r"(?:, resumed at ([0-9.]+) MiB"
    r"(?: \(proved by reading ([0-9.]+) MiB of the partial again\))?)?$")
# The handshake of protocol version 3 (src/protocol, PROTOCOL.md §2): each
# side's preamble, the client's Hello with an empty token (a u32 length, tag
# 0x05, an empty u16-prefixed string), and the tag of the server's Welcome,
# whose fields (a u8 count, then that many request tags) grow with the
# requests the server serves (PROTOCOL.md §9).
FERRY_PREAMBLE = b"FERRY\x00\x00\x03"
FERRY_ANONYMOUS_HELLO = b"\x00\x00\x00\x03\x05\x00\x00"
FERRY_WELCOME_TAG = 0x24
# From README.md: with -q a failed client prints nothing, so its exit code is
# all a failure report has to go on.
FERRY_EXIT_CODES = {
    1: "the request failed",
    2: "usage error",
    3: "server unreachable, silent past --timeout, or not ferry",
    4: "trust failed: server identity not the one pinned, or token refused",
    130: "interrupted",
}

# Long enough for a 1 GiB scp on a busy 2-core machine; only a hung process
# should ever reach it.
RUN_TIMEOUT_S = 600
START_TIMEOUT_S = 30

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "target" / "bench"
# Removed at the end: it holds over 1 GiB of test data.
WORK_DIR = BENCH_DIR / "work"
# Kept after the run for post-mortems.
LOG_DIR = BENCH_DIR / "logs"
RESULTS_FILE = BENCH_DIR / "results.md"

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure that makes the numbers meaningless: the run stops."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived; unwinds like Ctrl-C so that cleanup runs."""


def log(message):
    print(message, file=sys.stderr, flush=True)


def human_size(size):
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def exits_within(pid, timeout):
    """Whether child pid exits within timeout seconds; it is not reaped.
    A pidfd bounds the wait without a timer that could fire on a recycled
    pid."""
    pidfd = os.pidfd_open(pid)
    try:
        exited, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return bool(exited)


def shell_line(command):
    return " ".join(str(part) for part in command)


class FerryConfig:
    """A throwaway configuration directory for every ferry process.

    ferry keeps its TLS identity and known hosts under $XDG_CONFIG_HOME/ferry
    and takes a token from FERRY_TOKEN: env points XDG_CONFIG_HOME at a fresh
    temporary directory and leaves FERRY_TOKEN out, so that a run neither
    reads nor writes the invoking user's configuration. remove() deletes the
    directory.
    """

    def __init__(self, prefix):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self.env = {key: value for key, value in os.environ.items() if key != "FERRY_TOKEN"}
        self.env["XDG_CONFIG_HOME"] = str(self.path)

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


def read_start_line(log_path):
    """The server's start line from its log, once written in full, else
    None. Lines may come before it on the merged stderr, such as the note
    that a new identity was made."""
    for line in log_path.read_text(errors="replace").splitlines(keepends=True):
        if line.startswith("ferry server up and running on ") and line.endswith("\n"):
            return line
    return None


# The port and, with TLS, the identity, in the server's start line.
START_PATTERN = re.compile(r"up and running on 127\.0\.0\.1:(\d+)")
FINGERPRINT_PATTERN = re.compile(r"; TLS, identity ([0-9a-f]{64});")


def ferry_trust(fingerprint):
    """The client flags that match a server: --plain, or the fingerprint it
    printed, pinned, so that no known_hosts file is read or written."""
    return ["--plain"] if fingerprint is None else ["--fingerprint", fingerprint]


# ---------------------------------------------------------------- processes


class Processes:
    """Starts every process of the benchmark and stops whatever is left.

    Each process leads its own session, hence its own process group: a
    terminal's Ctrl-C reaches only this script, which then stops each group
    it created, and nothing else, by its id.
    """

    def __init__(self):
        self._live = []

    def start(self, command, *, stdin=subprocess.DEVNULL,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=None):
        proc = subprocess.Popen(
            [str(part) for part in command], stdin=stdin, stdout=stdout,
            stderr=stderr, env=env, start_new_session=True)
        self._live.append(proc)
        return proc

    def reap(self, proc, timeout=RUN_TIMEOUT_S):
        """Waits for proc to exit and returns its resource usage.

        os.wait4 rather than Popen.wait, because only wait4 reports the CPU
        time of that one child.
        """
        if not exits_within(proc.pid, timeout):
            self.stop(proc)
            raise BenchError(f"ran over {timeout} s: {shell_line(proc.args)}")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self._live.remove(proc)
        return usage

    def stop(self, proc):
        """Ends proc's process group: SIGTERM, then SIGKILL after 5 s.

        A process already reaped is left alone: its id may belong to
        someone else by now.
        """
        if proc.returncode is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc in self._live:
            self._live.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self._live)):
            self.stop(proc)


def cpu_seconds(usage):
    return usage.ru_utime + usage.ru_stime


def stat_fields(pid):
    """Fields of /proc/PID/stat from the state on (field 3 of proc(5)).

    The command name before them may hold spaces and parentheses, so they
    start after the last ')'.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()


def process_cpu_seconds(pid):
    """utime + stime + cutime + cstime (fields 14-17) of a live process.

    The c* fields cover children the process has reaped, such as sshd's and
    the rsync daemon's per-connection processes.
    """
    return sum(int(ticks) for ticks in stat_fields(pid)[11:15]) / CLOCK_TICKS


def has_children(pid):
    """Scans every process's parent id (field 4): /proc/PID/task/*/children
    needs a kernel option that not every kernel has."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if int(stat_fields(entry.name)[1]) == pid:
                return True
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
    return False


def wait_childless(pid, timeout=10):
    """Waits until a forking server has reaped its per-connection children,
    so that their writes are done and their CPU time is in its cutime."""
    deadline = time.monotonic() + timeout
    while has_children(pid):
        if time.monotonic() > deadline:
            raise BenchError(f"server {pid} still has children {timeout} s after its client exited")
        time.sleep(0.002)


def process_memory_kib(pid):
    """VmRSS and VmHWM of a live process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def free_port():
    """A port free right now. The small race with other programs is accepted
    because every server but ferry needs its port on the command line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_listening(port):
    """Reads the kernel's socket table instead of connecting, because a probe
    connection would be the one and only client of a one-shot listener."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)  # the header
            for line in lines:
                columns = line.split()
                local_address, state = columns[1], columns[3]
                if state == "0A" and local_address.endswith(wanted):  # 0A: LISTEN
                    return True
    return False


def wait_listening(proc, port, log_path=None):
    deadline = time.monotonic() + START_TIMEOUT_S
    while not is_listening(port):
        if proc.poll() is not None:
            raise BenchError(f"{shell_line(proc.args)} exited with {proc.returncode}"
                             + log_tail(log_path))
        if time.monotonic() > deadline:
            raise BenchError(f"{shell_line(proc.args)} not listening on {port}"
                             f" after {START_TIMEOUT_S} s" + log_tail(log_path))
        time.sleep(0.001)


def log_tail(path, lines=15):
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path}:\n" + "\n".join(text)


# ---------------------------------------------------------------- data


@dataclass
class Source:
    """A file of random bytes to transfer."""
    label: str
    size: int
    path: Path
    sha256: str
    served_name: str  # its hard link in the shared server root, for gets


def write_random_file(path, size):
    """Writes size random bytes and returns their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, MIB))
            digest.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def make_source(label, size, data_dir, root):
    """A Source of size random bytes at data_dir/label.bin, hard-linked
    into root as get-label for gets: the very same bytes, served without
    another copy."""
    log(f"generating {human_size(size)} of random data")
    path = data_dir / f"{label}.bin"
    sha256 = write_random_file(path, size)
    served_name = f"get-{label}"
    os.link(path, root / served_name)
    return Source(label, size, path, sha256, served_name)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def settle_disk():
    """Writes back everything dirty before a timed run, so that no run pays
    for an earlier run's data, or the generated sources', being written
    back or discarded under it. A stall of that kind once held a ferry
    put's reply past the client's 10 s timeout."""
    os.sync()


def warm_page_cache(path):
    """Reads the file once so that no run pays for the disk."""
    with open(path, "rb") as data:
        while data.read(4 * MIB):
            pass


def check_copy(path, size, sha256, what):
    """Aborts the benchmark unless path is an exact copy."""
    if not path.exists():
        raise BenchError(f"{what}: {path} was not created")
    actual = path.stat().st_size
    if actual != size:
        raise BenchError(f"{what}: {path} has {actual} bytes, expected {size}")
    if file_sha256(path) != sha256:
        raise BenchError(f"{what}: {path} differs from its source (SHA-256)")


def write_random_tree(top, tree):
    """Makes tree at top; returns its manifest: relative path -> SHA-256
    for every file, None for every directory."""
    manifest = {}
    for index in range(tree.subdirectories):
        name = f"d-{index:02d}"
        (top / name).mkdir(parents=True)
        manifest[name] = None
    for index in range(tree.files):
        name = f"d-{index % tree.subdirectories:02d}/f-{index:05d}.bin"
        manifest[name] = write_random_file(top / name, tree.file_size)
    return manifest


def link_tree(source, target):
    """A copy of source at target whose files are hard links: the same
    bytes, served without another copy."""
    for directory, _, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(Path(directory) / name, target / relative / name)


def tree_listing(top):
    """Relative path -> whether it is a directory, for everything below top."""
    listing = {}
    for directory, dirs, files in os.walk(top):
        relative = Path(directory).relative_to(top)
        for name in dirs:
            listing[str(relative / name)] = True
        for name in files:
            listing[str(relative / name)] = False
    return listing


def check_tree(top, manifest, what):
    """Aborts the benchmark unless top holds exactly the manifest's
    directories and files, every file with its SHA-256."""
    if not top.is_dir():
        raise BenchError(f"{what}: {top} was not created as a directory")
    listing = tree_listing(top)
    expected = {name: sha256 is None for name, sha256 in manifest.items()}
    if listing != expected:
        missing = sorted(set(expected) - set(listing))
        extra = sorted(set(listing) - set(expected))
        kinds = sorted(name for name in set(expected) & set(listing)
                       if expected[name] != listing[name])
        raise BenchError(f"{what}: {top} is not a copy of the tree: {len(missing)} missing"
                         f" {missing[:3]}, {len(extra)} extra {extra[:3]}, {len(kinds)} of"
                         f" the wrong kind {kinds[:3]}")
    for name, sha256 in manifest.items():
        if sha256 is not None and file_sha256(top / name) != sha256:
            raise BenchError(f"{what}: {top / name} differs from its source (SHA-256)")


def warm_tree(top):
    for directory, _, files in os.walk(top):
        for name in files:
            warm_page_cache(Path(directory) / name)


def remove_file(path):
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def file_size(path):
    """path's size, 0 if there is no such file (yet, or any more)."""
    try:
        return path.stat().st_size if path else 0
    except FileNotFoundError:
        return 0


def server_partial(root):
    """The data file of the one partial upload of a ferry server serving
    root, None while there is none; more than one would leave the resume
    case unsure which to watch."""
    try:
        names = [entry.name for entry in os.scandir(root / SERVER_PARTIALS)
                 if "." not in entry.name]
    except FileNotFoundError:
        return None
    if len(names) > 1:
        raise BenchError(f"{len(names)} partial uploads in {root / SERVER_PARTIALS}, expected one")
    return root / SERVER_PARTIALS / names[0] if names else None


def client_partial(target):
    """Where a ferry get to target keeps its partial."""
    return target.with_name(f".{target.name}{CLIENT_PARTIAL_SUFFIX}")


def size_once_released(path, timeout=60):
    """path's size once no process holds it locked. ferry holds a partial
    under an exclusive flock while a transfer writes it and until it is
    sealed at its last step, so this is where a transfer cut off will go
    on from. The lock taken here is let go at once: the next run needs it."""
    deadline = time.monotonic() + timeout
    with open(path, "rb") as partial:
        while True:
            try:
                fcntl.flock(partial, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BenchError(f"{path} still locked {timeout} s after its client exited")
                time.sleep(0.002)
                continue
            size = os.fstat(partial.fileno()).st_size
            fcntl.flock(partial, fcntl.LOCK_UN)
            return size


def remove_partials(root, downloads):
    """Removes every partial and record in the partial uploads under root
    and beside the downloads, and returns their paths: once a transfer has
    completed there should be none."""
    partials = root / SERVER_PARTIALS
    paths = sorted(partials.iterdir()) if partials.is_dir() else []
    paths += sorted(path for path in downloads.iterdir() if CLIENT_PARTIAL_SUFFIX in path.name)
    for path in paths:
        remove_file(path)
    return [str(path.relative_to(WORK_DIR)) for path in paths]


def last_line(path):
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def server_report_line(log_path, start, needle, what, timeout=10):
    """The first whole line of a server's log past byte start that holds
    needle. Report lines reach the log from a writer thread of their own,
    maybe a moment after the client has its reply, so this waits for it."""
    deadline = time.monotonic() + timeout
    while True:
        with open(log_path, "rb") as server_log:
            server_log.seek(start)
            text = server_log.read().decode(errors="replace")
        for line in text.splitlines(keepends=True):
            if needle in line and line.endswith("\n"):
                return line.rstrip("\n")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: no server report line with {needle!r} after {timeout} s"
                             + log_tail(log_path))
        time.sleep(0.005)


def transfer_report(line, what):
    """A file transfer's report line read: (bytes moved, where it resumed
    in MiB as printed, or None for a transfer from the start, MiB of the
    partial read again). A line that says neither, such as a transfer that
    started over, stops the benchmark."""
    match = TRANSFER_REPORT.search(line)
    if not match:
        raise BenchError(f"{what}: a report line neither fresh nor resumed: {line!r}")
    return int(match.group(1)), match.group(2), float(match.group(3) or 0)


# ---------------------------------------------------------------- the benchmark


@dataclass
class Server:
    """A long-running server and where it logs; fingerprint is a TLS ferry
    server's identity. A ferry server also keeps its binary and environment,
    which its clients must share: the baseline's clients talk only to the
    baseline's servers."""
    proc: subprocess.Popen
    port: int
    log_path: Path
    fingerprint: str | None = None
    ferry: Path | None = None
    env: dict | None = None


@dataclass
class Step:
    """What one timed run executes.

    listener: a one-shot receiver started before the clock, for the pipes.
    output: where the transferred copy lands, checked after the run; None
    when the bytes go to /dev/null or never touch a file.
    """
    client: list
    env: dict | None = None  # None: this process's environment
    stdin: Path | None = None
    listener: list | None = None
    listener_port: int | None = None
    output: Path | None = None


@dataclass
class ResumeRun:
    """One repetition of the resume case in one mode and direction.

    cut_at: the receiver's partial when the client was sent SIGINT.
    offset: where the second run went on from, the partial once sealed.
    moved: the bytes the second run moved, by its report line.
    fresh_s: a transfer from the start of a file of exactly moved bytes,
    through the same server in the same repetition.
    *_cpu: user+sys seconds of client and server, the resumed run's and
    the fresh one's, to tell work from waiting on a loaded machine.
    reread_mib: of the partial read again to prove it, by the report line
    of the side holding it.
    """
    cut_at: int
    offset: int
    moved: int
    resumed_s: float
    fresh_s: float
    resumed_cpu: float
    fresh_cpu: float
    reread_mib: float


@dataclass
class TreeSource:
    """A generated tree, its manifest, and its hard-linked copy in the
    trees' served root, for gets."""
    tree: Tree
    path: Path
    manifest: dict
    served_name: str


def turn_order(keys, rep, twins=BASELINE_METHODS):
    """The (method, direction) keys in the order of repetition rep: as
    given, except that a twin (twins maps a method to it; by default the
    baseline's) runs right next to its method in the same direction, after
    it in even repetitions and before it in odd ones, so that neither of the
    two always follows the same run."""
    keys = list(keys)
    twin_keys = {(twin, direction) for twin in twins.values()
                 for direction in ("put", "get")}
    order = []
    for name, direction in keys:
        if (name, direction) in twin_keys:
            continue  # placed with its method
        twin_key = (twins.get(name), direction)
        if twin_key in keys:
            pair = [(name, direction), twin_key]
            order += reversed(pair) if rep % 2 else pair
        else:
            order.append((name, direction))
    return order


class Bench:
    def __init__(self, args, procs, ferry_env, baseline_env=None):
        self.args = args
        self.procs = procs
        self.ferry = Path(args.ferry_bin).resolve()
        self.ferry_env = ferry_env  # the environment of every --ferry-bin process
        # --baseline-bin and the environment of its processes, which has a
        # configuration directory of its own.
        self.baseline = Path(args.baseline_bin).resolve() if args.baseline_bin else None
        self.baseline_env = baseline_env
        self.root = WORK_DIR / "root"  # served by every long-running server
        self.downloads = WORK_DIR / "downloads"
        self.sources = {}
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.servers = {}  # method name -> Server, while the transfers run
        self.ssh_options = []
        self.methods = self.choose_methods()

    def choose_methods(self):
        chosen = chosen_cases(self.args)
        if "dufs" in chosen and not self.args.dufs_bin:
            if self.args.only:
                raise BenchError("dufs needs --dufs, with which bench.sh installs it")
            chosen.remove("dufs")
        if not chosen & set(METHODS):
            return []
        if self.baseline:
            chosen |= {twin for name, twin in BASELINE_METHODS.items() if name in chosen}
        return [name for name in METHODS if name in chosen or name == REFERENCE]

    # ------------------------------------------------ servers

    def start_ferry(self, root, log_path, tls=False, baseline=False, extra_args=()):
        """Starts `ferry server 0` serving root (None: extra_args name the
        store), with --plain unless tls and extra_args, and reads its port, and with TLS its fingerprint, from the start
        line. A TLS server makes its identity in the temporary
        XDG_CONFIG_HOME. With baseline, the server is --baseline-bin's, in
        its own environment."""
        ferry, env = ((self.baseline, self.baseline_env) if baseline
                      else (self.ferry, self.ferry_env))
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log_file:
            proc = self.procs.start(
                [ferry, "server", "0", *(["--root", root] if root is not None else []),
                 "--bind", "127.0.0.1", *([] if tls else ["--plain"]), *extra_args],
                stdout=log_file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            start_line = read_start_line(log_path)
            match = start_line and START_PATTERN.search(start_line)
            if match:
                fingerprint = FINGERPRINT_PATTERN.search(start_line)
                if tls and not fingerprint:
                    raise BenchError("no TLS identity in the ferry server's start line"
                                     + log_tail(log_path))
                if not tls and (fingerprint or "plain TCP" not in start_line):
                    raise BenchError("the ferry server started with --plain does not say"
                                     " plain TCP" + log_tail(log_path))
                return Server(proc, int(match.group(1)), log_path,
                              fingerprint.group(1) if tls else None, ferry, env)
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("ferry server did not start" + log_tail(log_path))
            time.sleep(0.002)

    def ferry_client(self, server, quiet=True):
        """The start of a one-shot ferry client command for server, from
        the server's own binary; run it in server.env. quiet=False keeps
        the client's report line, on its stderr."""
        return [server.ferry, "client", "127.0.0.1", server.port,
                *(["-q"] if quiet else []), *ferry_trust(server.fingerprint)]

    def start_listening(self, command, port, log_path):
        with open(log_path, "wb") as log_file:
            proc = self.procs.start(command, stdout=log_file, stderr=subprocess.STDOUT)
        wait_listening(proc, port, log_path)
        return Server(proc, port, log_path)

    def start_rsync(self, root=None, tag="rsyncd"):
        """An rsync daemon serving root (the transfers' root by default) as
        the module bench; tag names its configuration and logs."""
        config = WORK_DIR / f"{tag}.conf"
        lines = [
            "use chroot = false",
            f"log file = {LOG_DIR / f'{tag}-transfers.log'}",
            "[bench]",
            f"path = {root or self.root}",
            "read only = false",
        ]
        if os.getuid() == 0:
            # As root the daemon would otherwise switch to nobody, who may
            # not write to the served directory.
            lines += [f"uid = {os.getuid()}", f"gid = {os.getgid()}"]
        config.write_text("\n".join(lines) + "\n")
        port = free_port()
        return self.start_listening(
            ["rsync", "--daemon", "--no-detach", f"--config={config}",
             f"--port={port}", "--address=127.0.0.1"],
            port, LOG_DIR / f"{tag}.log")

    def start_sshd(self, tag="ssh"):
        """A throwaway sshd with its own host key, trusting a throwaway client key;
        tag names its directory and log."""
        ssh_dir = WORK_DIR / tag
        ssh_dir.mkdir()
        host_key = ssh_dir / "host_key"
        client_key = ssh_dir / "client_key"
        for key in (host_key, client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        config = ssh_dir / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1",
            f"Port {port}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {client_key}.pub",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "PidFile none",
            "UsePAM no",
            # Built into sshd, so it works wherever the distribution keeps
            # its sftp-server binary.
            "Subsystem sftp internal-sftp",
        ]) + "\n")
        # sshd refuses to start without its privilege separation directory.
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.ssh_options = [
            "-F", "/dev/null", "-i", client_key, "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-P", port,
        ]
        return self.start_listening(["/usr/sbin/sshd", "-D", "-e", "-f", config],
                                    port, LOG_DIR / f"{tag}d.log")

    def start_server(self, name):
        """The long-running server of a method, or None for the pipes."""
        if name in ANY_FERRY_METHODS:
            return self.start_ferry(self.root, LOG_DIR / f"{name}-transfers.log",
                                    tls=name in ("ferry-tls", "ferry-base-tls"),
                                    baseline=name in BASELINE_METHODS.values())
        if name == "rsync":
            return self.start_rsync()
        if name in ("scp", "sftp"):
            # One sshd serves both.
            other = "sftp" if name == "scp" else "scp"
            return self.servers.get(other) or self.start_sshd()
        if name == "http":
            port = free_port()
            return self.start_listening(
                [sys.executable, "-m", "http.server", port,
                 "--bind", "127.0.0.1", "--directory", self.root],
                port, LOG_DIR / "http-server.log")
        if name == "dufs":
            port = free_port()
            return self.start_listening(
                [self.args.dufs_bin, "-A", "-b", "127.0.0.1", "-p", port, self.root],
                port, LOG_DIR / "dufs.log")
        return None

    # ------------------------------------------------ one transfer

    def step(self, name, direction, source):
        """Builds the commands of one run. The put and get destinations are
        removed after every run: ferry never overwrites, and no peer should
        get to skip or patch an existing copy."""
        server = self.servers.get(name)
        upload_name = f"put-{name}-{source.label}"
        upload_path = self.root / upload_name
        download_path = self.downloads / f"{name}-{source.label}"
        output = upload_path if direction == "put" else download_path
        if name in ANY_FERRY_METHODS:
            return self.ferry_file_step(server, direction, source, upload_path, download_path)
        if name in ("socat", "socat-default"):
            buffer = ["-b", "131072"] if name == "socat" else []
            port = free_port()
            return Step(
                ["socat", "-u", *buffer, f"FILE:{source.path}", f"TCP:127.0.0.1:{port}"],
                listener=["socat", "-u", *buffer,
                          f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "OPEN:/dev/null"],
                listener_port=port)
        if name == "nc":
            port = free_port()
            return Step(["nc", "-N", "127.0.0.1", port], stdin=source.path,
                        listener=["nc", "-l", "127.0.0.1", port], listener_port=port)
        if name == "iperf3":
            port = free_port()
            # iperf3 sends whole blocks: one bigger than the size would send
            # more than asked.
            block = min(source.size, 128 * KIB)
            return Step(["iperf3", "-c", "127.0.0.1", "-p", port,
                         "-n", source.size, "-l", block],
                        listener=["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", port],
                        listener_port=port)
        if name == "rsync":
            url = f"rsync://127.0.0.1:{server.port}/bench/"
            if direction == "put":
                return Step(["rsync", source.path, url + upload_name], output=output)
            return Step(["rsync", url + source.served_name, download_path], output=output)
        if name == "scp":
            remote = f"{self.user}@127.0.0.1:"
            if direction == "put":
                return Step(["scp", *self.ssh_options, source.path, remote + str(upload_path)],
                            output=output)
            return Step(["scp", *self.ssh_options, remote + str(self.root / source.served_name),
                         download_path], output=output)
        if name == "sftp":
            batch = WORK_DIR / "sftp-batch"
            if direction == "put":
                batch.write_text(f'put "{source.path}" "{upload_path}"\n')
            else:
                batch.write_text(f'get "{self.root / source.served_name}" "{download_path}"\n')
            return Step(["sftp", "-b", batch, *self.ssh_options, f"{self.user}@127.0.0.1"],
                        output=output)
        if name in ("http", "dufs"):
            url = f"http://127.0.0.1:{server.port}/"
            if direction == "put":
                return Step(["curl", "-s", "-f", "-T", source.path, url + upload_name],
                            output=output)
            return Step(["curl", "-s", "-f", "-o", download_path, url + source.served_name],
                        output=output)
        raise AssertionError(f"no step for method {name}")

    def ferry_file_step(self, server, direction, source, put_target, get_target, quiet=True):
        """A ferry put of source to put_target, a path in the server's root,
        or a get of its served copy to get_target; quiet as ferry_client's."""
        if direction == "put":
            request, output = ["put", source.path, put_target.name], put_target
        else:
            request, output = ["get", source.served_name, get_target], get_target
        return Step(self.ferry_client(server, quiet) + request, env=server.env, output=output)

    def run_once(self, name, direction, source):
        """One timed, checked run: returns (wall seconds, CPU seconds)."""
        what = f"{METHODS[name].label} {direction} {human_size(source.size)}"
        return self.run_file_step(self.step(name, direction, source), self.servers.get(name),
                                  source, what, is_ferry=name in ANY_FERRY_METHODS)

    def run_file_step(self, step, server, source, what, is_ferry):
        """Runs step, which moves source, from a settled disk and a warm
        source, then checks its copy, if it makes one, and removes it:
        returns (wall seconds, CPU seconds)."""
        settle_disk()
        warm_page_cache(source.path)
        timing = self.execute(step, server, what, is_ferry)
        if step.output:
            check_copy(step.output, source.size, source.sha256, what)
            remove_file(step.output)
        return timing

    def execute(self, step, server, what, is_ferry):
        """Runs step, its listener first if it has one, and returns (wall
        seconds, CPU seconds of client, listener and server); a failed
        command stops the benchmark."""
        listener = None
        if step.listener:
            listener = self.procs.start(step.listener)
            wait_listening(listener, step.listener_port)
        server_cpu_before = process_cpu_seconds(server.proc.pid) if server else 0.0

        client_log = LOG_DIR / "client.log"
        with open(client_log, "wb") as client_stderr, \
                open(step.stdin or os.devnull, "rb") as client_stdin:
            started = time.perf_counter()
            client = self.procs.start(step.client, stdin=client_stdin, stderr=client_stderr,
                                      env=step.env)
            usages = [self.procs.reap(client)]
            if listener:
                usages.append(self.procs.reap(listener))
            elapsed = time.perf_counter() - started

        failed = [proc for proc in (client, listener) if proc and proc.returncode != 0]
        if failed:
            raise BenchError(
                f"{what}: "
                + "; ".join(f"{shell_line(p.args)} exited with {p.returncode}"
                            + (f" ({FERRY_EXIT_CODES.get(p.returncode, 'unknown')})"
                               if is_ferry else "")
                            for p in failed)
                + log_tail(client_log) + (log_tail(server.log_path) if server else ""))
        server_cpu = 0.0
        if server:
            wait_childless(server.proc.pid)
            server_cpu = process_cpu_seconds(server.proc.pid) - server_cpu_before
        return elapsed, sum(cpu_seconds(usage) for usage in usages) + server_cpu

    # ------------------------------------------------ cases

    def make_sources(self, sizes):
        data_dir = WORK_DIR / "data"
        for directory in (data_dir, self.root, self.downloads):
            directory.mkdir(parents=True)
        for label, size in sizes:
            self.sources[label] = make_source(label, size, data_dir, self.root)

    def transfers(self, sizes):
        """Rows of the transfers table, size by size, and every median:
        (method, direction, size) -> seconds."""
        rows = []
        medians = {}
        try:
            for name in self.methods:
                log(f"starting {METHODS[name].label}")
                server = self.start_server(name)
                if server:
                    self.servers[name] = server
            for label, size in sizes:
                source = self.sources[label]
                runs = {(name, direction): [] for name in self.methods
                        for direction in METHODS[name].directions}
                # Methods take turns within each repetition, so that a burst
                # of load from elsewhere smears over all of them.
                for rep in range(self.args.reps):
                    for name, direction in turn_order(runs, rep):
                        seconds, cpu = self.run_once(name, direction, source)
                        runs[(name, direction)].append((seconds, cpu))
                        log(f"  {human_size(size):>8} {METHODS[name].label} {direction}"
                            f" rep {rep + 1}/{self.args.reps}: {seconds:.4f} s")
                reference = statistics.median(s for s, _ in runs[(REFERENCE, "send")])
                for (name, direction), results in runs.items():
                    rows.append(transfer_row(name, direction, size, results, reference))
                    medians[name, direction, size] = statistics.median(s for s, _ in results)
        finally:
            for server in self.servers.values():
                self.procs.stop(server.proc)
            self.servers.clear()
        return rows, medians

    def transfer_memory(self, big_label):
        """Peak RSS of the ferry client, big file against 1 MiB.

        /usr/bin/time measures it: ru_maxrss from wait4 of a child spawned
        here would include this Python process's own memory, which the
        kernel counts for the child up to its exec.
        """
        if not os.access("/usr/bin/time", os.X_OK):
            raise BenchError("transfer-memory needs /usr/bin/time (Debian package time)")
        peak_file = WORK_DIR / "peak-rss"
        rows = []
        for tls in (False, True):
            rows += self.transfer_memory_of(big_label, tls, peak_file)
        return rows

    def transfer_memory_of(self, big_label, tls, peak_file):
        """transfer_memory's rows for one mode."""
        mode = "TLS" if tls else "plain"
        server = self.start_ferry(self.root, LOG_DIR / f"ferry-memory-{mode}.log", tls=tls)
        rows = []
        try:
            for label in ("1MiB", big_label):
                source = self.sources[label]
                for direction in ("put", "get"):
                    what = f"ferry client ({mode}) {direction} {human_size(source.size)}"
                    if direction == "put":
                        output = self.root / f"put-memory-{label}"
                        request = ["put", source.path, output.name]
                    else:
                        output = self.downloads / f"memory-{label}"
                        request = ["get", source.served_name, output]
                    settle_disk()
                    warm_page_cache(source.path)
                    client = self.procs.start(
                        ["/usr/bin/time", "-f", "%M", "-o", peak_file,
                         *self.ferry_client(server), *request], env=self.ferry_env)
                    self.procs.reap(client)
                    if client.returncode != 0:
                        raise BenchError(f"{shell_line(client.args)} exited with"
                                         f" {client.returncode}" + log_tail(server.log_path))
                    check_copy(output, source.size, source.sha256, what)
                    remove_file(output)
                    peak_mib = int(peak_file.read_text().split()[-1]) / 1024
                    log(f"  {what}: peak RSS {peak_mib:.1f} MiB")
                    goal = goal_word(peak_mib < CLIENT_RSS_GOAL_MIB)
                    rows.append([f"{what}, peak RSS (goal < {CLIENT_RSS_GOAL_MIB}: {goal})",
                                 f"{peak_mib:.1f}"])
        finally:
            self.procs.stop(server.proc)
        return rows

    def latency(self):
        """Median ferry `list` against the floor of any such request:
        starting a process plus one TCP round trip."""
        root = WORK_DIR / "latency-root"
        (root / "notes").mkdir(parents=True)
        for name in ("a.txt", "b.txt", "notes/c.txt"):
            (root / name).write_text(f"{name}\n")
        ferry_s, tls_s = (self.median_list(root, tls) for tls in (False, True))
        true_s = self.median_spawn(["/bin/true"])
        rtt_s = median_tcp_round_trip()
        log(f"  ferry list {ferry_s * 1e3:.3f} ms (TLS {tls_s * 1e3:.3f} ms),"
            f" /bin/true {true_s * 1e3:.3f} ms, TCP round trip {rtt_s * 1e3:.3f} ms")
        return ferry_s, tls_s, true_s, rtt_s

    def median_list(self, root, tls):
        """Median ferry `list` of root, plain or over TLS (handshake
        included), after one run that checks what it prints."""
        server = self.start_ferry(root, LOG_DIR / f"ferry-latency-{tls}.log", tls=tls)
        command = self.ferry_client(server) + ["list"]
        try:
            listing = subprocess.run([str(part) for part in command], env=self.ferry_env,
                                     capture_output=True, text=True, timeout=60)
            if listing.returncode != 0 or listing.stdout.split() != ["a.txt", "b.txt", "notes/"]:
                raise BenchError(f"ferry list exited with {listing.returncode}, printed"
                                 f" {listing.stdout!r}, stderr {listing.stderr!r}")
            return self.median_spawn(command, env=self.ferry_env)
        finally:
            self.procs.stop(server.proc)

    def median_spawn(self, command, env=None):
        """Median wall time from start to exit, every command spawned the
        same way so that the cost of spawning cancels out in the ratio."""
        times = []
        for _ in range(LATENCY_RUNS):
            started = time.perf_counter()
            proc = self.procs.start(command, env=env)
            self.procs.reap(proc, timeout=60)
            times.append(time.perf_counter() - started)
            if proc.returncode != 0:
                raise BenchError(f"{shell_line(command)} exited with {proc.returncode}")
        return statistics.median(times)

    def concurrent(self, count):
        """count ferry clients at once, each uploading its own file; then
        count at once, each downloading one. Returns a row per direction."""
        case_dir = WORK_DIR / "concurrent"
        sources_dir, served_dir, got_dir, logs_dir = (
            case_dir / name for name in ("sources", "root", "got", "logs"))
        for directory in (sources_dir, got_dir, logs_dir):
            directory.mkdir(parents=True)
        log(f"generating {count} files of {human_size(CONCURRENT_FILE_SIZE)}")
        files = []
        for index in range(count):
            path = sources_dir / f"c-{index:04d}.bin"
            files.append((path, write_random_file(path, CONCURRENT_FILE_SIZE)))
        server = self.start_ferry(served_dir, LOG_DIR / "ferry-concurrent.log")
        base = self.ferry_client(server)
        rows = []
        try:
            for direction in ("put", "get"):
                if direction == "put":
                    commands = [base + ["put", path, path.name] for path, _ in files]
                    outputs = [served_dir / path.name for path, _ in files]
                else:
                    commands = [base + ["get", path.name, got_dir / path.name]
                                for path, _ in files]
                    outputs = [got_dir / path.name for path, _ in files]
                client_logs = [logs_dir / f"{direction}-{path.name}.log" for path, _ in files]
                settle_disk()
                elapsed, exit_codes = self.run_together(commands, client_logs)
                failures = 0
                for (_, sha256), output, code, client_log in zip(
                        files, outputs, exit_codes, client_logs):
                    if code != 0:
                        failures += 1
                        log(f"  {direction} {output.name}: exit {code}" + log_tail(client_log, 3))
                        continue
                    check_copy(output, CONCURRENT_FILE_SIZE, sha256, f"concurrent {direction}")
                log(f"  {count} concurrent {direction}s: {elapsed:.3f} s, {failures} failures")
                rows.append((direction, elapsed,
                             count * CONCURRENT_FILE_SIZE / elapsed / 1e6, failures))
        finally:
            self.procs.stop(server.proc)
        return rows

    def run_together(self, commands, client_logs):
        """Starts every command before waiting for any. Returns the wall time
        from the first start to the last exit, and the exit codes."""
        started = time.perf_counter()
        procs = []
        for command, client_log in zip(commands, client_logs):
            with open(client_log, "wb") as client_stderr:
                procs.append(self.procs.start(command, stderr=client_stderr,
                                              env=self.ferry_env))
        for proc in procs:
            self.procs.reap(proc)
        return time.perf_counter() - started, [proc.returncode for proc in procs]

    def idle_memory(self):
        """Per ferry mode, "plain" and "TLS": the server's VmRSS fresh, then
        VmRSS and VmHWM with IDLE_CONNECTIONS connections that completed the
        handshake (over TLS, the TLS handshake and then ferry's), in KiB."""
        return {"plain": self.idle_memory_of(tls=False), "TLS": self.idle_memory_of(tls=True)}

    def idle_memory_of(self, tls):
        """idle_memory for one mode: one server, IDLE_CONNECTIONS connections
        opened one after another, each waiting for its Welcome, so that no
        more than one handshake is ever in progress (--max-handshakes-per-ip
        does not come into it)."""
        mode = "tls" if tls else "plain"
        # All from 127.0.0.1: more than one address may hold by default
        # (--max-per-ip 256, issue 12). --max-connections is 1000 by default,
        # given all the same so that the case does not hang on that default.
        server = self.start_ferry(WORK_DIR / "idle-root", LOG_DIR / f"ferry-idle-{mode}.log",
                                  tls=tls,
                                  extra_args=["--max-per-ip", str(IDLE_CONNECTIONS),
                                              "--max-connections", str(IDLE_CONNECTIONS)])
        context = idle_tls_context() if tls else None
        connections = []
        try:
            rss_fresh, _ = process_memory_kib(server.proc.pid)
            for _ in range(IDLE_CONNECTIONS):
                conn = open_idle_connection(server, context)
                connections.append(conn)
                conn.sendall(FERRY_PREAMBLE + FERRY_ANONYMOUS_HELLO)
                reply = receive_welcome(conn)
                if reply is not None:
                    raise BenchError(f"ferry ({mode}) answered the preamble and hello with"
                                     f" {reply!r}, not its preamble and a Welcome"
                                     + log_tail(server.log_path))
            # Lets the server settle whatever it does after a handshake.
            time.sleep(1)
            if server.proc.poll() is not None:
                raise BenchError(f"ferry server ({mode}) died holding idle connections"
                                 + log_tail(server.log_path))
            rss_idle, hwm_idle = process_memory_kib(server.proc.pid)
        finally:
            for conn in connections:
                conn.close()
            self.procs.stop(server.proc)
        log(f"  {mode} server VmRSS {rss_fresh / 1024:.1f} MiB fresh,"
            f" {rss_idle / 1024:.1f} MiB with {IDLE_CONNECTIONS} idle connections")
        return rss_fresh, rss_idle, hwm_idle

    def trees(self, trees):
        """put -r and get -r of whole trees: ferry in both modes against
        rsync -r to and from a daemon, tar through socat and scp -r; beside
        a tree with a single_file, ferry's plain put and get of one file of
        that size too. Returns every run, (method or its file twin,
        direction, tree label) -> [(seconds, CPU seconds)], and per ferry
        method and direction the reason it did not run, if it did not."""
        case_dir = WORK_DIR / "trees"
        root, downloads, sources_dir = (case_dir / name
                                        for name in ("root", "downloads", "sources"))
        for directory in (root, downloads, sources_dir):
            directory.mkdir(parents=True)
        sources = []
        single_files = {}  # tree label -> the Source of its single file
        for tree in trees:
            log(f"generating a tree of {tree.files} files of {human_size(tree.file_size)}")
            path = sources_dir / tree.label
            manifest = write_random_tree(path, tree)
            served_name = f"get-{tree.label}"
            link_tree(path, root / served_name)
            sources.append(TreeSource(tree, path, manifest, served_name))
            if tree.single_file:
                single_files[tree.label] = make_source(
                    human_size(tree.single_file).replace(" ", ""), tree.single_file,
                    sources_dir, root)
        file_methods = {twin: name for name, twin in TREE_FILE_TWINS.items()}
        servers = {}
        try:
            servers["ferry-plain"] = self.start_ferry(root, LOG_DIR / "ferry-plain-trees.log")
            servers["ferry-tls"] = self.start_ferry(root, LOG_DIR / "ferry-tls-trees.log",
                                                    tls=True)
            servers["rsync"] = self.start_rsync(root, tag="rsyncd-trees")
            servers["scp"] = self.start_sshd(tag="ssh-trees")
            unsupported = {}
            for name in FERRY_METHODS:
                for direction, reason in self.ferry_tree_support(
                        name, servers[name], root, downloads).items():
                    unsupported[name, direction] = reason
            runs = {}
            for source in sources:
                keys = [(name, direction) for name, _ in TREE_METHODS
                        for direction in ("put", "get")
                        if (name, direction) not in unsupported]
                single = single_files.get(source.tree.label)
                # Only where the tree runs: the file is there to be held
                # against it.
                file_keys = [(TREE_FILE_TWINS[name], direction) for name, direction in keys
                             if single and name in TREE_FILE_TWINS]
                for key in keys + file_keys:
                    runs[key + (source.tree.label,)] = []
                for rep in range(self.args.reps):
                    # A different method goes first in each repetition, so
                    # that a burst of load from elsewhere smears over all;
                    # a single file runs right next to its mode's tree in
                    # the same direction, so that such a burst hits both.
                    shift = rep % len(keys)
                    for name, direction in turn_order(keys[shift:] + keys[:shift] + file_keys,
                                                      rep, TREE_FILE_TWINS):
                        if name in file_methods:
                            method = file_methods[name]
                            seconds, cpu = self.run_tree_file_once(
                                method, direction, single, servers[method], root, downloads)
                            runs[name, direction, source.tree.label].append((seconds, cpu))
                            log(f"  {human_size(single.size)} file beside {source.tree.label}"
                                f" {METHODS[method].label} {direction}"
                                f" rep {rep + 1}/{self.args.reps}: {seconds:.3f} s,"
                                f" {single.size / seconds / 1e6:.1f} MB/s")
                            continue
                        seconds, cpu = self.run_tree_once(
                            name, direction, source, servers.get(name), root, downloads)
                        runs[name, direction, source.tree.label].append((seconds, cpu))
                        log(f"  {source.tree.label} {dict(TREE_METHODS)[name]} {direction}"
                            f" rep {rep + 1}/{self.args.reps}: {seconds:.3f} s,"
                            f" {source.tree.files / seconds:.0f} files/s")
        finally:
            for server in servers.values():
                self.procs.stop(server.proc)
        return runs, unsupported

    def ferry_tree_support(self, name, server, root, downloads):
        """Tries put -r and get -r of a tiny tree with ferry. A usage error
        (exit 2) means this build lacks the form: direction -> the reason,
        for the rows to say so. Any other failure stops the benchmark."""
        trial = WORK_DIR / "trees" / f"trial-{name}"
        manifest = write_random_tree(trial, Tree("trial", 3, 100, 2))
        served_name = f"trial-get-{name}"
        link_tree(trial, root / served_name)
        put_target = root / f"trial-put-{name}"
        get_target = downloads / f"trial-{name}"
        unsupported = {}
        for direction, request, output in (
                ("put", ["put", "-r", trial, put_target.name], put_target),
                ("get", ["get", "-r", served_name, get_target], get_target)):
            command = [str(part) for part in self.ferry_client(server) + request]
            what = f"trial {METHODS[name].label} {direction} -r"
            try:
                trial_run = subprocess.run(command, env=server.env, capture_output=True,
                                           text=True, timeout=60)
            except subprocess.TimeoutExpired:
                raise BenchError(f"{what}: {shell_line(command)} ran over 60 s")
            if trial_run.returncode == 2:
                first_line = (trial_run.stderr.strip().splitlines() or [""])[0]
                log(f"  {what}: {NOT_SUPPORTED} ({first_line})")
                unsupported[direction] = NOT_SUPPORTED
                continue
            if trial_run.returncode != 0:
                raise BenchError(f"{what}: {shell_line(command)} exited with"
                                 f" {trial_run.returncode}, stderr {trial_run.stderr!r}"
                                 + log_tail(server.log_path))
            check_tree(output, manifest, what)
            shutil.rmtree(output)
        shutil.rmtree(root / served_name)
        return unsupported

    def tree_step(self, name, direction, source, server, root, downloads):
        """The commands of one run of the trees case. Every target is new:
        the put target at the served root, the get target in downloads."""
        label = source.tree.label
        put_target = root / f"put-{name}-{label}"
        get_target = downloads / f"{name}-{label}"
        served = root / source.served_name
        output = put_target if direction == "put" else get_target
        if name in FERRY_METHODS:
            request = (["put", "-r", source.path, put_target.name] if direction == "put"
                       else ["get", "-r", source.served_name, get_target])
            return Step(self.ferry_client(server) + request, env=server.env, output=output)
        if name == "rsync":
            # Trailing slashes: the contents of the one go into the other,
            # which the daemon or rsync makes.
            url = f"rsync://127.0.0.1:{server.port}/bench/"
            if direction == "put":
                return Step(["rsync", "-r", f"{source.path}/", f"{url}{put_target.name}/"],
                            output=output)
            return Step(["rsync", "-r", f"{url}{source.served_name}/", f"{get_target}/"],
                        output=output)
        if name == "tar-socat":
            # The receiver listens: on the served side for a put, here for a get.
            port = free_port()
            sending, receiving = ((source.path, put_target) if direction == "put"
                                  else (served, get_target))
            return Step(
                ["sh", "-c", f"tar c -C {shlex.quote(str(sending))} ."
                 f" | socat -u -b131072 STDIN TCP:127.0.0.1:{port}"],
                listener=["sh", "-c", f"mkdir {shlex.quote(str(receiving))}"
                          f" && socat -u -b131072 TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"
                          f" STDOUT | tar x -C {shlex.quote(str(receiving))}"],
                listener_port=port, output=output)
        if name == "scp":
            remote = f"{self.user}@127.0.0.1:"
            if direction == "put":
                return Step(["scp", "-r", *self.ssh_options, source.path,
                             remote + str(put_target)], output=output)
            return Step(["scp", "-r", *self.ssh_options, remote + str(served), get_target],
                        output=output)
        raise AssertionError(f"no tree step for method {name}")

    def run_tree_once(self, name, direction, source, server, root, downloads):
        """One timed run of a whole tree, its copy checked file by file,
        then removed: returns (wall seconds, CPU seconds)."""
        what = f"{dict(TREE_METHODS)[name]} {direction} {source.tree.label}"
        step = self.tree_step(name, direction, source, server, root, downloads)
        settle_disk()
        # The served copy is hard links to the source: one warms both.
        warm_tree(source.path)
        timing = self.execute(step, server, what, is_ferry=name in FERRY_METHODS)
        check_tree(step.output, source.manifest, what)
        shutil.rmtree(step.output)
        return timing

    def run_tree_file_once(self, name, direction, source, server, root, downloads):
        """One timed run of ferry's put or get (no -r) of the single file
        beside a tree, through the trees' server, its copy checked by
        SHA-256, then removed: returns (wall seconds, CPU seconds)."""
        what = f"{METHODS[name].label} {direction} {human_size(source.size)} single file"
        step = self.ferry_file_step(server, direction, source,
                                    root / f"put-{name}-{source.label}",
                                    downloads / f"{name}-{source.label}")
        return self.run_file_step(step, server, source, what, is_ferry=True)

    def resume(self):
        """Issue 14's resume case: per ferry mode and direction, and per
        repetition, a put or get of RESUME_SIZE cut once its partial passes
        RESUME_CUT_AT, the same command run again, timed, and a fresh put
        or get of a file of exactly the bytes that run moved, through the
        same server, which of the two goes first alternating rep by rep, so
        that load from elsewhere hits both alike. Returns (method,
        direction) -> [ResumeRun], and every partial found left over once a
        transfer had completed (removed)."""
        case_dir = WORK_DIR / "resume"
        root, downloads, sources_dir = (case_dir / name
                                        for name in ("root", "downloads", "sources"))
        for directory in (root, downloads, sources_dir):
            directory.mkdir(parents=True)
        source = make_source(human_size(RESUME_SIZE).replace(" ", ""), RESUME_SIZE,
                             sources_dir, root)
        rests = {}  # bytes -> a Source of that many, for the fresh runs
        keys = [(name, direction) for name in FERRY_METHODS for direction in ("put", "get")]
        runs = {key: [] for key in keys}
        leftovers = []
        servers = {}
        try:
            for name in FERRY_METHODS:
                servers[name] = self.start_ferry(root, LOG_DIR / f"{name}-resume.log",
                                                 tls=name == "ferry-tls")
            for rep in range(self.args.reps):
                # A different mode and direction goes first in each
                # repetition, as in the trees case.
                shift = rep % len(keys)
                for name, direction in keys[shift:] + keys[:shift]:
                    run = self.resume_once(name, direction, rep, source, rests,
                                           servers[name], root, downloads, sources_dir)
                    runs[name, direction].append(run)
                    left = remove_partials(root, downloads)
                    if left:
                        log(f"  partials left after the transfers completed: {', '.join(left)}")
                    leftovers += left
                    log(f"  {METHODS[name].label} {direction} rep {rep + 1}/{self.args.reps}:"
                        f" cut at {run.cut_at / MIB:.1f} MiB, resumed at"
                        f" {run.offset / MIB:.1f} MiB, {run.moved} bytes in"
                        f" {run.resumed_s:.3f} s (CPU {run.resumed_cpu:.3f} s) against"
                        f" {run.fresh_s:.3f} s fresh (CPU {run.fresh_cpu:.3f} s), ratio"
                        f" {run.resumed_s / run.fresh_s:.2f}, {run.reread_mib:.1f} MiB"
                        " of the partial read again")
        finally:
            for server in servers.values():
                self.procs.stop(server.proc)
        return runs, leftovers

    def resume_once(self, name, direction, rep, source, rests, server, root, downloads,
                    sources_dir):
        """One repetition of the resume case: the cut, then the resumed run
        and the fresh one, in turns; both copies checked and removed.
        Returns a ResumeRun."""
        what = f"{METHODS[name].label} {direction} {human_size(source.size)}"
        put_target = root / f"put-resume-{name}"
        get_target = downloads / f"resume-{name}"
        cut_at, offset = self.cut_transfer(server, direction, source, put_target, get_target,
                                           what)
        if not offset:
            raise BenchError(f"{what}: cut at {cut_at} bytes, the partial kept nothing")
        rest = source.size - offset
        if rest not in rests:
            rests[rest] = make_source(f"rest-{human_size(rest).replace(' ', '')}", rest,
                                      sources_dir, root)
        timed = {}
        for run in ("resumed", "fresh") if rep % 2 == 0 else ("fresh", "resumed"):
            if run == "resumed":
                timed[run] = self.resumed_run(server, direction, source, offset,
                                              put_target, get_target, what)
            else:
                timed[run] = self.fresh_run(server, direction, rests[rest],
                                            root / f"put-rest-{name}",
                                            downloads / f"rest-{name}",
                                            f"{METHODS[name].label} {direction}"
                                            f" {human_size(rest)} fresh")
        (resumed_s, resumed_cpu), moved, reread_mib = timed["resumed"]
        fresh_s, fresh_cpu = timed["fresh"]
        return ResumeRun(cut_at, offset, moved, resumed_s, fresh_s, resumed_cpu, fresh_cpu,
                         reread_mib)

    def cut_transfer(self, server, direction, source, put_target, get_target, what):
        """Starts a put or get of source and sends the client SIGINT, as
        Ctrl-C would, once the receiver's partial passes RESUME_CUT_AT: the
        server's for a put, the client's beside its target for a get. The
        client must exit 130; the receiver, the server once it sees the
        connection go, seals the partial at its last step. Returns the
        partial's size at the cut and once sealed."""
        step = self.ferry_file_step(server, direction, source, put_target, get_target,
                                    quiet=False)
        settle_disk()
        warm_page_cache(source.path)
        client_log = LOG_DIR / "client-cut.log"
        with open(client_log, "wb") as client_stderr:
            client = self.procs.start(step.client, stderr=client_stderr, env=step.env)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            partial = (server_partial(put_target.parent) if direction == "put"
                       else client_partial(get_target))
            cut_at = file_size(partial)
            if cut_at > RESUME_CUT_AT:
                break
            # Not reaped, so that reap can: its pid stays the client's.
            if exits_within(client.pid, 0):
                self.procs.reap(client)
                raise BenchError(f"{what}: the client exited with {client.returncode} before"
                                 f" its partial passed {human_size(RESUME_CUT_AT)}"
                                 + log_tail(client_log) + log_tail(server.log_path))
            if time.monotonic() > deadline:
                self.procs.stop(client)
                raise BenchError(f"{what}: the partial did not pass"
                                 f" {human_size(RESUME_CUT_AT)} in {RUN_TIMEOUT_S} s")
            time.sleep(0.001)
        os.kill(client.pid, signal.SIGINT)
        self.procs.reap(client)
        if client.returncode != 130:
            raise BenchError(f"{what}: SIGINT at {cut_at} bytes, the client exited with"
                             f" {client.returncode}, not 130 (interrupted)"
                             + log_tail(client_log) + log_tail(server.log_path))
        return cut_at, size_once_released(partial)

    def resumed_run(self, server, direction, source, offset, put_target, get_target, what):
        """The cut command run again, timed, its copy checked and removed.
        Its report line must say it went on from offset and moved the rest;
        the side holding the partial, the server for a put, says how much
        of it it read again. Returns ((wall seconds, CPU seconds), bytes
        moved, MiB read again)."""
        step = self.ferry_file_step(server, direction, source, put_target, get_target,
                                    quiet=False)
        log_start = server.log_path.stat().st_size
        timing = self.run_file_step(step, server, source, f"{what} resumed", is_ferry=True)
        line = last_line(LOG_DIR / "client.log")
        moved, resumed_at, reread_mib = transfer_report(line, what)
        if resumed_at != f"{offset / MIB:.1f}" or moved != source.size - offset:
            raise BenchError(f"{what}: the partial was sealed at {offset} bytes, the second"
                             f" run says {line!r}")
        if direction == "put":
            line = server_report_line(server.log_path, log_start,
                                      f'put "{put_target.name}" ok', what)
            _, server_at, reread_mib = transfer_report(line, f"{what}, the server's report")
            if server_at != resumed_at:
                raise BenchError(f"{what}: the client resumed at {resumed_at} MiB, the"
                                 f" server says {line!r}")
        return timing, moved, reread_mib

    def fresh_run(self, server, direction, source, put_target, get_target, what):
        """A put or get of source from its start, timed, its copy checked
        and removed; its report line must say so. Returns (wall seconds, CPU
        seconds)."""
        step = self.ferry_file_step(server, direction, source, put_target, get_target,
                                    quiet=False)
        timing = self.run_file_step(step, server, source, what, is_ferry=True)
        line = last_line(LOG_DIR / "client.log")
        moved, resumed_at, _ = transfer_report(line, what)
        if resumed_at is not None or moved != source.size:
            raise BenchError(f"{what}: not a transfer of {source.size} bytes from the start:"
                             f" {line!r}")
        return timing

    def rate(self):
        """Issue 16's rate case: per ferry mode and direction, and per
        repetition, a put or get of RATE_SIZE with the client's --limit-rate
        RATE_LIMIT, timed, its copy checked and removed; which mode and
        direction goes first turns rep by rep. Returns (method, direction)
        -> [wall seconds]."""
        case_dir = WORK_DIR / "rate"
        root, downloads, sources_dir = (case_dir / name
                                        for name in ("root", "downloads", "sources"))
        for directory in (root, downloads, sources_dir):
            directory.mkdir(parents=True)
        source = make_source(human_size(RATE_SIZE).replace(" ", ""), RATE_SIZE, sources_dir,
                             root)
        keys = [(name, direction) for name in FERRY_METHODS for direction in ("put", "get")]
        runs = {key: [] for key in keys}
        servers = {}
        try:
            for name in FERRY_METHODS:
                servers[name] = self.start_ferry(root, LOG_DIR / f"{name}-rate.log",
                                                 tls=name == "ferry-tls")
            for rep in range(self.args.reps):
                shift = rep % len(keys)
                for name, direction in keys[shift:] + keys[:shift]:
                    server = servers[name]
                    limit = ["--limit-rate", RATE_LIMIT]
                    if direction == "put":
                        target = root / f"put-rate-{name}"
                        request = ["put", source.path, target.name]
                    else:
                        target = downloads / f"rate-{name}"
                        request = ["get", source.served_name, target]
                    step = Step(self.ferry_client(server) + limit + request, env=server.env,
                                output=target)
                    what = (f"{METHODS[name].label} {direction} {human_size(RATE_SIZE)}"
                            f" at --limit-rate {RATE_LIMIT}")
                    seconds, _ = self.run_file_step(step, server, source, what, is_ferry=True)
                    runs[name, direction].append(seconds)
                    log(f"  {what} rep {rep + 1}/{self.args.reps}: {seconds:.3f} s,"
                        f" {RATE_SIZE / seconds / 1e6:.2f} MB/s")
        finally:
            for server in servers.values():
                self.procs.stop(server.proc)
        return runs


    def s3(self):
        """Issue 17's s3 case: per repetition, a put and a get of a file
        and of a tree, through ferry on an S3 store and through rclone, to
        one moto server; which method goes first turns rep by rep. Returns
        (sizes, runs, unsupported): runs maps (method, what, direction) to
        wall seconds; unsupported holds the ferry rows its store refused."""
        file_size = QUICK_S3_FILE_SIZE if self.args.quick else S3_FILE_SIZE
        tree = QUICK_S3_TREE if self.args.quick else S3_TREE
        case_dir = WORK_DIR / "s3"
        sources_dir, downloads, tree_top = (case_dir / name
                                            for name in ("sources", "downloads", "tree"))
        for directory in (sources_dir, downloads):
            directory.mkdir(parents=True)
        log(f"generating {human_size(file_size)} of random data and {tree.files} files")
        source_path = sources_dir / "file.bin"
        source = Source("s3", file_size, source_path, write_random_file(source_path, file_size),
                        "get-file.bin")
        manifest = write_random_tree(tree_top, tree)
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        moto = self.start_listening([S3_VENV_PYTHON, S3_WRAPPER, "127.0.0.1", str(port)], port,
                                    LOG_DIR / "moto.log")
        # rclone cannot take a CA bundle with its own HTTP transport, and
        # moto is plain HTTP anyway.
        rclone_env = {**{name: value for name, value in os.environ.items()
                         if name != "AWS_CA_BUNDLE"},
                      "RCLONE_CONFIG": os.devnull,
                      "RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
                      "RCLONE_CONFIG_S3_ENDPOINT": endpoint,
                      "RCLONE_CONFIG_S3_ACCESS_KEY_ID": S3_KEYS["AWS_ACCESS_KEY_ID"],
                      "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
                      "RCLONE_CONFIG_S3_REGION": "us-east-1",
                      "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true"}

        def rclone(*args):
            return ["rclone", *args]

        def remote(prefix, name=""):
            return f"s3:{S3_BUCKET}/{prefix}/{name}".rstrip("/")

        def run_quietly(command, what):
            done = subprocess.run(command, env=rclone_env, capture_output=True)
            if done.returncode != 0:
                raise BenchError(f"{what}: {shell_line(command)} exited with"
                                 f" {done.returncode}: {done.stderr.decode(errors='replace')}")

        ferry = None
        runs = {}
        unsupported = set()
        plain_env = self.ferry_env
        try:
            run_quietly(rclone("mkdir", f"s3:{S3_BUCKET}"), "making the bucket")
            # The server finds its S3 credentials where a user's would be.
            self.ferry_env = {**plain_env, **S3_KEYS}
            ferry = self.start_ferry(None, LOG_DIR / "ferry-s3.log", extra_args=[
                "--store", f"s3://{S3_BUCKET}/ferry", "--s3-endpoint", endpoint])
            # What each get reads: written once, by each method itself.
            seed = Step(self.ferry_client(ferry) + ["put", source.path, source.served_name],
                        env=ferry.env)
            self.execute(seed, ferry, "seeding ferry's file", is_ferry=True)
            run_quietly(rclone("copyto", source.path, remote("rclone", source.served_name)),
                        "seeding rclone's file")
            run_quietly(rclone("copy", tree_top, remote("rclone", "get-tree")),
                        "seeding rclone's tree")
            run_quietly(rclone("copy", tree_top, remote("ferry", "get-tree")),
                        "seeding ferry's tree")
            keys = [(method, what, direction) for what in ("file", "tree")
                    for direction in ("put", "get") for method, _ in S3_METHODS]
            for rep in range(self.args.reps):
                shift = rep % 2
                for key in keys[shift:] + keys[:shift]:
                    method, what, direction = key
                    if key in unsupported:
                        continue
                    label = f"{method} {direction} {what} on S3 rep {rep + 1}/{self.args.reps}"
                    seconds = self.s3_run(key, ferry, rclone, remote, rclone_env, source,
                                          tree_top, manifest, downloads, label)
                    if seconds is None:
                        unsupported.add(key)
                        log(f"  {label}: {NOT_SUPPORTED}")
                        continue
                    runs.setdefault(key, []).append(seconds)
                    log(f"  {label}: {seconds:.3f} s")
                    # Keep the S3 server's memory to the seeds: moto holds
                    # every object in memory.
                    if direction == "put":
                        prefix = "ferry" if method == "ferry" else "rclone"
                        run_quietly(rclone("purge" if what == "tree" else "deletefile",
                                           remote(prefix, f"put-{what}")), "removing a put")
        finally:
            self.ferry_env = plain_env
            if ferry:
                self.procs.stop(ferry.proc)
            self.procs.stop(moto.proc)
        return (file_size, tree), runs, unsupported

    def s3_run(self, key, ferry, rclone, remote, rclone_env, source, tree_top, manifest,
               downloads, label):
        """One timed run of the s3 case, its copy checked and removed:
        wall seconds, or None for a ferry run its server does not serve."""
        method, what, direction = key
        target = downloads / f"{method}-{what}"
        if method == "ferry":
            client = self.ferry_client(ferry, quiet=False)
            request = {("file", "put"): ["put", source.path, "put-file"],
                       ("file", "get"): ["get", source.served_name, target],
                       ("tree", "put"): ["put", "-r", tree_top, "put-tree"],
                       ("tree", "get"): ["get", "-r", "get-tree", target]}[what, direction]
            step = Step(client + request, env=ferry.env)
        else:
            request = {("file", "put"): ["copyto", source.path, remote("rclone", "put-file")],
                       ("file", "get"): ["copyto", remote("rclone", source.served_name), target],
                       ("tree", "put"): ["copy", tree_top, remote("rclone", "put-tree")],
                       ("tree", "get"): ["copy", remote("rclone", "get-tree"), target]}
            step = Step(rclone(*request[what, direction]), env=rclone_env)
        settle_disk()
        if what == "file":
            warm_page_cache(source.path)
        else:
            warm_tree(tree_top)
        try:
            seconds, _ = self.execute(step, None, label, is_ferry=method == "ferry")
        except BenchError as error:
            if method == "ferry" and "does not support" in str(error):
                return None
            raise
        if direction == "get":
            if what == "file":
                check_copy(target, source.size, source.sha256, label)
                remove_file(target)
            else:
                check_tree(target, manifest, label)
                shutil.rmtree(target)
        return seconds


def s3_table(sizes, runs, unsupported):
    """Issue 17's rows: ferry on an S3 store against rclone, same server,
    same run."""
    file_size, tree = sizes
    rows = []
    for what, label in (("file", human_size(file_size)),
                        ("tree", f"{tree.files} x {human_size(tree.file_size)}")):
        for direction in ("put", "get"):
            reference = runs.get(("rclone", what, direction))
            for method, method_label in S3_METHODS:
                key = (method, what, direction)
                if key in unsupported or key not in runs:
                    rows.append([label, direction, method_label, NOT_SUPPORTED, "", "", ""])
                    continue
                seconds = runs[key]
                median = statistics.median(seconds)
                rate = (f"{file_size / median / 1e6:.1f} MB/s" if what == "file"
                        else f"{tree.files / median:.0f} files/s")
                ratio = (f"{statistics.median(reference) / median:.2f}" if reference else "")
                rows.append([label, direction, method_label, f"{median:.3f}",
                             f"{min(seconds):.3f}-{max(seconds):.3f}", rate, ratio])
    return (
        "S3: ferry serving a bucket (`--store s3://`, plain TCP between client and server)"
        " against rclone, both to the same moto server on 127.0.0.1 (in memory, behind the"
        " tests' serialising wrapper) in the same run. Seconds from client start to exit;"
        " every get checked (SHA-256). Ratio = rclone's median / this row's: above 1,"
        " ferry is faster.\n\n"
        + markdown_table(["what", "direction", "method", "median s", "min-max s", "rate",
                          "rclone / this"], rows, right_aligned=(3, 5, 6)))


def idle_tls_context():
    """A client context for the idle TLS connections: TLS 1.3 only, as
    ferry speaks. Certificate verification is off: ferry's identity is a
    self-signed certificate that no CA vouches for, which its client pins
    by fingerprint instead; open_idle_connection compares that fingerprint
    itself."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def open_idle_connection(server, context):
    """A connection to server, plain, or with context through the TLS
    handshake, the server's certificate checked against the fingerprint in
    its start line, as `ferry client --fingerprint` would."""
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    # As ferry's own client does (src/transport/link.rs). Without it, over
    # TLS the Hello waits behind the unacknowledged Finished for the server's
    # delayed ACK, 40 ms a connection.
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is None:
        return conn
    try:
        conn = context.wrap_socket(conn)
    except BaseException:
        conn.close()
        raise
    fingerprint = hashlib.sha256(conn.getpeercert(binary_form=True)).hexdigest()
    if fingerprint != server.fingerprint:
        conn.close()
        raise BenchError(f"the TLS server showed a certificate of fingerprint {fingerprint},"
                         f" not {server.fingerprint} of its start line")
    return conn


def receive_welcome(conn):
    """Reads the server's answer to the preamble and an empty Hello: None
    if it is ferry's preamble and a Welcome, else the bytes read."""
    head = receive_exactly(conn, len(FERRY_PREAMBLE) + 4)
    if len(head) < len(FERRY_PREAMBLE) + 4 or not head.startswith(FERRY_PREAMBLE):
        return head
    length = int.from_bytes(head[len(FERRY_PREAMBLE):], "big")
    # Frame lengths are 1..=16384 (PROTOCOL.md §3); refuse the rest unread.
    if not 2 <= length <= 16384:
        return head
    frame = receive_exactly(conn, length)
    if len(frame) < length or frame[0] != FERRY_WELCOME_TAG or frame[1] != length - 2:
        return head + frame
    return None


def receive_exactly(conn, count):
    """Up to count bytes: fewer only if the peer closed."""
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def median_tcp_round_trip():
    """Median of connect + 1 byte out + 1 byte echoed back, against an echo
    server in a thread of this process."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]

    def echo():
        for _ in range(LATENCY_RUNS):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(1))

    echo_thread = threading.Thread(target=echo, daemon=True)
    echo_thread.start()
    times = []
    try:
        for _ in range(LATENCY_RUNS):
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.sendall(b"x")
                if conn.recv(1) != b"x":
                    raise BenchError("the echo server did not echo")
                times.append(time.perf_counter() - started)
    finally:
        echo_thread.join(timeout=10)
        listener.close()
    return statistics.median(times)


# ---------------------------------------------------------------- report


def transfer_row(name, direction, size, runs, reference_median):
    seconds = [s for s, _ in runs]
    median = statistics.median(seconds)
    return [
        METHODS[name].label,
        direction,
        human_size(size),
        f"{median:.4f}",
        f"{min(seconds):.4f}-{max(seconds):.4f}",
        format_rate(size / median / 1e6),
        f"{reference_median / median:.2f}",
        f"{statistics.median(cpu for _, cpu in runs):.3f}",
    ]


def format_rate(mb_per_s):
    """One decimal, but three significant digits for the slow small files."""
    return f"{mb_per_s:.1f}" if mb_per_s >= 10 else f"{mb_per_s:#.3g}"


def peer_summary(medians):
    """ferry against socat, rsync, scp and sftp: each peer's median over ferry's,
    so above 1 ferry is the faster; then whether TLS beat scp and sftp in
    every row. Empty when no ferry row or no peer was measured."""
    sizes = sorted({size for _, _, size in medians}, reverse=True)
    peers = [peer for peer in FERRY_PEERS if any(name == peer for name, _, _ in medians)]
    rows = []
    slower = []  # TLS rows not faster than scp or sftp
    tls_compared = 0
    for size in sizes:
        for direction in ("put", "get"):
            for name in FERRY_METHODS:
                ferry_s = medians.get((name, direction, size))
                if ferry_s is None:
                    continue
                row = [METHODS[name].label, direction, human_size(size), f"{ferry_s:.4f}"]
                for peer in peers:
                    peer_s = medians.get((peer, "send" if peer == REFERENCE else direction,
                                          size))
                    row.append("" if peer_s is None else f"{peer_s / ferry_s:.2f}")
                    if name == "ferry-tls" and peer in ("scp", "sftp") and peer_s is not None:
                        tls_compared += 1
                        if not ferry_s < peer_s:
                            slower.append(f"{direction} {human_size(size)} vs {peer}"
                                          f" ({peer_s / ferry_s:.2f})")
                rows.append(row)
    if not rows or not peers:
        return ""
    text = ("ferry against its peers: peer median / ferry median, so above 1 ferry is"
            " the faster.\n\n"
            + markdown_table(["ferry", "direction", "size", "median s"]
                             + [f"{METHODS[peer].label} / ferry" for peer in peers],
                             rows, right_aligned=tuple(range(3, 4 + len(peers)))))
    if tls_compared:
        verdict = ("met" if not slower
                   else "NOT met: " + ", ".join(slower))
        text += f"\n\nferry (TLS) faster than scp and sftp in every row: {verdict}"
    return text


def tls_over_plain(medians):
    """ferry (TLS) against ferry (plain), both --ferry-bin's, row by row:
    both medians and TLS MB/s / plain MB/s (plain median / TLS median), so
    below 1 TLS is the slower; at TLS_PLAIN_GOAL_SIZE, issue 15's goal.
    Empty unless both modes were measured."""
    sizes = sorted({size for _, _, size in medians}, reverse=True)
    rows = []
    for size in sizes:
        for direction in ("put", "get"):
            plain_s, tls_s = (medians.get((name, direction, size)) for name in FERRY_METHODS)
            if plain_s is None or tls_s is None:
                continue
            ratio = plain_s / tls_s
            rows.append([direction, human_size(size), f"{plain_s:.4f}", f"{tls_s:.4f}",
                         f"{ratio:.2f}",
                         goal_word(ratio >= TLS_PLAIN_RATIO_GOAL)
                         if size == TLS_PLAIN_GOAL_SIZE else ""])
    if not rows:
        return ""
    return ("ferry (TLS) against ferry (plain), both measured in this run: plain median /"
            " TLS median, which is TLS MB/s / plain MB/s, so below 1 TLS is the slower."
            f" Issue 15's goal, for {human_size(TLS_PLAIN_GOAL_SIZE)} only: TLS at least"
            f" {TLS_PLAIN_RATIO_GOAL:.2f} times plain's speed.\n\n"
            + markdown_table(["direction", "size", "plain median s", "TLS median s",
                              "TLS MB/s / plain MB/s",
                              f"goal: TLS >= {TLS_PLAIN_RATIO_GOAL:.2f} x plain"],
                             rows, right_aligned=(2, 3, 4)))


def baseline_comparison(medians):
    """--ferry-bin against --baseline-bin, row by row: both medians and their
    ratio, new over base, so above 1 the new binary is the slower. Empty
    when no baseline row was measured."""
    sizes = sorted({size for _, _, size in medians}, reverse=True)
    rows = []
    for size in sizes:
        for name, twin in BASELINE_METHODS.items():
            for direction in ("put", "get"):
                new_s = medians.get((name, direction, size))
                base_s = medians.get((twin, direction, size))
                if new_s is None or base_s is None:
                    continue
                mode = "TLS" if name == "ferry-tls" else "plain"
                rows.append([mode, direction, human_size(size), f"{base_s:.4f}",
                             f"{new_s:.4f}", f"{new_s / base_s:.2f}"])
    if not rows:
        return ""
    return ("ferry against the baseline (--baseline-bin), both measured in this run,"
            " rep by rep: new median / base median, so above 1 the new binary is the"
            " slower.\n\n"
            + markdown_table(["mode", "direction", "size", "base median s", "new median s",
                              "new / base"],
                             rows, right_aligned=(3, 4, 5)))


def tree_rows(trees, runs, unsupported):
    """Rows of the trees table: per tree, each method and direction."""
    rows = []
    for tree in trees:
        for name, label in TREE_METHODS:
            for direction in ("put", "get"):
                reason = unsupported.get((name, direction))
                if reason:
                    rows.append([label, direction, tree.label, reason] + [""] * 5)
                    continue
                results = runs[name, direction, tree.label]
                seconds = [s for s, _ in results]
                median = statistics.median(seconds)
                reference = statistics.median(
                    s for s, _ in runs[TREE_REFERENCE, direction, tree.label])
                rows.append([
                    label, direction, tree.label, f"{median:.3f}",
                    f"{min(seconds):.3f}-{max(seconds):.3f}",
                    f"{tree.files / median:.0f}",
                    format_rate(tree.files * tree.file_size / median / 1e6),
                    f"{reference / median:.2f}",
                    f"{statistics.median(cpu for _, cpu in results):.3f}",
                ])
    return rows


def tree_goals(trees, runs, unsupported):
    """Issue 13's goal against rsync, met, NOT met or why it was not
    measured: ferry (TLS) moves the small-file tree at least as fast as
    rsync -r both ways. Its other goal is tree_file_comparison's."""
    small = trees[0]
    lines = []
    for direction in ("put", "get"):
        goal = (f"ferry (TLS) {direction} -r of {small.label} at least as many files/s as"
                f" rsync -r")
        reason = unsupported.get(("ferry-tls", direction))
        if reason:
            lines.append(f"{goal}: not measured, {reason}")
            continue
        ferry_s, rsync_s = (statistics.median(s for s, _ in runs[name, direction, small.label])
                            for name in ("ferry-tls", TREE_REFERENCE))
        lines.append(f"{goal}: {goal_word(ferry_s <= rsync_s)} ({rsync_s / ferry_s:.2f})")
    return "\n".join(f"- {line}" for line in lines)


def tree_file_comparison(trees, runs, unsupported):
    """Issue 13's other goal, a table per tree with a single_file: for each
    ferry mode and direction the tree's median and its single file's, both
    measured in this run, and tree MB/s / file MB/s against
    TREE_FILE_RATIO_GOAL. Empty when no tree has a single file."""
    tables = []
    for tree in trees:
        if not tree.single_file:
            continue
        tree_bytes = tree.files * tree.file_size
        file_label = human_size(tree.single_file)
        rows = []
        for name in FERRY_METHODS:
            for direction in ("put", "get"):
                reason = unsupported.get((name, direction))
                if reason:
                    rows.append([METHODS[name].label, direction, reason] + [""] * 7)
                    continue
                tree_seconds, file_seconds = (
                    [s for s, _ in runs[key, direction, tree.label]]
                    for key in (name, TREE_FILE_TWINS[name]))
                tree_s, file_s = (statistics.median(seconds)
                                  for seconds in (tree_seconds, file_seconds))
                tree_rate, file_rate = tree_bytes / tree_s, tree.single_file / file_s
                ratio = tree_rate / file_rate
                rows.append([
                    METHODS[name].label, direction,
                    f"{tree_s:.3f}", f"{min(tree_seconds):.3f}-{max(tree_seconds):.3f}",
                    format_rate(tree_rate / 1e6),
                    f"{file_s:.3f}", f"{min(file_seconds):.3f}-{max(file_seconds):.3f}",
                    format_rate(file_rate / 1e6),
                    f"{ratio:.2f}", f"goal {goal_word(ratio >= TREE_FILE_RATIO_GOAL)}",
                ])
        tables.append(
            f"The {tree.label} tree against one {file_label} file: ferry's put and get"
            " of the file (no -r) through the trees' servers, each run right next to the"
            " same mode's put -r or get -r in the same direction, which of the two goes"
            " first alternating rep by rep; the file's copy checked by SHA-256 and"
            " removed. Ratio = tree MB/s / file MB/s; issue 13's goal is the tree within"
            f" 10% of the file, a ratio >= {TREE_FILE_RATIO_GOAL:.2f}.\n\n"
            + markdown_table(
                ["ferry", "direction", f"{tree.label} median s", "min-max s", "MB/s",
                 f"{file_label} file median s", "min-max s", "MB/s",
                 "tree MB/s / file MB/s", f"goal: ratio >= {TREE_FILE_RATIO_GOAL:.2f}"],
                rows, right_aligned=(2, 4, 5, 7, 8)))
    return "\n\n".join(tables)


def spread(values, unit=""):
    """One value if every repetition gave it, else each in turn."""
    if len(set(values)) == 1:
        return f"{values[0]}{unit}"
    return ", ".join(str(value) for value in values) + unit


def resume_table(runs, leftovers):
    """Issue 14's resume goals, per ferry mode and direction: the second
    run against a fresh transfer of the same bytes, and the partial read
    again to prove it."""
    rows = []
    for (name, direction), results in runs.items():
        resumed, fresh = ([getattr(run, field) for run in results]
                          for field in ("resumed_s", "fresh_s"))
        # Per repetition: each pair moved the same bytes even when the cut
        # left different offsets in different repetitions.
        ratio = statistics.median(run.resumed_s / run.fresh_s for run in results)
        reread = max(run.reread_mib for run in results)
        rows.append([
            METHODS[name].label, direction,
            spread([f"{run.offset / MIB:.0f}" for run in results], " MiB"),
            spread([f"{run.offset // RESUME_STEP}" for run in results]),
            spread([run.moved for run in results]),
            f"{statistics.median(resumed):.3f}", f"{min(resumed):.3f}-{max(resumed):.3f}",
            f"{statistics.median(fresh):.3f}", f"{min(fresh):.3f}-{max(fresh):.3f}",
            f"{ratio:.2f}", goal_word(ratio <= RESUME_RATIO_GOAL),
            f"{reread:.1f}", goal_word(reread == 0),
            f"{statistics.median(run.resumed_cpu for run in results):.3f}",
            f"{statistics.median(run.fresh_cpu for run in results):.3f}",
        ])
    text = (
        f"Resume: a {human_size(RESUME_SIZE)} put and get, the client sent SIGINT (Ctrl-C,"
        f" exit 130) once the receiver's partial (the server's for a put, the client's for"
        f" a get) passed {human_size(RESUME_CUT_AT)}, then the same command run again"
        " (resumed); against a fresh put or get of a file of exactly the bytes the resumed"
        " run moved (the size less the resumed-at offset), through the same server in the"
        " same repetition, which of the two goes first alternating rep by rep. Seconds from"
        " client start to exit, every copy checked by SHA-256 and removed. Resumed at: where"
        f" the second run went on from, in whole steps of {human_size(RESUME_STEP)} (the"
        " last one synced when the cut came), one value per repetition if they differ."
        " Ratio = median over the repetitions of resumed s / fresh s; issue 14's goal is"
        f" <= {RESUME_RATIO_GOAL}. Prefix read again: the most, over the repetitions, that"
        " the side holding the partial (the server for a put, the client for a get) read of"
        " it again to prove it, by its report line; the goal is 0. CPU s = median user+sys"
        " of client and server per run, resumed and fresh.\n\n"
        + markdown_table(
            ["ferry", "direction", "resumed at", "steps", "bytes moved, resumed run",
             "resumed median s", "min-max s", "fresh median s", "min-max s",
             "resumed / fresh", f"goal: <= {RESUME_RATIO_GOAL}",
             "prefix read again, MiB", "goal: 0", "resumed CPU s", "fresh CPU s"],
            rows, right_aligned=(2, 3, 4, 5, 7, 9, 11, 13, 14)))
    if leftovers:
        text += ("\n\nPartials left once their transfers had completed (removed): "
                 + ", ".join(leftovers))
    return text


def rate_table(runs):
    """Issue 16's rate goal, per ferry mode and direction: the MB/s of a
    limited transfer against the limit."""
    limit_mb = RATE_LIMIT_BYTES / 1e6
    rows = []
    for (name, direction), seconds in runs.items():
        median = statistics.median(seconds)
        achieved = RATE_SIZE / median / 1e6
        ratio = achieved / limit_mb
        rows.append([METHODS[name].label, direction, f"{median:.3f}",
                     f"{min(seconds):.3f}-{max(seconds):.3f}", f"{achieved:.2f}",
                     f"{ratio:.3f}", goal_word(abs(ratio - 1) <= RATE_TOLERANCE)])
    return (
        f"Rate: a {human_size(RATE_SIZE)} put and get with the client's --limit-rate"
        f" {RATE_LIMIT} ({RATE_LIMIT_BYTES:,} bytes a second), seconds from client start to"
        " exit (the connection and the checks of a put or get included), every copy"
        " checked by SHA-256. MB/s = 10^6 bytes a second, from the median; ratio = that /"
        f" {limit_mb:g} MB/s; issue 16's goal is within {RATE_TOLERANCE:.0%} of the limit,"
        " either way.\n\n"
        + markdown_table(
            ["ferry", "direction", "median s", "min-max s", "MB/s", f"ratio to {limit_mb:g} MB/s",
             f"goal: within {RATE_TOLERANCE:.0%}"],
            rows, right_aligned=(2, 4, 5)))


def markdown_table(header, rows, right_aligned=()):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if column in right_aligned else "---"
                            for column in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(args):
    cpu_model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    baseline = f" Baseline binary: {args.baseline_bin}." if args.baseline_bin else ""
    return (f"Machine: {os.cpu_count()} CPUs ({cpu_model}), Linux {platform.release()},"
            f" {now}. ferry binary: {args.ferry_bin}.{baseline} {args.reps} runs per transfer;"
            f" MB = 10^6 bytes; all traffic on 127.0.0.1.")


def goal_word(is_met):
    return "met" if is_met else "NOT met"


def report(args, sections):
    parts = [machine_line(args)]
    if "transfers" in sections:
        parts.append(
            "Transfers: seconds from client start to exit (for the pipes, to receiver"
            " exit too), source in the page cache, every copy checked by SHA-256."
            " Ratio = socat -b131072 median / this median: >1 is faster than the pipe."
            " CPU s = median user+sys of client, one-shot receiver and server per run."
            " ferry (plain): server and client with --plain (sendfile/splice);"
            " ferry (TLS): TLS 1.3, the client pinned to the server's fingerprint.\n\n"
            + markdown_table(
                ["method", "direction", "size", "median s", "min-max s", "MB/s",
                 "ratio to socat -b131072", "CPU s"],
                sections["transfers"], right_aligned=(3, 5, 6, 7)))
        for comparison in (tls_over_plain(sections["transfer-medians"]),
                           baseline_comparison(sections["transfer-medians"])):
            if comparison:
                parts.append(comparison)
        summary = peer_summary(sections["transfer-medians"])
        if summary:
            parts.append(summary)
    if "latency" in sections:
        ferry_s, tls_s, true_s, rtt_s = sections["latency"]
        ratio = ferry_s / (true_s + rtt_s)
        parts.append(markdown_table(
            [f"no-data request, median of {LATENCY_RUNS}", "ms"],
            [["`ferry client --plain -q list`", f"{ferry_s * 1e3:.3f}"],
             ["`ferry client -q --fingerprint … list` (TLS, handshake included)",
              f"{tls_s * 1e3:.3f}"],
             ["spawn `/bin/true`", f"{true_s * 1e3:.3f}"],
             ["TCP round trip (connect, 1 byte echoed)", f"{rtt_s * 1e3:.3f}"],
             [f"ratio ferry / (true + round trip), goal <= {LATENCY_RATIO_GOAL}:"
              f" {goal_word(ratio <= LATENCY_RATIO_GOAL)}", f"{ratio:.2f}"]],
            right_aligned=(1,)))
    if "concurrent" in sections:
        parts.append(markdown_table(
            [f"{args.concurrent} ferry clients (plain) at once,"
             f" {human_size(CONCURRENT_FILE_SIZE)} each",
             "wall s", "aggregate MB/s", "failures"],
            [[direction, f"{elapsed:.3f}", f"{rate:.1f}", failures]
             for direction, elapsed, rate, failures in sections["concurrent"]],
            right_aligned=(1, 2, 3)))
    if "trees" in sections:
        trees, runs, unsupported = sections["trees"]
        parts.append(
            "Trees: put -r and get -r of a whole directory tree to a new name, seconds"
            " from client start to exit (for tar + socat, to receiver exit too), every copy"
            " checked file by file (names, kinds, SHA-256) and removed before the next run."
            " tar + socat: `tar c | socat` on the sending side, `socat | tar x` on the"
            " receiving one (listening). Ratio = rsync -r median / this median: >1 is"
            " faster than rsync."
            " CPU s = median user+sys of client, receiver and server per run. Trees: "
            + ", ".join(f"{tree.label} ({tree.files} files of {human_size(tree.file_size)}"
                        f" in {tree.subdirectories} subdirectories)" for tree in trees)
            + ".\n\n"
            + markdown_table(
                ["method", "direction", "tree", "median s", "min-max s", "files/s", "MB/s",
                 "ratio to rsync -r", "CPU s"],
                tree_rows(trees, runs, unsupported), right_aligned=(3, 5, 6, 7, 8))
            + "\n\n"
            + tree_goals(trees, runs, unsupported))
        comparison = tree_file_comparison(trees, runs, unsupported)
        if comparison:
            parts.append(comparison)
    if "resume" in sections:
        parts.append(resume_table(*sections["resume"]))
    if "rate" in sections:
        parts.append(rate_table(sections["rate"]))
    if "s3" in sections:
        parts.append(s3_table(*sections["s3"]))
    memory_rows = []
    for mode, kib in sections.get("idle-memory", {}).items():
        rss_fresh, rss_idle, hwm_idle = (value / 1024 for value in kib)
        memory_rows += [
            [f"ferry server ({mode}) VmRSS, fresh", f"{rss_fresh:.1f}"],
            [f"ferry server ({mode}) VmRSS, {IDLE_CONNECTIONS} idle connections"
             f" (goal < {IDLE_RSS_GOAL_MIB}: {goal_word(rss_idle < IDLE_RSS_GOAL_MIB)})",
             f"{rss_idle:.1f}"],
            [f"ferry server ({mode}) VmHWM, {IDLE_CONNECTIONS} idle connections",
             f"{hwm_idle:.1f}"],
        ]
    memory_rows += sections.get("transfer-memory", [])
    if memory_rows:
        parts.append(markdown_table(["memory", "MiB"], memory_rows, right_aligned=(1,)))
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- main


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ferry-bin", required=True, help="the ferry binary to benchmark")
    parser.add_argument("--reps", type=int,
                        help="runs per transfer case (default 5, 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="3 runs per transfer, no 1 GiB file (transfer-memory uses 100 MiB),"
                        " and trees of 2,000 and 20 files rather than 10,000 and 100, the"
                        " latter beside a 200 MiB file rather than 1 GiB")
    parser.add_argument("--only", type=lambda text: [name for name in text.split(",") if name],
                        help="comma-separated cases from: " + ", ".join(ALL_CASES)
                        + "; ferry means ferry-plain,ferry-tls")
    parser.add_argument("--dufs", action="store_true", help="include dufs rows")
    parser.add_argument("--dufs-bin", help="the dufs binary (default: dufs on PATH); implies --dufs")
    parser.add_argument("--s3", action="store_true",
                        help="also run the s3 case (ferry on an S3 store against rclone)")
    parser.add_argument("--concurrent", type=int, default=200,
                        help="clients at once in the concurrent case (default 200)")
    parser.add_argument("--baseline-bin", metavar="PATH",
                        help="a second ferry binary, such as an earlier build, whose"
                        " ferry rows run alongside --ferry-bin's, rep by rep, and are"
                        " compared with them; bench.sh also takes it from FERRY_BASELINE_BIN")
    args = parser.parse_args()
    if args.s3:
        args.only = (args.only or ALL_CASES) + ["s3"]
    if args.only:
        unknown = set(args.only) - set(ALL_CASES) - set(OPT_IN_CASES) - set(CASE_GROUPS)
        if unknown:
            parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    if args.dufs and not args.dufs_bin:
        args.dufs_bin = shutil.which("dufs")
        if not args.dufs_bin:
            parser.error("--dufs: no dufs on PATH; run through bench.sh or pass --dufs-bin")
    if args.reps is None:
        args.reps = 3 if args.quick else 5
    if args.reps < 1 or args.concurrent < 1:
        parser.error("--reps and --concurrent must be at least 1")
    if args.baseline_bin:
        if not os.access(args.baseline_bin, os.X_OK) or os.path.isdir(args.baseline_bin):
            parser.error(f"--baseline-bin: no executable at {args.baseline_bin}")
        if not chosen_cases(args) & set(FERRY_METHODS):
            parser.error("--baseline-bin: no ferry transfer case chosen to compare")
    return args


def chosen_cases(args):
    """The cases --only names, groups expanded; every case without it."""
    chosen = set()
    for name in args.only or ALL_CASES:
        chosen.update(CASE_GROUPS.get(name, (name,)))
    return chosen


def raise_open_file_limit(needed):
    """Enough descriptors for the idle connections and the concurrent
    clients; the ferry servers inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"need {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def run(args, bench, chosen):
    """Runs the chosen cases; returns the report's sections."""
    sizes = [(label, size) for label, size in SIZES if not (args.quick and size == GIB)]
    big_label = sizes[-1][0]
    needed = set()
    if bench.methods:
        needed |= {label for label, _ in sizes}
    if "transfer-memory" in chosen:
        needed |= {"1MiB", big_label}
    bench.make_sources([(label, size) for label, size in sizes if label in needed])

    sections = {}
    if bench.methods:
        log("transfers")
        sections["transfers"], sections["transfer-medians"] = bench.transfers(sizes)
    if "transfer-memory" in chosen:
        log("transfer memory")
        sections["transfer-memory"] = bench.transfer_memory(big_label)
    if "latency" in chosen:
        log("latency")
        sections["latency"] = bench.latency()
    if "concurrent" in chosen:
        log(f"{args.concurrent} concurrent clients")
        sections["concurrent"] = bench.concurrent(args.concurrent)
    if "idle-memory" in chosen:
        log(f"{IDLE_CONNECTIONS} idle connections")
        sections["idle-memory"] = bench.idle_memory()
    if "trees" in chosen:
        trees = QUICK_TREES if args.quick else TREES
        log("trees")
        runs, unsupported = bench.trees(trees)
        sections["trees"] = (trees, runs, unsupported)
    if "resume" in chosen:
        log("resume")
        sections["resume"] = bench.resume()
    if "rate" in chosen:
        log("rate")
        sections["rate"] = bench.rate()
    if "s3" in chosen:
        log("s3")
        sections["s3"] = bench.s3()
    return sections


def main():
    args = parse_args()
    chosen = chosen_cases(args)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    for directory in (WORK_DIR, LOG_DIR):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)

    procs = Processes()
    ferry_config = FerryConfig("ferry-bench-config-")
    # The baseline's identity and known hosts stay apart from --ferry-bin's.
    baseline_config = FerryConfig("ferry-bench-base-config-") if args.baseline_bin else None
    try:
        raise_open_file_limit(2 * IDLE_CONNECTIONS + 4 * args.concurrent + 256)
        sections = run(args, Bench(args, procs, ferry_config.env,
                                   baseline_config and baseline_config.env), chosen)
    except BenchError as error:
        log(f"bench.py: stopped: {error}")
        return 1
    except (KeyboardInterrupt, Interrupted):
        log("bench.py: interrupted")
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(WORK_DIR, ignore_errors=True)
        ferry_config.remove()
        if baseline_config:
            baseline_config.remove()

    text = report(args, sections)
    RESULTS_FILE.write_text(text)
    print(text, end="")
    log(f"saved to {RESULTS_FILE}")
    failures = sum(row[3] for row in sections.get("concurrent", []))
    if failures:
        log(f"bench.py: {failures} concurrent clients failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
