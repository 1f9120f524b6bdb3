"""sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET.

systemd (Type=notify) passes the path of an AF_UNIX datagram socket in ``$NOTIFY_SOCKET``
(a leading ``@`` means the Linux abstract namespace) and the watchdog period in
``$WATCHDOG_USEC`` (for ``$WATCHDOG_PID``, when set). A message is newline-separated
``KEY=VALUE`` assignments: ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``,
``RELOADING=1``, ``EXTEND_TIMEOUT_USEC=…`` (systemd.service(5), sd_notify(3)). Outside
systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """One connection to the service manager; thread-safe (each call is one sendto)."""

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never block the control loop on a manager that does not read (a full queue of
            # max_dgram_qlen datagrams makes sendto(2) wait): drop the message instead
            self._sock.setblocking(False)
        self.watchdog_usec = 0
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self._last_watchdog = 0.0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog period, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` lines (keyword names are upper-cased); False when not sent."""
        if self._sock is None:
            return False
        text = "\n".join(f"{k.upper()}={_one_line(v)}" for k, v in fields.items())
        try:
            self._sock.sendto(text.encode(), self._address)
        except OSError:
            self.errors += 1
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(ready=1, **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def stopping(self) -> bool:
        return self.notify(stopping=1)

    def reloading(self) -> bool:
        # RELOADING=1 must be paired with MONOTONIC_USEC (systemd 253, Type=notify-reload)
        return self.notify(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                           // 1000)  # fmt: skip

    def extend_timeout(self, seconds: float) -> bool:
        return self.notify(extend_timeout_usec=int(seconds * 1e6))

    def watchdog(self, now: float | None = None) -> bool:
        """Ping the watchdog when it is due (every half period); True when pinged."""
        interval = self.watchdog_interval_s
        if interval is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_watchdog < interval:
            return False
        self._last_watchdog = now
        return self.notify(watchdog=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(value: object) -> str:
    return str(value).replace("\n", " ")
