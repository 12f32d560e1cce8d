#!/usr/bin/env python3
"""Soak ferry: many clients, random requests, random kills, one server.

    scripts/soak.sh [--workers N] [--seconds S] [--seed SEED] [--max-size SIZE] [--tls]

Not a timed test: it looks for what only shows after thousands of requests
racing each other. One `ferry server 0` serves a fresh directory on
127.0.0.1, over plain TCP (--plain on both ends, as in earlier runs) or,
with --tls, over TLS 1.3 with every client pinned to the server's
fingerprint. Every ferry process runs with XDG_CONFIG_HOME set to a
temporary directory made for the run and removed at its end, and without
FERRY_TOKEN, so the invoking user's ~/.config/ferry is never touched.
Each of --workers threads runs one `ferry client` process at a time, a
random put, get, list or delete, for --seconds. A killer thread
SIGKILLs a random client in flight every --kill-every seconds on average.
A killed put or get is run again, the same command, as its user would,
until it is not killed: it resumes what the killed one left (issue 14).
Only a file of more than a step (64 MiB) can resume from more than its
start: --max-size 192M exercises that, and with the default every run
again starts from its first byte.
A killed list or delete is not; its worker starts its next request. The
killer is a thread, not a second program, because it then kills by a
process id that cannot have been reused: a worker reaps its client only
under the same lock the killer holds to kill it.

Every file's content follows from its name: a name ends in
`<seed>-<size>.bin`, and the content is `size` bytes of Python's
random.Random(seed).randbytes, drawn 1 MiB at a time. So any file found
anywhere, after any race, can be checked. Names are of two kinds:

  wNN/...     a worker's own names, touched by that worker only, so every
              answer about them is predictable
  pool/...    a shared pool every worker puts, gets and deletes at random,
              so requests race: a put of a taken name must be refused
              (exit 1, already-exists), and one of a name another worker
              is uploading may be (exit 3, busy: the server's partial of
              it is in use); a get or delete of a missing one must say
              not-found

Book-keeping: an acknowledged put (exit 0) means the name exists with its
content unless a delete could have come after it; a killed put or delete
leaves the name uncertain until its put is run again. A get that
succeeded must have written the exact content; a refused one must leave
nothing in the download directory, neither the file nor a `.ferry-tmp-*`
temporary nor a `.NAME.ferry-partial` (a killed one leaves its partial,
which the get run again takes up and removes). A run again that is told
`busy` met the partial of the killed one still held by the server, which
has not seen it die yet, or another worker's upload of the name: it is
tried again after a moment.

At the end the workers stop, the server settles for --settle seconds, and
the checks run: every file under the served root has the content its name
implies, no name that must exist is missing, none that must be gone is
there, no temporary file is left under the root or the download
directories, no partial is left (none in the server's
`.ferry-tmp-partials`, none beside a download), no client failed in an
unexpected way, and the server's open
descriptors are back to their count at start (its memory is shown beside
its start value). The result is a Markdown report on stdout (also saved to
target/soak/results.md) and PASS or FAIL; the exit code is 1 on FAIL.
Progress goes to stderr; the server log and every finding stay in
target/soak/logs/.

Standard library only. Run it through scripts/soak.sh, which builds ferry
and passes --ferry-bin.
"""

import argparse
import collections
import datetime
import hashlib
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# The benchmark's helpers for sizes, tables, logs and /proc; no
# __pycache__ left in the clone for importing them.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402  (after the path is set)
    FERRY_EXIT_CODES, FINGERPRINT_PATTERN, KIB, MIB, GIB, START_PATTERN, FerryConfig,
    exits_within, ferry_trust, file_sha256, human_size, log, log_tail, markdown_table,
    read_start_line)

REPO_ROOT = Path(__file__).resolve().parent.parent
SOAK_DIR = REPO_ROOT / "target" / "soak"
# Served root, sources and download directories; removed at the end unless
# --keep, since killed gets may leave gigabytes there.
WORK_DIR = SOAK_DIR / "work"
# Kept after the run for post-mortems.
LOG_DIR = SOAK_DIR / "logs"
RESULTS_FILE = SOAK_DIR / "results.md"

TEMP_PREFIX = ".ferry-tmp-"
# Where the server keeps the partials of uploads cut off, for a resume;
# a download's partial is `.NAME.ferry-partial` beside it, with its record
# `.NAME.ferry-partial.rec` (issue 14).
PARTIALS_DIR = ".ferry-tmp-partials"
PARTIAL_SUFFIX = ".ferry-partial"
# A partial's record: a magic, then the length of the prefix it proves
# (PROTOCOL.md §5.14); the rest is not read here.
RECORD_MAGIC = b"ferryPR1"
# A killed put or get is run again until it is not killed; a run again
# told `busy` is tried again after a moment. Past these, the worker gives
# up, and says so.
RERUNS_LIMIT = 50
BUSY_LIMIT = 100
BUSY_WAIT_S = 0.1
# `, resumed at 12.0 MiB` in a client's report line.
RESUMED = re.compile(r", resumed at ([0-9.]+) MiB")
KINDS = ("put", "get", "list", "delete")
# Share of each request kind in a worker's random choice.
KIND_WEIGHTS = (35, 35, 10, 20)
# Share of requests about the shared pool rather than the worker's own names.
POOL_SHARE = 0.5
POOL_NAMES = 48
# A worker over this many own names deletes instead of putting, so the
# served root stays bounded.
OWN_NAMES_LIMIT = 24
# Size mix: empty files, small ones (log-uniform from 1 B to 1 MiB, so
# tiny ones are common) and big ones (uniform above 1 MiB to --max-size).
EMPTY_SHARE = 0.05
BIG_SHARE = 0.10
# Decorations that put spaces and non-ASCII characters into some names.
NAME_DECORATIONS = ("", "", "", "with space ", "ünïcødé-", "日本語 ")
NAME_PATTERN = re.compile(r"([0-9a-f]{16})-(\d+)\.bin$")
CONTENT_CHUNK = MIB
# A client still running after this is hung: it is killed and counted.
CLIENT_TIMEOUT_S = 300
START_TIMEOUT_S = 30
SAMPLES_KEPT = 8
# `failed <kind>:` in a client's or the server's report line.
FAILURE_KIND = re.compile(r" failed ([a-z0-9-]+):")
SERVER_REPORT = re.compile(r"^\S+ \S+ (put|get|list|delete|connection|cleanup)\b.*? "
                           r"(ok|failed ([a-z0-9-]+):)")


class SoakError(Exception):
    """A failure that stops the soak before its checks: no verdict."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived; unwinds like Ctrl-C so that cleanup runs."""


def parse_size(text):
    """`64M`, `512K`, `1G` (binary units) or bytes."""
    match = re.fullmatch(r"(\d+)\s*([KMG]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64M)")
    factor = {"": 1, "K": KIB, "M": MIB, "G": GIB}[match.group(2).upper()]
    return int(match.group(1)) * factor


# ---------------------------------------------------------------- content


def content_chunks(seed, size):
    """The content of every file named after seed and size."""
    rng = random.Random(seed)
    remaining = size
    while remaining:
        chunk = rng.randbytes(min(remaining, CONTENT_CHUNK))
        remaining -= len(chunk)
        yield chunk


class Digests:
    """The SHA-256 each (seed, size) implies, computed once."""

    def __init__(self):
        self._known = {}
        self._lock = threading.Lock()

    def write(self, path, seed, size):
        """Writes the content to path and remembers its digest."""
        digest = hashlib.sha256()
        with open(path, "wb") as out:
            for chunk in content_chunks(seed, size):
                digest.update(chunk)
                out.write(chunk)
        with self._lock:
            self._known[seed, size] = digest.hexdigest()

    def expected(self, seed, size):
        with self._lock:
            known = self._known.get((seed, size))
        if known is None:
            digest = hashlib.sha256()
            for chunk in content_chunks(seed, size):
                digest.update(chunk)
            known = digest.hexdigest()
            with self._lock:
                self._known[seed, size] = known
        return known


def parse_name(name):
    """(seed, size) from a remote name, or None if it is not one of ours."""
    match = NAME_PATTERN.search(name.rsplit("/", 1)[-1])
    if not match:
        return None
    return int(match.group(1), 16), int(match.group(2))


def make_name(rng, directory, size):
    seed = rng.getrandbits(64)
    return f"{directory}/{rng.choice(NAME_DECORATIONS)}{seed:016x}-{size}.bin"


def random_size(rng, max_size):
    draw = rng.random()
    if draw < EMPTY_SHARE:
        return 0
    if draw < EMPTY_SHARE + BIG_SHARE and max_size > MIB:
        return rng.randint(MIB + 1, max_size)
    return min(int(round((MIB ** rng.random()))), max_size)


def record_prefix(path):
    """The length of the prefix a partial's record proves; None if there is
    no record, or it is not one."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < 16 or not data.startswith(RECORD_MAGIC):
        return None
    return int.from_bytes(data[8:16], "big")


def record_name(path):
    """The name a partial's record says its partial is for, or None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # magic, len, file_size, ctime (8 + 4), source size and time, count,
    # values, name length, name, checksum (PROTOCOL.md §5.14).
    at = 8 + 8 + 8 + 12 + 8 + 8
    if len(data) < at + 1 + 2 + 32 or not data.startswith(RECORD_MAGIC):
        return None
    at += 1 + 32 * data[at]
    length = int.from_bytes(data[at:at + 2], "big")
    return data[at + 2:at + 2 + length].decode(errors="replace")


def check_file(path, name, digests):
    """None if the file at path has the content name implies, else why not."""
    parsed = parse_name(name)
    if parsed is None:
        return "a name the soak never uses"
    seed, size = parsed
    actual = path.stat().st_size
    if actual != size:
        return f"{actual} bytes, its name says {size}"
    if file_sha256(path) != digests.expected(seed, size):
        return f"{size} bytes, but its SHA-256 differs from the content its name implies"
    return None


# ---------------------------------------------------------------- client processes


@dataclass(eq=False)
class Flight:
    """One client process between its start and its reaping. The lock makes
    reaping and killing exclusive, so a kill never reaches a reused pid."""
    worker: int
    kind: str
    proc: subprocess.Popen
    lock: threading.Lock = field(default_factory=threading.Lock)
    reaped: bool = False


class Flights:
    """The client processes in flight, for the killer and for cleanup."""

    def __init__(self):
        self._live = set()
        self._lock = threading.Lock()

    def run(self, worker, kind, command, stdout_path, stderr_path, env):
        """Runs command to its end in environment env. Returns (exit code or
        -signal, stderr, process id)."""
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [str(part) for part in command], stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, env=env, start_new_session=True)
        flight = Flight(worker, kind, proc)
        with self._lock:
            self._live.add(flight)
        try:
            exited = exits_within(proc.pid, CLIENT_TIMEOUT_S)
            if not exited:
                self.kill(flight)
            with flight.lock:
                _, status = os.waitpid(proc.pid, 0)
                flight.reaped = True
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            with self._lock:
                self._live.discard(flight)
        stderr = Path(stderr_path).read_text(errors="replace").strip()
        if not exited:
            stderr = f"hung: killed after {CLIENT_TIMEOUT_S} s. {stderr}"
        return proc.returncode, stderr, proc.pid

    @staticmethod
    def kill(flight):
        """SIGKILLs the client unless it has been reaped. True if sent."""
        with flight.lock:
            if flight.reaped:
                return False
            os.kill(flight.proc.pid, signal.SIGKILL)
            return True

    def pick(self, rng):
        with self._lock:
            live = sorted(self._live, key=lambda f: f.proc.pid)
        return rng.choice(live) if live else None

    def kill_all(self):
        with self._lock:
            live = list(self._live)
        for flight in live:
            self.kill(flight)


@dataclass
class ClientRun:
    """One finished client request. start and end bound the moment the
    server acted on it."""
    command: list
    code: int  # exit code, or minus the signal that killed it
    stderr: str
    pid: int
    start: float
    end: float

    def sample(self):
        return (f"{' '.join(map(str, self.command[1:]))}\n"
                f"    exit {self.code}: {self.stderr or '(no output)'}")


# ---------------------------------------------------------------- book-keeping


@dataclass
class Mutation:
    """A put or delete of a pool name: its interval and what came of it.
    outcome: ok, refused (the expected race answer), or uncertain (killed,
    hung or failed otherwise: it may or may not have happened)."""
    kind: str
    start: float
    end: float
    outcome: str


class Ledger:
    """Everything the workers learn, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = collections.Counter()  # kind
        self.ok = collections.Counter()
        self.refused = collections.Counter()  # (kind, failure kind)
        self.killed = collections.Counter()
        self.unexpected = collections.Counter()  # (kind, exit code, failure kind)
        self.unexpected_samples = collections.defaultdict(list)
        self.bytes_ok = collections.Counter()
        self.pool = collections.defaultdict(list)  # name -> [Mutation]
        self.findings = collections.defaultdict(list)  # title -> [detail]
        self.killed_get_leftovers = 0
        # Killed puts and gets run again: runs, final ok, and those that
        # resumed from a partial (with the MiB they did not move again).
        self.reruns = collections.Counter()  # kind
        self.reruns_ok = collections.Counter()
        self.resumed = collections.Counter()
        self.resumed_mib = collections.Counter()
        self.busy_waits = 0
        # Partials a refused get run again kept: they prove a prefix, so
        # they wait for the file to come back (issue 14); removed here.
        self.kept_by_refused_gets = 0

    def finding(self, title, detail):
        with self.lock:
            self.findings[title].append(detail)

    def count(self, title):
        return len(self.findings.get(title, []))

    def unexpected_failure(self, kind, run, context):
        failure = FAILURE_KIND.search(run.stderr)
        key = (kind, run.code, failure.group(1) if failure else "-")
        with self.lock:
            self.unexpected[key] += 1
            self.unexpected_samples[key].append(
                run.sample() + (f"\n    {context}" if context else ""))


# ---------------------------------------------------------------- workers


class Worker:
    """One thread: a loop of random requests, one client process each."""

    def __init__(self, index, soak):
        self.index = index
        self.soak = soak
        self.rng = random.Random(f"{soak.args.seed}-worker-{index}")
        self.dir_name = f"w{index:02d}"
        self.scratch = WORK_DIR / "scratch" / self.dir_name
        self.downloads = WORK_DIR / "downloads" / self.dir_name
        for directory in (self.scratch, self.downloads):
            directory.mkdir(parents=True)
        # Own names this worker knows exist, and ones a killed or failed
        # request left in doubt. Only this worker touches them.
        self.acked = set()
        self.uncertain = set()
        self.ever_acked = False
        self.gets = 0
        # Download leftovers already reported as findings.
        self.reported = set()

    def run(self):
        try:
            self.loop()
        except Exception as error:  # a bug of the soak: the run has no verdict
            self.soak.crashes.append(f"worker {self.index}: {error!r}")
            self.soak.stop.set()

    def loop(self):
        stop = self.soak.stop
        while not stop.is_set():
            kind = self.rng.choices(KINDS, KIND_WEIGHTS)[0]
            own = self.acked | self.uncertain
            if len(own) > OWN_NAMES_LIMIT and kind == "put":
                kind = "delete"
            if kind == "list":
                self.list()
            elif self.rng.random() < POOL_SHARE:
                getattr(self, kind)(self.rng.choice(self.soak.pool_names), pool=True)
            elif kind == "put" or not own:
                self.put(make_name(self.rng, self.dir_name,
                                   random_size(self.rng, self.soak.args.max_size)), pool=False)
            else:
                getattr(self, kind)(self.rng.choice(sorted(own)), pool=False)

    def client(self, kind, *request):
        """Runs one client request to its end."""
        # A transfer's report line says whether it resumed, and where.
        quiet = [] if kind in ("put", "get") else ["-q"]
        command = [self.soak.ferry, "client", "127.0.0.1", self.soak.port, *quiet,
                   *ferry_trust(self.soak.fingerprint), kind, *request]
        with self.soak.ledger.lock:
            self.soak.ledger.started[kind] += 1
        start = time.monotonic()
        code, stderr, pid = self.soak.flights.run(
            self.index, kind, command, self.scratch / "stdout", self.scratch / "stderr",
            self.soak.ferry_config.env)
        return ClientRun(command, code, stderr, pid, start, time.monotonic())

    def tally(self, kind, run, expected_refusals, size=0, context=""):
        """Counts the outcome; returns ok, refused, killed or unexpected.
        context goes with an unexpected failure's sample."""
        ledger = self.soak.ledger
        code, stderr = run.code, run.stderr
        failure = FAILURE_KIND.search(stderr)
        if code == 0:
            with ledger.lock:
                ledger.ok[kind] += 1
                ledger.bytes_ok[kind] += size
            return "ok"
        if code == -signal.SIGKILL and not stderr.startswith("hung"):
            with ledger.lock:
                ledger.killed[kind] += 1
            return "killed"
        # busy turns the connection away: exit 3, not 1.
        refused_code = 3 if failure and failure.group(1) == "busy" else 1
        if code == refused_code and failure and failure.group(1) in expected_refusals:
            with ledger.lock:
                ledger.refused[kind, failure.group(1)] += 1
            return "refused"
        ledger.unexpected_failure(kind, run, context)
        return "unexpected"

    def record_pool(self, name, kind, run, result):
        outcome = result if result in ("ok", "refused") else "uncertain"
        with self.soak.ledger.lock:
            self.soak.ledger.pool[name].append(Mutation(kind, run.start, run.end, outcome))

    def again_until_done(self, kind, request, refusals, again_refusals, size):
        """Runs a put or get; one killed is run again, the same command, as
        its user would, until it is not killed: it resumes (issue 14). A
        run again told `busy` is tried again after a moment. Returns each
        run with its result, the last one final, busy ones left out."""
        ledger = self.soak.ledger
        runs = []
        busy_waits = 0
        while True:
            again = bool(runs)
            run = self.client(kind, *request)
            failure = FAILURE_KIND.search(run.stderr)
            if again and run.code == 3 and failure and failure.group(1) == "busy":
                if busy_waits < BUSY_LIMIT:
                    busy_waits += 1
                    with ledger.lock:
                        ledger.busy_waits += 1
                        ledger.started[kind] -= 1
                    time.sleep(BUSY_WAIT_S)
                    continue
            context = self.same_pid_leftovers(run.pid) if kind == "get" else ""
            result = self.tally(kind, run, again_refusals if again else refusals, size, context)
            runs.append((run, result))
            if again:
                with ledger.lock:
                    ledger.reruns[kind] += 1
                    if result == "ok":
                        ledger.reruns_ok[kind] += 1
                resumed = RESUMED.search(run.stderr)
                if result == "ok" and resumed:
                    with ledger.lock:
                        ledger.resumed[kind] += 1
                        ledger.resumed_mib[kind] += float(resumed.group(1))
            if result != "killed" or not self.may_run_again(kind, request):
                return runs
            if len(runs) > RERUNS_LIMIT:
                ledger.finding(f"killed {kind} run again {RERUNS_LIMIT} times, given up",
                               " ".join(map(str, request)))
                return runs

    def may_run_again(self, kind, request):
        """Whether a killed put or get is to be run again: a get killed
        after its file took its name is done."""
        if kind == "get":
            dest = Path(request[1])
            return not dest.exists()
        return True

    def put(self, name, pool):
        seed, size = parse_name(name)
        if pool:
            source = self.soak.pool_sources[name]
        else:
            source = self.scratch / "upload.bin"
            self.soak.digests.write(source, seed, size)
        # A fresh own name can only be refused by a bug, or, run again, if
        # the killed put landed before it died.
        refusals = ("already-exists", "busy") if pool else ()
        runs = self.again_until_done("put", [source, name], refusals,
                                     ("already-exists",), size)
        result = runs[-1][1]
        if pool:
            for run, each in runs:
                self.record_pool(name, "put", run, each)
            if result == "ok":
                self.soak.pool_put_acked = True
            elif len(runs) > 1 and result == "refused":
                # A proven partial of a name taken meanwhile waits for it.
                with self.soak.ledger.lock:
                    self.soak.taken_after_kill.add(name)
        elif result == "ok" or (result == "refused" and len(runs) > 1):
            self.acked.add(name)
            self.ever_acked = True
        elif result != "refused":
            self.uncertain.add(name)

    def delete(self, name, pool):
        # not-found is a race on pool names, and the answer to a put that
        # was killed before it landed on own names.
        refusals = ("not-found",) if pool or name in self.uncertain else ()
        run = self.client("delete", name)
        result = self.tally("delete", run, refusals)
        if pool:
            self.record_pool(name, "delete", run, result)
        elif result in ("ok", "refused"):
            self.acked.discard(name)
            self.uncertain.discard(name)
        else:
            self.acked.discard(name)
            self.uncertain.add(name)

    def get(self, name, pool):
        seed, size = parse_name(name)
        self.gets += 1
        dest = self.downloads / f"got-{self.gets}.bin"
        refusals = ("not-found",) if pool or name in self.uncertain else ()
        # Run again, a pool name may have gone meanwhile.
        again_refusals = ("not-found",) if pool else refusals
        runs = self.again_until_done("get", [name, dest], refusals, again_refusals, size)
        run, result = runs[-1]
        ledger = self.soak.ledger
        if result == "ok":
            if dest.exists():
                problem = check_file(dest, name, self.soak.digests)
                dest.unlink()
            else:
                problem = "no file was written"
            if problem:
                ledger.finding("acknowledged get did not write its name's content",
                               f"{name}: {problem}")
            if not pool and name in self.uncertain:
                self.uncertain.discard(name)
                self.acked.add(name)
        elif result == "refused" and not pool:
            self.uncertain.discard(name)
        elif result == "killed" and dest.exists() and not check_file(dest, name, self.soak.digests):
            # Killed after the rename: the download is complete, which is fine.
            dest.unlink()
        if result == "refused" and len(runs) > 1:
            self.drop_proven_partial(dest)
        leftovers = self.leftovers()
        if leftovers and result == "killed":
            with ledger.lock:
                ledger.killed_get_leftovers += 1
        for path, what in leftovers:
            ledger.finding(f"{result} get left {what} in the download directory",
                           f"{name} -> {path.name}, {path.stat().st_size} of {size} bytes"
                           + (f", after {len(runs) - 1} runs again" if len(runs) > 1 else ""))

    def drop_proven_partial(self, dest):
        """A get run again and refused (its file gone meanwhile) keeps a
        partial that proves a prefix, for the file's return; counted and
        removed here. One that proves nothing stays, for a finding."""
        data = dest.with_name(f".{dest.name}{PARTIAL_SUFFIX}")
        record = data.with_name(data.name + ".rec")
        if record_prefix(record) and data.exists():
            data.unlink()
            record.unlink()
            with self.soak.ledger.lock:
                self.soak.ledger.kept_by_refused_gets += 1

    def same_pid_leftovers(self, pid):
        """Says so if an earlier client left a temporary file named after
        the pid this one got: its own temporary name is then taken."""
        stale = sorted(path.name for path in self.reported
                       if path.name.startswith(f"{TEMP_PREFIX}{pid}-"))
        if not stale:
            return ""
        return (f"an earlier killed client with the same pid {pid} left"
                f" {', '.join(stale)} in {self.downloads.relative_to(WORK_DIR)}")

    def leftovers(self):
        """Files in the download directory not reported yet: after a get,
        anything there is left over. They stay for the final count."""
        found = []
        for path in sorted(self.downloads.iterdir()):
            if path not in self.reported:
                self.reported.add(path)
                if path.name.startswith(TEMP_PREFIX):
                    what = "a temporary file"
                elif PARTIAL_SUFFIX in path.name:
                    what = "a partial (.ferry-partial)"
                else:
                    what = "a file under another name"
                found.append((path, what))
        return found

    def list(self):
        target = self.rng.choice([self.dir_name, "pool", None])
        # A directory exists from its first put on; none is ever removed.
        if target == self.dir_name:
            may_be_missing = not self.ever_acked
        else:
            may_be_missing = target == "pool" and not self.soak.pool_put_acked
        refusals = ("not-found",) if may_be_missing else ()
        run = self.client("list", *([target] if target else []))
        if self.tally("list", run, refusals) != "ok":
            return
        entries = (self.scratch / "stdout").read_text(errors="replace").splitlines()
        ledger = self.soak.ledger
        for entry in entries:
            if entry.startswith(TEMP_PREFIX):
                ledger.finding("list showed a temporary file", f"{target or '(root)'}: {entry}")
        if target == self.dir_name:
            listed = {f"{self.dir_name}/{entry}" for entry in entries if not entry.endswith("/")}
            for name in sorted(self.acked - listed):
                ledger.finding("list of a worker's own directory lacks an acknowledged name", name)
            for name in sorted(listed - self.acked - self.uncertain):
                ledger.finding("list of a worker's own directory shows a deleted or unknown name",
                               name)


# ---------------------------------------------------------------- the killer


def killer(soak):
    """SIGKILLs a random client in flight at random intervals."""
    rng = random.Random(f"{soak.args.seed}-killer")
    while not soak.stop.wait(rng.expovariate(1 / soak.args.kill_every)):
        flight = soak.flights.pick(rng)
        if flight is not None and soak.flights.kill(flight):
            with soak.ledger.lock:
                soak.kills_sent[flight.kind] += 1


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log_path: Path
    fingerprint: str | None  # the identity of a TLS server


def start_server(ferry, root, log_path, tls, env):
    """Starts `ferry server 0`, with --plain unless tls, in environment env;
    reads its port, and with TLS its fingerprint, from the start line."""
    root.mkdir(parents=True)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [str(ferry), "server", "0", "--root", str(root), "--bind", "127.0.0.1",
             *([] if tls else ["--plain"])],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=env, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        start_line = read_start_line(log_path)
        match = start_line and START_PATTERN.search(start_line)
        if match:
            fingerprint = FINGERPRINT_PATTERN.search(start_line)
            if bool(fingerprint) != tls or not (tls or "plain TCP" in start_line):
                stop_server(proc)
                raise SoakError(f"the ferry server's start line does not say"
                                f" {'TLS' if tls else 'plain TCP'}: {start_line}")
            return Server(proc, int(match.group(1)), log_path,
                          fingerprint.group(1) if tls else None)
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise SoakError("ferry server did not start" + log_tail(log_path))
        time.sleep(0.002)


def stop_server(proc):
    """SIGTERM, then SIGKILL after 10 s; by pid, never after reaping.
    Returns the exit code."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
    return proc.returncode


def descriptors(pid):
    """The server's open descriptors: fd number -> what it points at."""
    fds = {}
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            fds[int(entry.name)] = os.readlink(entry.path)
        except FileNotFoundError:
            pass  # closed while we looked
    return fds


def memory_status(pid):
    """VmRSS, its peak VmHWM, RssAnon and RssFile in KiB, and the thread
    count: whether growth is heap, code paged in, or thread stacks."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            values[key] = int(rest.split()[0])
    return values


class Monitor:
    """Samples the server's memory and descriptors once a second, and keeps
    one sample every 30 s to show whether memory keeps growing."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_fds = 0
        self.history = []  # (seconds into the run, memory_status, descriptors)

    def sample(self):
        rss = memory_status(self.pid)["VmRSS"]
        fds = len(descriptors(self.pid))
        self.peak_fds = max(self.peak_fds, fds)
        return rss, fds


# ---------------------------------------------------------------- the soak


class Soak:
    def __init__(self, args, ferry_config):
        self.args = args
        self.ferry = Path(args.ferry_bin).resolve()
        self.ferry_config = ferry_config
        self.fingerprint = None  # the server's, with --tls
        self.stop = threading.Event()
        self.flights = Flights()
        self.ledger = Ledger()
        self.digests = Digests()
        self.kills_sent = collections.Counter()
        self.crashes = []
        self.pool_put_acked = False
        # Pool names whose put, killed, then run again, was refused: the
        # name was taken meanwhile. Only these may keep a server partial
        # that proves a prefix, waiting for the name.
        self.taken_after_kill = set()
        self.root = WORK_DIR / "root"
        self.port = None
        rng = random.Random(f"{args.seed}-pool")
        # Some pool names sit one directory down, so puts race on creating it.
        self.pool_names = [
            make_name(rng, rng.choice(["pool", "pool/sub dir"]), random_size(rng, args.max_size))
            for _ in range(POOL_NAMES)]
        self.pool_sources = {}

    def make_pool_sources(self):
        sources = WORK_DIR / "pool-sources"
        sources.mkdir(parents=True)
        total = 0
        for index, name in enumerate(self.pool_names):
            seed, size = parse_name(name)
            path = sources / f"{index:02d}.bin"
            self.digests.write(path, seed, size)
            self.pool_sources[name] = path
            total += size
        log(f"soak: {len(self.pool_names)} pool names, {human_size(total)} of sources")

    def run(self, server):
        """Runs the workers and the killer for --seconds; returns the
        elapsed time."""
        args = self.args
        self.port = server.port
        self.fingerprint = server.fingerprint
        workers = [Worker(index, self) for index in range(args.workers)]
        threads = [threading.Thread(target=w.run, name=f"worker-{w.index}", daemon=True)
                   for w in workers]
        threads.append(threading.Thread(target=killer, args=(self,), name="killer", daemon=True))
        monitor = Monitor(server.proc.pid)
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            next_report = started + 30
            while (now := time.monotonic()) < started + args.seconds:
                time.sleep(min(1.0, started + args.seconds - now))
                if self.crashes:
                    raise SoakError("; ".join(self.crashes))
                if server.proc.poll() is not None:
                    raise SoakError(f"the server exited with {server.proc.returncode}"
                                    + log_tail(server.log_path))
                rss, fds = monitor.sample()
                if time.monotonic() >= next_report:
                    next_report += 30
                    monitor.history.append(
                        (time.monotonic() - started, memory_status(server.proc.pid), fds))
                    with self.ledger.lock:
                        done = sum(self.ledger.ok.values())
                        kills = sum(self.ledger.killed.values())
                    log(f"soak: {time.monotonic() - started:.0f} s, {done} requests ok,"
                        f" {kills} clients killed; server {rss / 1024:.1f} MiB, {fds} fds")
        except BaseException:
            self.stop.set()
            self.flights.kill_all()
            raise
        # Requests in flight run to their end; a big one may take a while.
        self.stop.set()
        for thread in threads:
            thread.join(timeout=CLIENT_TIMEOUT_S)
        elapsed = time.monotonic() - started
        if any(thread.is_alive() for thread in threads):
            raise SoakError("a worker did not stop")
        if self.crashes:
            raise SoakError("; ".join(self.crashes))
        return elapsed, monitor, workers

    def check_pool(self, present):
        """Whether each pool name is where its acknowledged requests put it.

        A name must exist if an acknowledged put of it started after every
        delete that may have happened had ended. It must be gone if no put
        may have happened, or if an acknowledged delete started after every
        put that may have happened had ended. Otherwise either is fine."""
        for name in self.pool_names:
            history = self.ledger.pool.get(name, [])
            maybe = [m for m in history if m.outcome != "refused"]
            puts = [m for m in maybe if m.kind == "put"]
            deletes = [m for m in maybe if m.kind == "delete"]
            must_exist = any(
                p.outcome == "ok" and all(d.end < p.start for d in deletes) for p in puts)
            must_be_gone = not puts or any(
                d.outcome == "ok" and all(p.end < d.start for p in puts) for d in deletes)
            if must_exist and name not in present:
                self.ledger.finding("acknowledged name missing at the end", name)
            if must_be_gone and name in present:
                self.ledger.finding("deleted name present at the end", name)

    def check_root(self, workers):
        """Walks the served root; returns (files, files verified)."""
        present = set()
        verified = 0
        for directory, subdirs, files in os.walk(self.root):
            if Path(directory) == self.root and PARTIALS_DIR in subdirs:
                subdirs.remove(PARTIALS_DIR)  # checked by check_partials
            for file_name in files:
                path = Path(directory) / file_name
                name = path.relative_to(self.root).as_posix()
                if file_name.startswith(TEMP_PREFIX):
                    self.ledger.finding("temporary file left in the served root",
                                        f"{name} ({path.stat().st_size} bytes)")
                    continue
                present.add(name)
                problem = check_file(path, name, self.digests)
                if problem:
                    self.ledger.finding("file in the served root differs from its name's content",
                                        f"{name}: {problem}")
                else:
                    verified += 1
        self.check_pool(present)
        for worker in workers:
            for name in sorted(worker.acked - present):
                self.ledger.finding("acknowledged name missing at the end", name)
            mine = {name for name in present if name.startswith(worker.dir_name + "/")}
            for name in sorted(mine - worker.acked - worker.uncertain):
                self.ledger.finding("deleted name present at the end", name)
        return len(present), verified

    def check_downloads(self, workers):
        """Counts the temporary files and partials left in the download
        directories; a file no get reported is a finding of its own."""
        temps = partials = 0
        for worker in workers:
            for path in sorted(worker.downloads.iterdir()):
                temps += path.name.startswith(TEMP_PREFIX)
                partials += PARTIAL_SUFFIX in path.name
                if path not in worker.reported:
                    self.ledger.finding("download directory holds an unreported file",
                                        str(path.relative_to(WORK_DIR)))
        return temps, partials

    def check_partials(self):
        """The server's partials once every command completed: none, but
        for one that proves a prefix of a pool name taken meanwhile, which
        waits for it (until --partial-ttl). Returns (left, of them kept so)."""
        directory = self.root / PARTIALS_DIR
        if not directory.is_dir():
            return 0, 0
        left = kept = 0
        for path in sorted(directory.iterdir()):
            left += 1
            if path.name.endswith(".rec"):
                data = path.with_name(path.name[:-len(".rec")])
                if (record_prefix(path) and record_name(path) in self.taken_after_kill
                        and data.exists()):
                    kept += 2
                    continue
                self.ledger.finding(
                    "partial left in the server's partials directory",
                    f"{path.name}: for {record_name(path)!r}, proving"
                    f" {record_prefix(path)} bytes, data"
                    f" {data.stat().st_size if data.exists() else 'missing'}")
            elif not path.with_name(path.name + ".rec").exists():
                self.ledger.finding("partial left in the server's partials directory",
                                    f"{path.name}: {path.stat().st_size} bytes, no record")
        return left, kept


def server_log_summary(log_path):
    """Request outcomes by kind, and lines that are not request reports."""
    outcomes = collections.Counter()
    other = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("ferry server up and running on "):
            continue  # the start line
        match = SERVER_REPORT.match(line)
        if match:
            outcomes[match.group(1), match.group(3) or "ok"] += 1
        else:
            other.append(line)
    return outcomes, other


# ---------------------------------------------------------------- report


def mib(kib):
    return f"{kib / 1024:.1f}"


def report(args, soak, facts):
    ledger = soak.ledger
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    transport = ("TLS 1.3, clients pinned to the server's fingerprint" if args.tls
                 else "plain TCP (--plain)")
    cpu_model = next((line.split(":", 1)[1].strip()
                      for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "unknown CPU")
    header = (
        f"Soak over {transport}:"
        f" {args.workers} workers for {facts['elapsed']:.0f} s, seed {args.seed},"
        f" sizes 0 B-{human_size(args.max_size)} ({EMPTY_SHARE:.0%} empty,"
        f" {BIG_SHARE:.0%} over 1 MiB), a client SIGKILLed every {args.kill_every} s on"
        f" average, {POOL_NAMES} shared names. Machine: {os.cpu_count()} CPUs ({cpu_model}),"
        f" Linux {platform.release()}, {now}. ferry binary: {args.ferry_bin}.")
    rows = []
    for kind in KINDS:
        refused = sum(n for (k, _), n in ledger.refused.items() if k == kind)
        unexpected = sum(n for (k, _, _), n in ledger.unexpected.items() if k == kind)
        rows.append([kind, ledger.started[kind], ledger.ok[kind], refused,
                     ledger.killed[kind], unexpected,
                     f"{ledger.bytes_ok[kind] / MIB:.1f}" if kind in ("put", "get") else ""])
    total_bytes = sum(ledger.bytes_ok.values())
    rows.append(["all", sum(ledger.started.values()), sum(ledger.ok.values()),
                 sum(ledger.refused.values()), sum(ledger.killed.values()),
                 sum(ledger.unexpected.values()), f"{total_bytes / MIB:.1f}"])
    requests = markdown_table(
        ["request", "started", "ok", "refused as expected", "killed", "unexpected failures",
         "MiB ok"], rows, right_aligned=(1, 2, 3, 4, 5, 6))
    refusals = ", ".join(f"{kind} {failure} {n}"
                         for (kind, failure), n in sorted(ledger.refused.items())) or "none"
    rate = sum(ledger.started.values()) / facts["elapsed"]
    fds_idle, fds_end = facts["fds_idle"], facts["fds_end"]
    checks = markdown_table(["check", "result"], [
        ["requests per second; MB/s acknowledged",
         f"{rate:.1f}; {total_bytes / facts['elapsed'] / 1e6:.1f}"],
        ["refusals as expected (races, own directory not made yet)", refusals],
        ["files in the served root at the end, content verified",
         f"{facts['verified']} of {facts['files']}"],
        ["acknowledged names missing / deleted names present",
         f"{ledger.count('acknowledged name missing at the end')} /"
         f" {ledger.count('deleted name present at the end')}"],
        ["`.ferry-tmp-*` left in the served root",
         ledger.count("temporary file left in the served root")],
        ["`.ferry-tmp-*` left in download directories",
         f"{facts['download_temps']}, by {ledger.killed_get_leftovers} of"
         f" {ledger.killed['get']} killed gets"],
        ["killed puts, gets run again: runs, ok, resumed from a partial"
         " (MiB not moved again)",
         "; ".join(f"{kind} {ledger.reruns[kind]}, {ledger.reruns_ok[kind]},"
                   f" {ledger.resumed[kind]} ({ledger.resumed_mib[kind]:.0f})"
                   for kind in ("put", "get"))
         + f"; waits for a `busy` partial: {ledger.busy_waits}"],
        ["partials left: server (kept for a name taken meanwhile), download directories"
         " (kept by a refused get, removed)",
         f"{facts['server_partials']} ({facts['server_partials_kept']}),"
         f" {facts['download_partials']} ({ledger.kept_by_refused_gets})"],
        ["server VmRSS MiB: at start, after settle (peak during run)",
         f"{mib(facts['rss_idle'])}, {mib(facts['rss_end'])}"
         f" ({mib(facts['status_end']['VmHWM'])})"],
        ["server open descriptors: at start, after settle (peak during run)",
         f"{fds_idle}, {fds_end} ({facts['monitor'].peak_fds})"],
        ["server threads: at start, after settle",
         f"{facts['status_idle']['Threads']}, {facts['status_end']['Threads']}"],
        ["verdict", facts["verdict"]],
    ], right_aligned=())
    return f"{header}\n\n{requests}\n\n{checks}\n"


def details(soak, facts, samples=SAMPLES_KEPT):
    """Everything behind the verdict, with up to samples examples of each
    kind of failure and finding."""
    ledger = soak.ledger
    lines = [f"kills sent by the killer: {dict(soak.kills_sent)}; landed"
             f" (client died of SIGKILL): {dict(ledger.killed)}"]
    lines.append("server memory in MiB (VmRSS = RssAnon + RssFile + RssShmem),"
                 " threads and descriptors:")
    memory_rows = [("start", facts["status_idle"], facts["fds_idle"])]
    memory_rows += [(f"{seconds:.0f} s", status, fds)
                for seconds, status, fds in facts["monitor"].history]
    memory_rows.append(("after settle", facts["status_end"], facts["fds_end"]))
    for when, status, fds in memory_rows:
        lines.append(f"    {when:>12}: VmRSS {mib(status['VmRSS'])}, RssAnon"
                     f" {mib(status['RssAnon'])}, RssFile {mib(status['RssFile'])},"
                     f" {status['Threads']} threads, {fds} fds")
    outcomes, other = facts["server_log"]
    lines.append("server log, requests by outcome: " + ", ".join(
        f"{kind} {outcome} {n}" for (kind, outcome), n in sorted(outcomes.items())))
    if other:
        lines.append(f"server log lines that are not request reports ({len(other)}):")
        lines += ["    " + line for line in other[:samples]]
    if facts["fds_idle_map"] != facts["fds_end_map"]:
        lines.append("server descriptors at start vs after settle:")
        for fd in sorted(set(facts["fds_idle_map"]) | set(facts["fds_end_map"])):
            before = facts["fds_idle_map"].get(fd, "-")
            after = facts["fds_end_map"].get(fd, "-")
            if before != after:
                lines.append(f"    fd {fd}: {before} -> {after}")
    for (kind, code, failure), n in sorted(ledger.unexpected.items()):
        meaning = FERRY_EXIT_CODES.get(code, "killed by a signal" if code < 0 else "?")
        lines.append(f"unexpected: {kind} exit {code} ({meaning}) {failure}: {n}, e.g.")
        lines += ["    " + sample
                  for sample in ledger.unexpected_samples[kind, code, failure][:samples]]
    for title, items in ledger.findings.items():
        lines.append(f"finding: {title}: {len(items)}, e.g.")
        lines += ["    " + item for item in items[:samples]]
    return "\n".join(lines)


def verdict(soak, facts):
    """PASS, or FAIL with every reason."""
    reasons = []
    ledger = soak.ledger
    if ledger.unexpected:
        reasons.append(f"{sum(ledger.unexpected.values())} unexpected client failures")
    for title, items in ledger.findings.items():
        reasons.append(f"{len(items)} × {title}")
    if facts["fds_end"] != facts["fds_idle"]:
        reasons.append(f"server descriptors {facts['fds_idle']} at start,"
                       f" {facts['fds_end']} after settle")
    if facts["server_exit"] != 0:
        reasons.append(f"server exited with {facts['server_exit']} on SIGTERM")
    return "FAIL: " + "; ".join(reasons) if reasons else "PASS"


# ---------------------------------------------------------------- main


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ferry-bin", required=True, help="the ferry binary to soak")
    parser.add_argument("--workers", type=int, default=16,
                        help="clients running at once (default 16)")
    parser.add_argument("--seconds", type=float, default=300,
                        help="how long the workers run (default 300)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of every random choice but timing (default 1)")
    parser.add_argument("--max-size", type=parse_size, default=64 * MIB,
                        help="largest file, e.g. 64M (default 64M)")
    parser.add_argument("--kill-every", type=float, default=0.5,
                        help="mean seconds between kills (default 0.5)")
    # Over the 10 s that tokio keeps an idle blocking thread, so that the
    # server is measured with its threads gone, as at start.
    parser.add_argument("--settle", type=float, default=15,
                        help="seconds the server rests before the final checks (default 15)")
    parser.add_argument("--tls", action="store_true",
                        help="server and clients speak TLS (default: --plain on both,"
                        " as in earlier runs)")
    parser.add_argument("--keep", action="store_true",
                        help="keep target/soak/work (served root, downloads) after the run")
    args = parser.parse_args()
    if args.workers < 1 or args.seconds <= 0 or args.kill_every <= 0:
        parser.error("--workers, --seconds and --kill-every must be positive")
    if args.settle < 0:
        parser.error("--settle must not be negative")
    return args


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def soak_and_check(args, soak):
    soak.make_pool_sources()
    server = start_server(soak.ferry, soak.root, LOG_DIR / "ferry-server.log",
                          args.tls, soak.ferry_config.env)
    facts = {}
    try:
        # What the server holds once up, before any request.
        time.sleep(0.5)
        facts["status_idle"] = memory_status(server.proc.pid)
        facts["rss_idle"] = facts["status_idle"]["VmRSS"]
        facts["fds_idle_map"] = descriptors(server.proc.pid)
        facts["fds_idle"] = len(facts["fds_idle_map"])
        log(f"soak: {'TLS' if args.tls else 'plain'} server on port {server.port},"
            f" {mib(facts['rss_idle'])} MiB,"
            f" {facts['fds_idle']} fds; {args.workers} workers for {args.seconds:g} s")
        facts["elapsed"], facts["monitor"], workers = soak.run(server)
        log(f"soak: workers stopped after {facts['elapsed']:.1f} s; settling {args.settle:g} s")
        time.sleep(args.settle)
        if server.proc.poll() is not None:
            raise SoakError(f"the server exited with {server.proc.returncode}"
                            + log_tail(server.log_path))
        facts["status_end"] = memory_status(server.proc.pid)
        facts["rss_end"] = facts["status_end"]["VmRSS"]
        facts["fds_end_map"] = descriptors(server.proc.pid)
        facts["fds_end"] = len(facts["fds_end_map"])
        log("soak: checking the served root and the download directories")
        facts["files"], facts["verified"] = soak.check_root(workers)
        facts["download_temps"], facts["download_partials"] = soak.check_downloads(workers)
        facts["server_partials"], facts["server_partials_kept"] = soak.check_partials()
    finally:
        soak.flights.kill_all()
        facts["server_exit"] = stop_server(server.proc)
    facts["server_log"] = server_log_summary(server.log_path)
    return facts


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    for directory in (WORK_DIR, LOG_DIR):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    ferry_config = FerryConfig("ferry-soak-config-")
    soak = Soak(args, ferry_config)
    try:
        facts = soak_and_check(args, soak)
    except SoakError as error:
        log(f"soak.py: stopped: {error}")
        return 1
    except (KeyboardInterrupt, Interrupted):
        log("soak.py: interrupted")
        return 130
    finally:
        soak.stop.set()
        soak.flights.kill_all()
        if not args.keep:
            shutil.rmtree(WORK_DIR, ignore_errors=True)
        ferry_config.remove()

    facts["verdict"] = verdict(soak, facts)
    text = report(args, soak, facts)
    # Every example in the log, a few on stderr.
    (LOG_DIR / "details.txt").write_text(details(soak, facts, samples=None) + "\n")
    log(details(soak, facts))
    RESULTS_FILE.write_text(text)
    print(text, end="")
    log(f"saved to {RESULTS_FILE}; every finding in {LOG_DIR / 'details.txt'}")
    return 0 if facts["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
