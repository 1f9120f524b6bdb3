"""Discovery with mDNS/DNS-SD (zeroconf): OSC clients find studiod without typing an address.

Advertised services (RFC 6763 DNS-SD over RFC 6762 mDNS):

``_osc._udp``       the OSC UDP port (and ``_osc._tcp`` when the TCP listener is on)
``_oscjson._tcp``   the OSCQuery HTTP server (the service type the OSCQuery proposal names)

Instance names include the host name ("studiod on studio-pi"), and every service carries
TXT records: ``txtvers=1``, ``version`` (studiod's), ``channels`` (channel strips),
``systems`` (monitor system names, comma-separated), and ``path=/`` on ``_oscjson._tcp``.

mDNS is multicast, so it only goes where the OSC server listens: bound to 127.0.0.1 (the
demo), zeroconf uses the loopback interface only; bound to one address, that interface;
bound to 0.0.0.0, every IPv4 interface. Registration (probing takes about a second per
service, RFC 6762 section 8.1) runs in a background thread so that start-up never waits.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

log = logging.getLogger("studiod.discovery")

OSC_UDP = "_osc._udp.local."
OSC_TCP = "_osc._tcp.local."
OSCJSON = "_oscjson._tcp.local."
_TXT_MAX = 255  # one TXT string, key=value included (RFC 6763 section 6.1)
_LABEL_MAX = 63  # one DNS label (RFC 1035 section 2.3.4); the instance name is one label


def studiod_version() -> str:
    try:
        return version("studiod")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class DiscoveryConfig:
    """The ``[mdns]`` config section: ``enabled``, ``name`` (instance name; default
    "studiod on <host name>")."""

    enabled: bool = True
    name: str = ""

    @classmethod
    def from_mapping(cls, data) -> DiscoveryConfig:
        unknown = set(data) - {"enabled", "name"}
        if unknown:
            raise ValueError(f"mdns: unknown key(s) {sorted(unknown)}; known: enabled, name")
        enabled = data.get("enabled", True)
        name = data.get("name", "")
        if not isinstance(enabled, bool):
            raise ValueError(f"mdns.enabled: must be true or false, not {enabled!r}")
        if not isinstance(name, str) or len(name.encode()) > _LABEL_MAX:
            raise ValueError(f"mdns.name: must be a string of at most {_LABEL_MAX} bytes")
        return cls(enabled, name)


def host_label(hostname: str | None = None) -> str:
    """The host name as one DNS label (letters, digits, hyphens)."""
    name = (hostname or socket.gethostname()).split(".")[0]
    label = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")
    return (label or "studiod")[:_LABEL_MAX]


def instance_name(hostname: str | None = None, name: str = "") -> str:
    """'studiod on <host>' (or ``name``), cut to one DNS label."""
    text = name or f"studiod on {host_label(hostname)}"
    raw = text.encode()[:_LABEL_MAX]
    return raw.decode(errors="ignore")


def txt_records(channels: int, systems: Sequence[str], extra: dict | None = None) -> dict:
    """TXT key/values; the systems list is cut at a name boundary to fit one TXT string."""
    listed = ""
    for name in systems:
        candidate = f"{listed},{name}" if listed else name
        if len(f"systems={candidate}".encode()) > _TXT_MAX:
            break
        listed = candidate
    txt = {
        "txtvers": "1",
        "version": studiod_version(),
        "channels": str(int(channels)),
        "systems": listed,
    }
    txt.update(extra or {})
    return txt


def interfaces_for(bind_host: str) -> tuple[list[str] | None, list[str]]:
    """(zeroconf interfaces or None for all IPv4, addresses to advertise) for a bind address.

    Only IPv4 is advertised: zeroconf cannot listen on IPv6 loopback, and the OSC server of
    the demo is IPv4.
    """
    from zeroconf import get_all_addresses

    if bind_host in ("", "0.0.0.0", "::"):
        return None, [a for a in get_all_addresses() if not a.startswith("169.254.")]
    info = socket.getaddrinfo(bind_host, None, socket.AF_INET, socket.SOCK_DGRAM)
    address = info[0][4][0]
    return [address], [address]


class Discovery:
    """Advertise the OSC and OSCQuery services; ``start()`` (returns at once), ``close()``.

    bind_host: the address the OSC server is bound to (decides the interfaces);
    osc_port: UDP port; tcp_port: TCP port or None; oscquery_port: HTTP port or None;
    channels, systems: for the TXT records; name: instance name (default with host name).
    """

    def __init__(
        self,
        bind_host: str,
        osc_port: int,
        *,
        tcp_port: int | None = None,
        oscquery_port: int | None = None,
        channels: int = 0,
        systems: Sequence[str] = (),
        name: str = "",
        hostname: str | None = None,
    ):
        self.bind_host = bind_host
        self.instance = instance_name(hostname, name)
        self.server = f"{host_label(hostname)}.local."
        txt = txt_records(channels, systems)
        self.services = [(OSC_UDP, osc_port, txt)]
        if tcp_port:
            self.services.append((OSC_TCP, tcp_port, txt))
        if oscquery_port:
            self.services.append((OSCJSON, oscquery_port, {**txt, "path": "/"}))
        self._zc = None
        self._infos: list = []
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.registered = threading.Event()
        self.error: Exception | None = None

    def start(self) -> Discovery:
        from zeroconf import IPVersion, ServiceInfo, Zeroconf

        interfaces, addresses = interfaces_for(self.bind_host)
        self._zc = Zeroconf(
            interfaces=interfaces if interfaces is not None else _all_ipv4(),
            ip_version=IPVersion.V4Only,
        )
        self._infos = [
            ServiceInfo(
                type_,
                f"{self.instance}.{type_}",
                port=port,
                properties=txt,
                server=self.server,
                parsed_addresses=addresses,
            )
            for type_, port, txt in self.services
        ]
        self._thread = threading.Thread(target=self._register, name="mdns", daemon=True)
        self._thread.start()
        return self

    def _register(self) -> None:
        try:
            for info in self._infos:
                if self._closing.is_set():
                    return
                self._zc.register_service(info, allow_name_change=True)
                log.info("mdns: advertising %r on %s", info.name, self.bind_host)
        except Exception as exc:  # mDNS is a convenience: the daemon runs without it
            self.error = exc
            log.warning("mdns: could not advertise: %s", exc)
        finally:
            self.registered.set()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self._zc is not None:
            try:
                self._zc.unregister_all_services()
            finally:
                self._zc.close()
            self._zc = None

    def __enter__(self) -> Discovery:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _all_ipv4():
    from zeroconf import InterfaceChoice

    return InterfaceChoice.All
