"""``studiod demo``: the daemon on the embedded demo session, no hardware needed.

By default the synthesised multitrack (:mod:`studiod.dsp.demo_session`) plays through the
engine in real time on a virtual audio device (a thread that paces 64-frame blocks like a
sound card), with the same callback, meters, state and control loop as ``studiod run``,
and a live status line on a terminal, until stopped (Ctrl-C, SIGTERM) or for ``--seconds``,
with or without a terminal. ``--jack`` plays on a JACK server (a private
``jackd -d dummy`` is started when none runs), ``--device`` on a sound card.
``--offline`` renders the demo to a WAV file as fast as possible instead.

Its state and its loudness log (the master and every monitor system, once a second, with
programme segments and alerts) are kept in the ``demo`` folder of the user's state directory
(``~/.local/state/studiod/demo``; ``--state-dir`` elsewhere), so ``studiod log --state-dir
~/.local/state/studiod/demo`` reads them during and after the demo.

The control surfaces run as in ``studiod run``, kept to this machine: OSC on
udp 127.0.0.1:9000 (any free port when that one is taken; the port is printed), OSCQuery on
http://127.0.0.1:9001/, mDNS on the loopback interface only, and MIDI controllers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from studiod.daemon.audiofile import write_atomic
from studiod.dsp.demo_session import DEMO_SETTINGS, demo_session, synthesize
from studiod.dsp.engine import Engine
from studiod.dsp.loudness import measure

BLOCK_FRAMES = 64
SAMPLERATE = 48000
PROGRAMME_S = 16.0  # the synthesised loop (8 bars at 120 BPM)


def run_demo(seconds: float, out_path: Path, system: str, samplerate: int = 48000) -> dict:
    """Offline: render the demo; returns the loudness figures and the engine's cost."""
    engine = Engine(demo_session(samplerate))
    for address, value in DEMO_SETTINGS.items():
        engine.set(address, value)
    engine.set("/monitor/system", system)
    tracks = synthesize(seconds, samplerate)
    spec = next(m for m in engine.session.systems if m.name == system)
    columns = [o - 1 for o in spec.outputs]
    # first call compiles the engine (or loads it from numba's cache)
    engine.render(np.zeros((BLOCK_FRAMES, engine.session.n_inputs), np.float32), BLOCK_FRAMES)
    started = time.perf_counter()
    out = engine.render(tracks, BLOCK_FRAMES)
    elapsed_s = time.perf_counter() - started
    heard = out[:, columns]
    figures = measure(heard, samplerate)
    write_atomic(out_path, heard, samplerate, subtype="PCM_24")
    figures["realtime_factor"] = seconds / elapsed_s
    figures["block_cost_percent"] = 100.0 * elapsed_s / seconds
    return figures


def demo_config(
    system: str = "studio",
    block_frames: int = BLOCK_FRAMES,
    backend: str = "virtual",
    device: str | None = None,
    hostapi: str | None = None,
    output_map: tuple[int, ...] = (),
    state_dir: Path | None = None,
    samplerate: int = SAMPLERATE,
):
    """The demo's config: the demo session, its mix settings and monitor system; OSC and
    OSCQuery on 127.0.0.1 (so mDNS advertises on loopback only) and MIDI on defaults."""
    from types import MappingProxyType

    from studiod.daemon.config import AudioConfig, Config, LogConfig, StateConfig

    session = demo_session(samplerate)
    if system not in [m.name for m in session.systems]:
        raise ValueError(
            f"no monitor system {system!r}; one of {[m.name for m in session.systems]}"
        )
    params = (*DEMO_SETTINGS.items(), ("/monitor/system", system))
    return Config(
        path=None,
        audio=AudioConfig(
            backend=backend,
            device=device,
            hostapi=hostapi,
            samplerate=samplerate,
            block_frames=block_frames,
            output_map=output_map,
            client_name="studiod-demo",
        ),
        session=session,
        params=tuple(params),
        state=StateConfig(dir=state_dir or demo_state_dir()),
        log=LogConfig(level="info", stats_interval_s=0.0),
        osc=MappingProxyType({"host": "127.0.0.1"}),
        mdns=MappingProxyType({"enabled": True}),
    )


def demo_state_dir() -> Path:
    """The demo's own state folder: ``demo`` in the user's state directory."""
    from studiod.daemon.config import default_state_dir

    return default_state_dir() / "demo"


def _fold_outputs(n_engine: int, n_device: int) -> tuple[int, ...]:
    """Engine outputs onto a smaller device: pairs fold onto the device's first pair, so
    every monitor system is heard (they are exclusive: one plays at a time)."""
    if n_device >= n_engine:
        return ()
    width = max(1, min(2, n_device))
    return tuple(1 + (k % width) for k in range(n_engine))


def _print_surfaces(daemon) -> None:
    monitor = daemon.loudness
    if monitor is not None and monitor.log is not None:
        print(f"  loudness log        {monitor.log.path}", flush=True)
    osc = daemon.osc
    if osc is None:
        print("  OSC                 off (see the log)", flush=True)
        return
    print(f"  OSC                 udp {osc.config.host}:{osc.udp_port}", flush=True)
    web = daemon.web
    if web is not None:
        base = f"http://{_url_host(osc.config.host)}:{web.port}"
        print(f"  dashboard           {base}/ui/")
        print(f"  OSCQuery            {base}/")
        print(f"  metrics             {base}/metrics")
    if daemon.discovery is not None:
        print(f"  mDNS                {daemon.discovery.instance!r} on the loopback "
              "interface only")  # fmt: skip
    sys.stdout.flush()


def _url_host(host: str) -> str:
    """A bound address as a URL's host: an IPv6 one in brackets."""
    return f"[{host}]" if ":" in host else host


def _start_private_jack(block_frames: int, outputs: int) -> subprocess.Popen:
    """A jackd with the dummy driver under a private server name, for --jack without a
    running server; the name goes into JACK_DEFAULT_SERVER for this process. RuntimeError
    with jackd's own last words when it does not come up within 5 s."""
    from studiod.daemon.audio import jack_server_running

    jackd = shutil.which("jackd")
    if jackd is None:
        raise RuntimeError("jackd is not installed (Debian package jackd2)")
    name = f"studiod-demo-{os.getpid()}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    with tempfile.TemporaryFile("w+") as said:
        proc = subprocess.Popen(
            [jackd, "--no-realtime", "-d", "dummy", "-r", str(SAMPLERATE), "-p",
             str(block_frames), "-C", "2", "-P", str(outputs)],
            stdout=subprocess.DEVNULL, stderr=said,
        )  # fmt: skip
        deadline = time.monotonic() + 5.0
        while proc.poll() is None and time.monotonic() < deadline:
            if jack_server_running():
                return proc
            time.sleep(0.05)
        _stop_private_jack(proc)
        said.seek(0)
        last = [line.strip() for line in said if line.strip()][-3:]
    raise RuntimeError(f"jackd did not start ({'; '.join(last) or 'it said nothing'})")


def _stop_private_jack(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def register(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the daemon on the embedded demo session (no hardware needed)",
        description="Play the synthesised demo multitrack through the engine in real time "
        "on a virtual audio device (or on JACK / a sound card), with the daemon's meters "
        "and a live status line; Ctrl-C stops. --offline renders it to a WAV file instead.",
    )
    demo.add_argument("--seconds", type=float, help="how long (default: until Ctrl-C or "
                      "SIGTERM; offline: 16)")  # fmt: skip
    demo.add_argument("--system", default="studio", help="monitor system (default studio)")
    demo.add_argument("--offline", action="store_true", help="render to a WAV file instead")
    demo.add_argument("--out", default="out/demo.wav", help="offline WAV file (out/demo.wav)")
    where = demo.add_mutually_exclusive_group()
    where.add_argument("--jack", action="store_true", help="play on JACK (starts a private "
                       "dummy jackd when no server runs)")  # fmt: skip
    where.add_argument("--device", help="play on this sound card (name or pattern)")
    demo.add_argument("--hostapi", help="PortAudio host API for --device (ALSA, JACK, …)")
    demo.add_argument("--block-frames", type=int, default=BLOCK_FRAMES, help="default 64")
    demo.add_argument("--state-dir", type=Path, help="keep the state and the loudness log "
                      "here (default: the demo folder of the user's state directory)")  # fmt: skip
    demo.set_defaults(func=main)


def main(args) -> int:
    if args.offline:
        return _offline(args)
    return _realtime(args)


def _offline(args) -> int:
    seconds = args.seconds or 16.0
    figures = run_demo(seconds, Path(args.out), args.system)
    print(f"studiod demo: {seconds:g} s of the demo session through the engine")
    print(f"  monitor system      {args.system}")
    print(f"  integrated          {figures['integrated_lufs']:7.2f} LUFS")
    print(f"  short-term max      {figures['shortterm_max_lufs']:7.2f} LUFS")
    print(f"  momentary max       {figures['momentary_max_lufs']:7.2f} LUFS")
    print(f"  loudness range      {figures['loudness_range_lu']:7.2f} LU")
    print(f"  true peak           {figures['true_peak_dbtp']:7.2f} dBTP")
    print(f"  engine speed        {figures['realtime_factor']:7.1f}x real time "
          f"({figures['block_cost_percent']:.1f} % of each 64-frame block)")  # fmt: skip
    print(f"  wrote               {args.out}")
    return 0


def _realtime(args) -> int:
    from studiod.daemon.runtime import Daemon, setup_logging

    setup_logging("info")
    tty = sys.stdout.isatty()
    seconds = args.seconds
    n_outputs = demo_session(SAMPLERATE).n_outputs
    backend, device, hostapi, output_map = "virtual", None, None, ()
    jackd = None
    try:
        if args.jack:
            from studiod.daemon.audio import jack_server_running

            backend = "jack"
            if not jack_server_running():
                try:
                    jackd = _start_private_jack(args.block_frames, n_outputs)
                except RuntimeError as exc:
                    print(f"studiod demo: no JACK server runs, and {exc}", file=sys.stderr)
                    return 1
                print(f"studiod demo: started a private JACK server "
                      f"({os.environ['JACK_DEFAULT_SERVER']}, dummy driver)")  # fmt: skip
        elif args.device:
            from studiod.daemon.audio import DeviceError, find_device, list_devices, rescan

            backend, device, hostapi = "portaudio", args.device, args.hostapi
            rescan("studiod-demo")
            try:
                found = find_device(list_devices(), device, hostapi, 0, 1)
            except DeviceError as exc:
                print(f"studiod demo: {exc}", file=sys.stderr)
                return 1
            device = found["name"]
            output_map = _fold_outputs(n_outputs, found["outputs"])
        try:
            config = demo_config(
                args.system, args.block_frames, backend, device, hostapi, output_map,
                args.state_dir.resolve() if args.state_dir else None,
            )  # fmt: skip
        except ValueError as exc:
            print(f"studiod demo: {exc}", file=sys.stderr)
            return 2
        print(f"studiod demo: the demo session on "
              f"{ {'virtual': 'a virtual device', 'jack': 'JACK'}.get(backend, device)}, "
              f"{args.block_frames} frames at {SAMPLERATE} Hz"
              f"{'' if seconds is None else f' for {seconds:g} s'}; Ctrl-C stops")  # fmt: skip
        programme = synthesize(PROGRAMME_S, SAMPLERATE)
        daemon = Daemon(
            config, status_out=sys.stdout if tty else None, programme=programme,
            any_free_port=True,
        )  # fmt: skip
        daemon.install_signal_handlers()
        try:
            daemon.start()
            _print_surfaces(daemon)
            daemon.run(seconds)
            device = daemon.device
        finally:
            daemon.close()
        # after the close, so that the summary has the figures of the daemon's "stopped" line
        stats = daemon.stats()
        master = daemon.core.levels(0)
        print(f"  monitor system      {daemon.system}")
        print(f"  integrated          {master.integrated_lufs:7.2f} LUFS (master)")
        print(f"  loudness range      {master.loudness_range_lu:7.2f} LU")
        print(f"  true peak max       {master.true_peak_max_dbtp:7.2f} dBTP")
        print(f"  blocks              {stats['callbacks']} ({stats['xruns']} xruns)")
        late_wakes = getattr(device, "late_wakes", None)
        if late_wakes is not None:  # the virtual device tells whose lateness it was
            print(f"  device thread       woke late {late_wakes} times (the machine's), "
                  f"{device.late_blocks} outputs late")  # fmt: skip
        print(
            f"  callback time       p50 {stats['p50_pct']:.1f} %, p99 {stats['p99_pct']:.1f} %, "
            f"max {stats['max_pct']:.1f} % of the {stats['period_us']:.0f} µs period"
        )
        print(
            f"  own CPU time        p50 {stats['cpu_p50_pct']:.1f} %, p99.9 "
            f"{stats['cpu_p999_pct']:.1f} %, max {stats['cpu_max_pct']:.1f} %; "
            f"{stats['cpu_overlong']} blocks over the period (the daemon's own lateness)"
        )
        print(f"  ready after         {stats['ready_s']:.2f} s")
        print(f"  state and log       {config.state.dir} (studiod log --state-dir "
              f"{config.state.dir})")  # fmt: skip
        return 0
    finally:
        if jackd is not None:
            _stop_private_jack(jackd)
