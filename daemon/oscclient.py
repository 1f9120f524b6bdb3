"""The CLI's way to the running daemon: one OSC request over UDP, one answer.

``studiod snapshot`` and ``studiod player`` talk to a running ``studiod run`` / ``demo``
the way any OSC client does: a message to its OSC port, the answer (the command's reply, a
parameter's value) or its ``/error`` back to the socket that asked. Where the daemon
listens comes from ``--config`` (its ``[osc]`` host and port) or ``--host`` / ``--port``
(default 127.0.0.1:9000, the demo's).
"""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.osc_packet import ParseError

from studiod.controllers.osc import DEFAULT_PORT, ERROR_ADDRESS, build_message

TIMEOUT_S = 5.0
# A parameter change has no answer: a refusal (/error) comes back at once, so this long
# without one means it was taken; the value is then asked for to show what it is now.
SET_GRACE_S = 0.2


class OscClientError(RuntimeError):
    """No answer, or the daemon refused the request (its /error reason)."""


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the daemon's config (its [osc] host/port)")
    parser.add_argument("--host", help="the daemon's OSC host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"the daemon's OSC port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--timeout", type=float, default=TIMEOUT_S, metavar="SECONDS",
        help=f"how long to wait for the answer (default {TIMEOUT_S:g})",
    )  # fmt: skip


def target(args) -> tuple[str, int]:
    """(host, port) of the daemon from the parsed arguments; ConfigError for a bad config."""
    host, port = "127.0.0.1", DEFAULT_PORT
    if args.config is not None:
        from studiod.daemon.config import control_surfaces, load_config

        osc = control_surfaces(load_config(args.config)).osc
        if osc is not None:
            host, port = osc.host, osc.port
    if host in ("0.0.0.0", ""):  # listening everywhere: loopback reaches it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return args.host or host, args.port or port


class OscClient:
    """One UDP socket to the daemon at (host, port)."""

    def __init__(self, host: str, port: int, timeout_s: float = TIMEOUT_S):
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
        self.sock.connect(info[4])  # answers from anywhere else are not ours
        self.timeout_s = timeout_s
        self.where = f"{host}:{port}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> OscClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ask(self, address: str, args=()) -> list:
        """Send and wait for the answer on ``address``: its arguments."""
        self.sock.send(build_message(address, args))
        return self._answer(address, self.timeout_s)

    def set(self, address: str, value) -> list:
        """Set a parameter; its value afterwards (as the daemon reports it)."""
        self.sock.send(build_message(address, [value]))
        self._answer(address, SET_GRACE_S, silence_is_fine=True)
        return self.ask(address)

    def _answer(self, address: str, timeout_s: float, silence_is_fine: bool = False) -> list:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionRefusedError:
                where = self.where
                raise OscClientError(f"nothing listens on {where} (is studiod running?)") from None
            try:
                message = OscMessage(data)
            except ParseError:
                continue
            if message.address == address:
                return list(message.params)
            params = list(message.params)
            if message.address == ERROR_ADDRESS and params[:1] == [address]:
                raise OscClientError(str(params[1]) if len(params) > 1 else "refused")
        if silence_is_fine:
            return []
        raise OscClientError(f"no answer from {self.where} within {timeout_s:g} s "
                             "(is studiod running there?)")  # fmt: skip
