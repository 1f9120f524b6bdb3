"""End-to-end fixtures: a real JACK server (dummy driver) under a private name, the daemon
as a subprocess (`studiod run`, with this test as its systemd: an sd_notify socket), and a
JACK peer client that plays into the daemon's inputs and records its outputs."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FS = 48000


def die_with_parent() -> None:
    """``preexec_fn`` for servers the tests start: the child gets SIGKILL when the test
    process ends, however it ends (a stale jackd's driver thread would go on waking every
    period and preempting later tests' realtime threads). prctl(2) PR_SET_PDEATHSIG."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def _wait(predicate, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


# jackd's own account of a late cycle (jack2 JackEngine::CheckXRun, JackTimedDriver)
_LATE = re.compile(
    r"JackEngine::XRun: client = (?P<client>\S+) was not finished, state = (?P<state>\w+)"
    r"|JackEngine::XRun: client (?P<finished>\S+) finished after current callback"
    r"|(?P<driver>JackTimedDriver)::Process XRun"
)


# jack2 keeps the servers of a machine in a registry in /dev/shm with room for 8 (shm.c
# MAX_SERVERS). A server that exits cleanly unregisters; the entry of one that dies is
# reclaimed only by a later server of the same name, and every test server has a name of
# its own: 8 dead ones and no jackd on the machine starts.
_LEAKED = " (so its entry in JACK's server registry is left behind)"
_REGISTRY_FULL = (
    "\nJACK's server registry (8 entries, /dev/shm/jack-shm-registry) is full of servers "
    "that died without unregistering; with no jackd running, remove that file."
)


def jack_ports(env: dict | None = None) -> list[str]:
    """The ports of the server that ``env`` (else this process's environment) names, as
    ``jack_lsp`` lists them, a line each (names have spaces); none when no server answers."""
    out = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True, timeout=10)
    return out.stdout.splitlines() if out.returncode == 0 else []


class JackServer:
    """``jackd -d dummy -r SAMPLERATE -p PERIOD`` with 8 capture and 8 playback ports (set
    ``samplerate`` before a :meth:`start` to restart it at another rate). Its messages are
    kept with their arrival time (see :meth:`late_clients`).

    ``synchronous``: jackd ``-S``, where the driver waits for the whole graph every cycle, so
    every client runs exactly once per period in graph order even when one is late (the
    cycle is late instead). In jackd's default asynchronous mode a client that the OS has
    not run by the next period is skipped for it and its peers read its previous period: a
    recording then holds a repeated period that no client produced, several times a second
    on a loaded VM (:meth:`late_clients`; test_jack_daemon.amplitudes leaves such stretches
    out). The synchronous mode is for tests that count blocks while this process holds the
    GIL or need every period of a take; it is not the default because jack2 can get stuck
    in it when a client closes while the graph waits ("ClientCloseAux wait error", then
    "SuspendRefNum error" and a 53 ms timeout every cycle: 18 cycles a second instead of
    375, seen in 1 of 5 starts of the daemon with its MIDI clients)."""

    def __init__(self, period: int = 128, samplerate: int = FS, synchronous: bool = False):
        self.name = f"studiod-e2e-{uuid.uuid4().hex[:8]}"
        self.period = period
        self.samplerate = samplerate
        self.synchronous = synchronous
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")
        self.proc: subprocess.Popen | None = None
        self.messages: list[tuple[float, str]] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["jackd", *(["-S"] if self.synchronous else []), "-d", "dummy", "-r",
             str(self.samplerate), "-p", str(self.period), "-C", "8", "-P", "8"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        reader.start()
        _wait(lambda: self.proc.poll() is not None or self.run("jack_lsp").returncode == 0,
              10.0, "jackd to start")  # fmt: skip
        if self.proc.poll() is not None:
            reader.join(timeout=5)
            said = self._last_words()
            raise RuntimeError(f"jackd exited with status {self.proc.returncode}:\n{said}"
                               + _REGISTRY_FULL * ("Too many servers" in said))  # fmt: skip

    def _read(self, stream) -> None:
        for line in stream:
            self.messages.append((time.monotonic(), line.rstrip()))

    def _last_words(self) -> str:
        return "\n".join(line for _, line in self.messages[-5:])

    def late_clients(self, since: float) -> list[tuple[float, str, str]]:
        """(time, client, state) of every late cycle jackd logged since the monotonic time
        ``since`` (an xrun it then reports to every client). state "Triggered": the client's
        thread never started the cycle (the OS did not run it); "Running": it started and
        did not finish; "Finished": it finished after the deadline. The dummy driver's own
        late wake-ups come as client "(driver)"."""
        found = []
        for t, line in list(self.messages):
            match = _LATE.search(line)
            if t < since or not match:
                continue
            if match["driver"]:
                found.append((t, "(driver)", "late"))
            elif match["finished"]:
                found.append((t, match["finished"], "Finished"))
            else:
                found.append((t, match["client"], match["state"]))
        return found

    def kill(self) -> None:
        """SIGKILL, as a crashing server would go."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, and jackd must exit cleanly: one that dies on the way out (a signal,
        a timeout) has not unregistered, and leaks one of the machine's 8 server entries."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # status -9
                proc.wait()
        if proc.returncode != 0:
            raise AssertionError(f"jackd exited with status {proc.returncode}" + _LEAKED
                                 + f"; its last words:\n{self._last_words()}")  # fmt: skip

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=10)

    def ports(self) -> list[str]:
        return jack_ports(self.env)

    def connect(self, source: str, destination: str) -> None:
        result = self.run("jack_connect", source, destination)
        assert result.returncode == 0, result.stderr


class DaemonProcess:
    """`studiod run --config PATH` in the server's environment; READY/STATUS through our
    own sd_notify socket, like systemd's Type=notify."""

    def __init__(self, config: Path, env: dict, tmp_path: Path):
        self.config = config
        self.env = env
        self.sock_path = tmp_path / f"notify-{uuid.uuid4().hex[:6]}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.proc: subprocess.Popen | None = None
        self.stderr_path = tmp_path / f"daemon-{uuid.uuid4().hex[:6]}.log"
        self.status = ""

    @classmethod
    def from_text(cls, config_text: str, tmp_path: Path, env: dict | None = None):
        """A daemon (not started) on ``config_text``, written to ``tmp_path/studiod.toml``, in
        ``env`` (default: this process's environment)."""
        config = tmp_path / "studiod.toml"
        config.write_text(config_text)
        return cls(config, dict(os.environ) if env is None else env, tmp_path)

    def start(self, timeout: float = 120.0) -> None:
        env = dict(self.env, NOTIFY_SOCKET=str(self.sock_path))
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "studiod.daemon.cli", "run", "--config", str(self.config)],
                env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
            )  # fmt: skip
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.sock.settimeout(timeout)
        while True:
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                raise TimeoutError(f"no READY=1 within {timeout} s:\n{self.log()}") from None
            for line in message.split("\n"):
                if line.startswith("STATUS="):
                    self.status = line[7:]
            if "READY=1" in message:
                return

    def wait_status(self, predicate, timeout: float = 20.0) -> str:
        """The next STATUS= text for which ``predicate(text)`` is true (earlier ones are
        read and passed over)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                raise TimeoutError(f"no such STATUS= within {timeout} s (last: {self.status!r})"
                                   f":\n{self.log()}") from None  # fmt: skip
            for line in message.split("\n"):
                if line.startswith("STATUS="):
                    self.status = line[7:]
                    if predicate(self.status):
                        return self.status

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)
        self.wait_ready()

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                # as systemd after TimeoutStopSec (TimeoutStopFailureMode=abort): the
                # daemon's faulthandler writes where every thread is into the log
                self.proc.send_signal(signal.SIGABRT)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stopped_stats(self) -> dict:
        """The figures of the daemon's final "stopped:" log line."""
        match = re.search(r"stopped: (\d+) callbacks, (\d+) xruns.*p99.9 (\d+) µs, max (\d+) µs "
                          r"\(([\d.]+) % of the (\d+) µs period\); own CPU time p50 (\d+) µs, "
                          r"p99.9 (\d+) µs, max (\d+) µs", self.log())  # fmt: skip
        assert match, self.log()
        return {"callbacks": int(match[1]), "xruns": int(match[2]), "p999_us": int(match[3]),
                "max_us": int(match[4]), "max_pct": float(match[5]),
                "period_us": int(match[6]), "cpu_p50_us": int(match[7]),
                "cpu_p999_us": int(match[8]), "cpu_max_us": int(match[9])}  # fmt: skip

    def close(self) -> None:
        self.stop()
        self.sock.close()


class Peer:
    """tests/e2e/jack_peer.py in its own process: plays into the daemon, records it."""

    def __init__(self, server: JackServer, name: str, inputs: int, outputs: int):
        self.server, self.name = server, name
        self.inputs, self.outputs = inputs, outputs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.jack_peer", name, str(inputs), str(outputs)],
            env=server.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"peer said {line!r}"

    def _ask(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def wire(self, daemon_client: str = "studiod") -> None:
        """peer out k -> daemon in k; daemon out k -> peer in k (PortAudio numbers from 0)."""
        for k in range(self.outputs):
            self.server.connect(f"{self.name}:out_{k}", f"{daemon_client}:in_{k + 1}")
        for k in range(self.inputs):
            self.server.connect(f"{daemon_client}:out_{k + 1}", f"{self.name}:in_{k}")

    def play(self, signal_: np.ndarray, tmp_path: Path) -> None:
        path = tmp_path / f"play-{uuid.uuid4().hex[:6]}.npy"
        np.save(path, signal_.astype(np.float32))
        assert self._ask(f"play {path}") == "ok"

    def record(self, seconds: float, tmp_path: Path) -> np.ndarray:
        path = tmp_path / f"rec-{uuid.uuid4().hex[:6]}.npy"
        assert self._ask(f"record {seconds} {path}") == "done"
        return np.load(path)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def jack_server():
    if shutil.which("jackd") is None:  # ./run installs jackd2; a missing peer is a failure
        pytest.fail("jackd is not installed (Debian package jackd2)")
    server = JackServer(period=128)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def daemon_factory(jack_server, tmp_path):
    made = []

    def make(config: Path) -> DaemonProcess:
        daemon = DaemonProcess(config, jack_server.env, tmp_path)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


@pytest.fixture
def peer_factory(jack_server):
    made = []

    def make(name: str = "peer", inputs: int = 4, outputs: int = 2) -> Peer:
        peer = Peer(jack_server, name, inputs, outputs)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()
