"""The OSC address space as a Markdown table, generated from the parameter registry.

``python -m studiod.controllers.docs > docs/osc-api.md`` writes the OSC API page: the
protocol (:data:`PROTOCOL`) and the address table of the embedded default session (16
channels); ``tests/controllers/test_docs.py`` fails when the page in docs/ is stale.
Repeated strips are folded into one row with a placeholder: ``{n}`` a channel number,
``{group}`` a group bus, ``{fx}`` an FX bus, ``{system}`` a monitor system.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import replace

from studiod.controllers.commands import COMMANDS
from studiod.controllers.osc import osc_type
from studiod.dsp.layout import build_layout
from studiod.dsp.registry import ENUM, FADER, TOGGLE, Param
from studiod.dsp.session import Session, default_session

PROTOCOL = """\
studiod speaks OSC 1.0 over UDP (default port 9000) and, with `tcp = true`, over TCP on
the same port number (OSC 1.1 SLIP framing; OSC 1.0 size-prefixed streams, which liblo
sends, are recognised from the first byte). Messages are built and parsed with python-osc.

```toml
[osc]
host = "127.0.0.1"          # the demo's default: this machine only
port = 9000
tcp = false
allow = ["127.0.0.0/8", "::1/128"]   # client networks that may talk to studiod
rate_limit_hz = 2000        # per client host (token bucket), burst = 500
feedback_hz = 50            # feedback ticks per second; each address at most once a tick
meter_hz = 10               # meter stream rate
subscribe_ttl_s = 10        # /subscribe without a TTL lasts this long
oscquery_port = 9001        # the HTTP server: OSCQuery, its WebSocket, /ui/, /metrics (0: none)
password = ""               # WebSocket clients must give it before they change anything
http_max_connections = 128  # more: the longest-idle connections are closed
http_header_timeout_s = 10  # a request head must arrive within this
http_idle_timeout_s = 30    # an idle keep-alive connection is closed after this

[mdns]
enabled = true              # advertise _osc._udp, _osc._tcp, _oscjson._tcp
name = ""                   # default "studiod on <host name>"
```

**Opening it to the LAN.** Set `host = "0.0.0.0"` (every IPv4 interface) or the address of
one interface, and add your network to `allow`, e.g. `allow = ["127.0.0.0/8",
"192.168.1.0/24"]`; open UDP (and TCP) 9000 and TCP 9001 in the firewall (`sudo ufw allow
from 192.168.1.0/24 to any port 9000:9001 proto udp` and the same with `proto tcp`). Packets
from outside `allow` are dropped without an answer. mDNS follows the bind address: bound to
127.0.0.1 it only advertises on loopback, bound to 0.0.0.0 on every IPv4 interface. There is
no authentication in OSC: only allow networks you trust.

**Values.** Every registry parameter is an OSC address (table below). Floats take
`i`/`f`/`d`/`h` and answer `f`; toggles take `i`/`f` 0 or 1 or `T`/`F` and answer `i`;
enums take the choice name `s` or its index `i` and answer `s`. A message with no argument
is a query: the current value comes back to the sender on the same address. OSC 1.0
patterns work (`/ch/*/mute i 1`, `/ch/{1,2}/fader`, `/ch/[!1]/solo`), and bundles apply
atomically in order, future time tags at their time (up to 60 s ahead).

**Feedback.** `/subscribe [i ttl_s] [i port]` sends the subscriber every change made by
anyone (OSC, MIDI, snapshots; coalesced per address, never echoed to the endpoint that made
it) and the meter streams, for `ttl_s` seconds (default 10; send it again to renew, like the
X32's `/xremote`); `/unsubscribe [i port]` ends it. With a port, feedback goes to that port
on the sender's host (never another host), and query answers and errors for that host go
there too (Ardour's "manual reply port"): that is how a sender that cannot receive, such as
liblo's `oscsend`, pairs with `oscdump`. Over TCP, feedback uses the connection.

**Meters.** `/meters/loudness f momentary f short-term f integrated f true-peak` (LUFS,
dBTP) and `/meters/channels f…` (peak dBFS per channel strip), at `meter_hz` to
subscribers, or once on a query (no argument). Silence and undefined values read −144.
`/meters/lra f` is the loudness range (LU, EBU Tech 3342) of what is heard since the
meters' reset; `/meters/bus/NAME f f f f` each loudness-log bus's last second (`master` and
every monitor system: momentary, short-term, integrated of the open programme segment,
true peak); `/meters/dose s bus f percent …` today's noise dose of each calibrated bus.
`/meters/correlation f` is the L/R correlation of what is heard over the last second
(+1: mono compatible, below 0: out-of-phase content that cancels in mono; not sent in
silence). `/meters/inputs` is gain staging: per channel strip, before trim and fader, `f`
peak dBFS (the last block's), `f` RMS dBFS (since the previous message), `f` that RMS
against the reference level (`[alerts] reference_dbfs`, −18 dBFS RMS by default, the
alignment level most mixing practice stages to) and `i` the samples clipped since start
(at or above −0.1 dBFS).

**Relative changes.** `/nudge s address f delta` moves a parameter by a fraction of its
control range along its taper (`/nudge s /ch/1/fader f 0.05`), `/step s address i steps`
moves an enum by choices (clamped), `/toggle s address` flips a toggle: the hub computes the
new value from the current one under its lock, as it does for MIDI encoders and buttons.

**Alerts.** Subscribers also receive `/alert s kind s severity s bus s message` whenever
a live alert is raised or cleared (a clear has severity `clear`): `true_peak`, `target`,
`clip`, `mono`, `dose`, `device`, `xrun` (see [the loudness log](loudness-log.md#live-alerts)).

**Errors.** Unknown address, wrong type, out of range, NaN, malformed packet, rate limit:
`/error s address s reason` to the sender (rate-limit errors at most once a second), logged
once per client per second; nothing bad reaches the engine and the server keeps running.

```sh
oscdump 9100 &                                        # listen for feedback
oscsend 127.0.0.1 9000 /subscribe ii 60 9100          # feedback for this host to port 9100
oscsend 127.0.0.1 9000 /ch/1/fader f -6               # set
oscsend 127.0.0.1 9000 /monitor/system s car          # switch monitor system
oscsend 127.0.0.1 9000 /ch/1/fader                    # query: oscdump prints /ch/1/fader f -6
curl 'http://127.0.0.1:9001/ch/1/fader?VALUE'         # OSCQuery: {"VALUE": [-6.0]}
```

**Methods are leaves.** As in OSC 1.0, every method is a leaf of the address tree: a
toggle with settings of its own lives beside them (`/monitor/dim/on` and
`/monitor/dim/level`), and the monitor systems have their own container
(`/monitor/systems/car/trim`), so a system may be called anything, `mono` included. Older
releases used `/monitor/dim`, `/monitor/reference` and `/monitor/NAME/...`: state files,
scenes, `[params]`, MIDI profiles and OSC clients that still say so are read by the new
names, with a note in the log.

**Discovery and OSCQuery.** zeroconf advertises `_osc._udp` (and `_osc._tcp`) and
`_oscjson._tcp` under "studiod on <host>", with TXT records `version`, `channels`,
`systems`. The OSCQuery server (Vidvox OSCQuery proposal) serves the whole namespace at
`GET /` with `TYPE`, `RANGE` (`MIN`/`MAX`, or `VALS` for enums), `VALUE` (live), `ACCESS`,
`DESCRIPTION`, `UNIT`, `CLIPMODE`; `GET /path?ATTRIBUTE` for one attribute, `GET
/?HOST_INFO` for the server (with `WS_PORT`: the WebSocket is on the same port); 404 unknown
path, 400 unknown attribute, 204 attribute absent. Commands have `ACCESS` 0 (no value to
read or set) and a `TYPE` for their arguments.

**The WebSocket** (same port, any path, the proposal's streaming): send the text frame
`{"COMMAND": "LISTEN", "DATA": "/ch/1/fader"}` and every change of that method, whoever
makes it, arrives as a binary frame holding the OSC message (its current value first);
`/meters/...` stream at 30 frames a second; `IGNORE` stops it. Binary frames you send are
OSC packets, handled as over UDP (answers and `/error` come back as binary frames).
`{"COMMAND": "PATH_CHANGED", "DATA": "/"}` arrives when the namespace changes (a reload
with another session). With `password` set, send `{"COMMAND": "AUTH", "DATA": "..."}`
(answered `{"COMMAND": "AUTH", "DATA": true}`) before changing anything; reading needs no
password. A browser page from another origin may not open the socket (403). The
[dashboard](dashboard.md) at `/ui/` is a client of this socket; `/metrics` is for
Prometheus ([metrics](metrics.md)).

**Latency and load** (`python benchmarks/bench_control.py`: the 16-channel engine paced in
real time at 64 frames / 48 kHz, another process sending `/ch/1/fader` at a fixed rate):
measured on the shared 2-core build machine (load average 3–5 from other jobs, so block
timing is noisy): every message applied at 1000, 2000 and 4000 msg/s (none refused or
lost); message → engine target p50 0.4–1.0 ms, p99 2.9–6.7 ms, max 8.6–20 ms over four
runs; then the smoothing ramp: within 0.5 dB of a 20 dB step after 74.7 ms of audio (the
engine's 20 ms parameter one-pole plus 5 ms gain one-pole; shorter steps settle sooner).
Late blocks (a block done more than one period after its deadline, i.e. an xrun on a device)
rose from 0–38 with no messages to 21–219 at 1000 msg/s on this loaded machine, with or
without `sys.setswitchinterval(0.0005)`: this benchmark paces the engine from a Python
thread, which competes with the OSC thread for the GIL. The daemon on JACK or PortAudio
does not (its callback is compiled and never takes the GIL); its xruns under OSC and
MIDI floods are measured by the soak benchmark ([realtime design](realtime.md)).\
"""


def _template(address: str, session: Session) -> tuple[str, str]:
    """(address with placeholders, what the placeholder stands for)."""
    parts = address.split("/")
    groups = {g.name for g in session.groups}
    fx = {f.name: f.kind for f in session.fx}
    systems = {m.name for m in session.systems}
    scope = ""
    if parts[1] == "ch":
        parts[2] = "{n}"
        scope = f"channels 1…{len(session.channels)}"
        if len(parts) > 4 and parts[3] == "send" and parts[4] in fx:
            parts[4] = "{fx}"
        elif len(parts) > 4 and parts[3] == "cue" and parts[4] in systems:
            parts[4] = "{cue}"
    elif parts[1] == "bus" and parts[2] in groups:
        parts[2] = "{group}"
        scope = "groups: " + ", ".join(g.name for g in session.groups)
    elif parts[1] == "fx" and parts[2] in fx:
        kind = fx[parts[2]]
        parts[2] = "{fx}"
        scope = f"{kind} FX buses"
    elif parts[1:3] == ["monitor", "systems"] and len(parts) > 4 and parts[3] in systems:
        if parts[4:] == ["cue"]:
            parts[3], scope = "{cue}", "cue systems"
        else:
            parts[3], scope = "{system}", "monitor systems"
    return "/".join(parts), scope


def _range(p: Param) -> str:
    if p.kind == ENUM:
        return " \\| ".join(p.choices)
    if p.kind == TOGGLE:
        return "0 \\| 1"
    low = "-inf" if p.taper == FADER else f"{p.minimum:g}"
    return f"{low} … {p.maximum:g}"


def _default(p: Param) -> str:
    if p.kind == ENUM:
        return p.choices[int(p.default)]
    if p.kind == TOGGLE:
        return str(int(p.default))
    return f"{p.default:g}"


def address_table(params: Iterable[Param], session: Session) -> str:
    """Markdown table: address, OSC type, unit, range, default, description."""
    entries: dict[str, tuple[Param, list[str]]] = {}
    for p in params:
        address, scope = _template(p.address, session)
        _, scopes = entries.setdefault(address, (p, []))
        if scope and scope not in scopes:
            scopes.append(scope)
    rows = []
    for address, (p, scopes) in entries.items():
        scope = " and ".join(scopes).replace(" FX buses and ", ", ")
        what = p.description + (f" ({scope})" if scope else "")
        rows.append(
            f"| `{address}` | {osc_type(p)} | {p.unit} | {_range(p)} | {_default(p)} | {what} |"
        )
    head = [
        "| Address | Type | Unit | Range | Default | What |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows)


def command_table() -> str:
    """Markdown table of the commands: address, arguments, what it does and answers."""
    rows = [
        "| Address | Arguments | What | Answer |",
        "|---|---|---|---|",
    ]
    for c in COMMANDS.values():
        rows.append(f"| `{c.address}` | {c.usage} | {c.description} | {c.replies or '—'} |")
    return "\n".join(rows)


def _with_cues_and_talkback(session: Session) -> Session:
    """``session`` with its headphones as a cue system and a talkback mic on the next input."""
    systems = tuple(replace(m, cue=m.name == "headphones") for m in session.systems)
    return replace(session, systems=systems, talkback_input=session.n_inputs + 1)


def osc_api_page() -> str:
    """The whole docs/osc-api.md page."""
    session = default_session()
    registry = build_layout(session).registry
    table = address_table(registry, session)
    cued = _with_cues_and_talkback(session)
    extra = [p for p in build_layout(cued).registry if p.address not in registry]
    return (
        "# OSC API\n\n"
        "<!-- generated by `python -m studiod.controllers.docs > docs/osc-api.md`: "
        "do not edit -->\n\n"
        f"{PROTOCOL}\n\n"
        "## Addresses\n\n"
        "The address space of the default 16-channel session (`{n}` a channel, `{group}`, "
        "`{fx}`, `{system}` the\nsession's buses and monitor systems; the "
        "`/monitor/systems/{system}/sim` default is the system's own\nsimulation):\n\n"
        f"{table}\n\n"
        "## Cue mixes and talkback\n\n"
        "A session with cue systems (`cue = true`) and a `talkback_input` has these as well "
        "(here the\ndefault session with its headphones as a cue system, `{cue}` its name; "
        "[the monitor controller](monitor.md)):\n\n"
        f"{address_table(extra, cued)}\n\n"
        "## Commands\n\n"
        "Methods that act rather than hold a value; the answer goes back to the sender on the "
        "command's\naddress, a refusal as `/error`. A command the running session cannot carry "
        "out (no reference\nplayer) is refused with the reason.\n\n"
        f"{command_table()}\n"
    )


def main() -> None:
    sys.stdout.write(osc_api_page())


if __name__ == "__main__":
    main()
