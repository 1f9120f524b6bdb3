"""The dashboard (``controllers/ui``, docs/dashboard.md) in a real headless Chromium at a
phone's 390×844 viewport, in a private network namespace; what the manual page says of the
running daemon is checked here.

On ``studiod demo``: the page shows the meters moving, coloured by the delivery target, at
20 frames a second or more, and the loudness history drawn with uPlot; its monitor section
is built from the OSCQuery namespace and every tap changes the daemon (read back over OSC
by an independent client); a fader moved by liblo's ``oscsend`` shows on the page within
100 ms; scenes are saved and recalled; a true-peak alert shows in the banner, the list and
the history, and leaves the banner when it clears. Every resource comes from the daemon,
the console stays clean, every control is a 44 px touch target.

On ``studiod run`` listening on every interface, with a password, a talkback input and a
calibrated output: a client outside ``allow`` gets 403; the page asks for the password and
only watches until it has it; it shows the talkback and the noise dose, rebuilds itself when
a reload changes the session, and after the daemon restarts reconnects, gives the password
again and follows changes.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from studiod.controllers.osc import OscConfig
from studiod.daemon.oscclient import OscClient
from studiod.dsp.demo_session import demo_session
from tests.e2e.netns import REPO, inside, netns

pytestmark = pytest.mark.e2e

OSC_PORT = 9000
URL = "http://127.0.0.1:9001/ui/"
ORIGIN = "http://127.0.0.1:9001/"
# the colour rules of docs/dashboard.md
NEAR_LU, NEAR_TP_DB, INPUT_NEAR_DB = 2.0, 1.0, 6.0
AMBER, RED, BLUE = "rgb(240, 180, 41)", "rgb(255, 90, 79)", "rgb(74, 163, 255)"
PASSWORD = "open sesame"
BACKOFF_MAX_S = 4.0


# -- the browser and small helpers -----------------------------------------------------------
def chromium():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):  # fmt: skip
        opts.add_argument(arg)
    # a phone's viewport (a headless desktop window is at least 500 px wide)
    metrics = {"width": 390, "height": 844, "pixelRatio": 1.0, "touch": True}
    opts.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))


def wait(predicate, timeout: float = 5.0, what: str = "", step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def text(driver, selector: str) -> str:
    return js(driver, "return document.querySelector(arguments[0]).textContent", selector)


def data(driver, selector: str, key: str):
    return js(driver, "return document.querySelector(arguments[0])?.dataset[arguments[1]]",
              selector, key)  # fmt: skip


def number(shown: str) -> float | None:
    """A number as the page prints it (real minus sign, units; "–" for silence)."""
    shown = re.sub(r"(dBFS|dB|LUFS|%)", "", shown).replace("−", "-").strip()
    return None if shown in ("–", "") else float(shown)


def tap(driver, selector: str) -> None:
    element = driver.find_element(By.CSS_SELECTOR, selector)
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def tap_slider(driver, selector: str, fraction: float) -> None:
    """A tap on a slider's track at ``fraction`` (-0.5 … 0.5) of its width from the middle."""
    slider = driver.find_element(By.CSS_SELECTOR, selector)
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", slider)
    offset = int(slider.size["width"] * fraction)
    ActionChains(driver).move_to_element_with_offset(slider, offset, 0).click().perform()


def pressed(driver, selector: str) -> str | None:
    return js(driver, "return document.querySelector(arguments[0])?.ariaPressed", selector)


def exists(driver, selector: str) -> bool:
    return js(driver, "return document.querySelector(arguments[0]) !== null", selector)


def ask(address: str) -> list:
    with OscClient("127.0.0.1", OSC_PORT) as client:
        return client.ask(address)


def until_daemon(address: str, expected: list, timeout: float = 2.0) -> None:
    wait(lambda: ask(address) == expected, timeout, f"{address} == {expected}")


def oscsend(address: str, types: str, *values: str) -> float:
    """liblo's oscsend (a C program); returns time.time() just before it ran."""
    started = time.time()
    subprocess.run(["oscsend", "127.0.0.1", str(OSC_PORT), address, types, *values],
                   check=True, timeout=10)  # fmt: skip
    return started


def get_json(path: str):
    with urllib.request.urlopen(ORIGIN.rstrip("/") + path, timeout=5) as response:
        return json.load(response)


def severe_console(driver, ignore: tuple[str, ...] = ()) -> list[dict]:
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(i in e["message"] for i in ignore)]  # fmt: skip


def too_small(driver) -> list[str]:
    """Visible buttons, sliders and text fields smaller than 44×44 CSS px."""
    return js(driver, TOO_SMALL)


def link(driver) -> str:
    return data(driver, "#link", "state")


# -- what the test reads from the page ------------------------------------------------------
# visible buttons, sliders and text fields smaller than 44×44 CSS px
TOO_SMALL = """
    return [...document.querySelectorAll('button, input[type=range], input[type=text]')]
    .filter((e) => e.offsetParent !== null)
    .map((e) => [e.textContent || e.ariaLabel || e.id, e.getBoundingClientRect()])
    .filter(([, r]) => r.width < 44 || r.height < 44)
    .map(([name, r]) => `${name}: ${r.width}x${r.height}`);"""
# each loudness tile's text and colour state, read between two frames
TILES = """
    return Object.fromEntries(['momentary', 'shortterm', 'integrated', 'truepeak']
    .map((id) => [id, [document.getElementById(id).textContent,
                       document.getElementById('tile-' + id).dataset.state]]));"""
# the monitor system buttons' choices, in order
SYSTEM_CHOICES = """
    return [...document.querySelectorAll(
    '[data-address="/monitor/system"] [data-choice]')].map((b) => b.dataset.choice)"""
# the channel faders: address and name
FADER_NAMES = """
    return [...document.querySelectorAll('#faders .fader')]
    .map((f) => [f.dataset.address, f.querySelector('.name').textContent])"""
# window[KEY] = Date.now() when the control at SELECTOR shows VALUE (arguments: SELECTOR,
# VALUE, KEY)
WATCH = """
    const [selector, value, key] = arguments;
    const node = document.querySelector(selector);
    window[key] = null;
    new MutationObserver(() => {
      if (node.dataset.value === value && window[key] === null) window[key] = Date.now();
    }).observe(node, {attributes: true, attributeFilter: ['data-value']});"""
# the per-output table: bus and its four cells
BUS_ROWS = """
    return [...document.querySelectorAll('#buses tr[data-bus]')]
    .map((r) => [r.dataset.bus, ...[...r.querySelectorAll('td')]
                  .map((c) => c.textContent)])"""
# the input meters: level re the reference, colour state, clips
INPUT_ROWS = """
    return [...document.querySelectorAll('#inputs .input')]
    .map((r) => [r.querySelector('.re').textContent, r.dataset.state,
                 r.querySelector('.clips').textContent])"""
# the uPlot history chart's series, band, data and x scale
CHART = """
    const c = window.studiod.trend.chart;
    return {series: c.series.map((s) => s.label), bands: c.bands.length,
            strokes: c.series.map((s, i) => s.stroke && s.stroke(c, i)), dash: c.series[3].dash,
            band: [c.data[5][0], c.data[6][0]], points: c.data[0].length,
            span: c.scales.x.max - c.scales.x.min, max: c.scales.x.max,
            canvas: document.querySelector('#history canvas').width}"""
# the history requests the page made
HISTORY_REQUESTS = """
    return performance.getEntriesByType('resource')
    .map((e) => e.name).filter((n) => n.includes('/ui/api/history'))"""
# the colour on the history chart's canvas at the newest alert's time, mid-height (null
# while the chart ends before that time: it moves on once a second)
ALERT_PIXEL = """
    const c = window.studiod.trend.chart, alerts = window.studiod.trend.alerts;
    const t = alerts[alerts.length - 1].t;
    if (t > c.scales.x.max) return null;
    const x = Math.round(c.valToPos(t, 'x', true));
    const y = Math.round(c.bbox.top + c.bbox.height / 2);
    return [...c.ctx.getImageData(x, y, 1, 1).data];"""
# window.tappedAt = Date.now() when the button at SELECTOR is tapped
TAPPED_AT = """
    window.tappedAt = null;
    document.querySelector(arguments[0]).addEventListener('click', () => {
      window.tappedAt = Date.now();
    }, {capture: true, once: true});"""
# the columns of the page's grid
COLUMNS = "return getComputedStyle(document.querySelector('main')).gridTemplateColumns"
# the alerts list's true_peak rows: severity and time
ALERT_ROWS = """
    return [...document.querySelectorAll('#alerts li')]
    .filter((li) => li.dataset.kind === 'true_peak')
    .map((li) => [li.dataset.severity, li.querySelector('time').textContent])"""


# -- the colour rules, from docs/dashboard.md -----------------------------------------------
def loudness_state(lufs: float | None, target: dict) -> tuple[str, bool]:
    """(state, whether the one-decimal text is too close to an edge to tell)."""
    if lufs is None:
        return "none", False
    off, tol = lufs - target["integrated_lufs"], target["tolerance_lu"]
    edge = min(abs(abs(off) - tol), abs(abs(off) - tol - NEAR_LU)) <= 0.05
    if abs(off) <= tol:
        return "ok", edge
    if abs(off) <= tol + NEAR_LU:
        return "near", edge
    return ("over" if off > 0 else "under"), edge


def peak_state(dbtp: float | None, target: dict) -> tuple[str, bool]:
    if dbtp is None:
        return "none", False
    ceiling = target["ceiling_dbtp"]
    edge = min(abs(dbtp - ceiling), abs(dbtp - ceiling + NEAR_TP_DB)) <= 0.05
    if dbtp > ceiling:
        return "over", edge
    return ("near" if dbtp > ceiling - NEAR_TP_DB else "ok"), edge


def check_tiles(driver, target: dict, seen: set) -> None:
    """The tiles' colours agree with their numbers (all read in one go, between frames)."""
    tiles = js(driver, TILES)
    for name, (shown, state) in tiles.items():
        rule = peak_state if name == "truepeak" else loudness_state
        expected, edge = rule(number(shown), target)
        assert edge or state == expected, f"{name} {shown}: {state}, expected {expected}"
        seen.add((name, state))


# -- the demo ----------------------------------------------------------------------------------
def start_demo(state: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studiod.daemon.cli", "demo", "--state-dir", str(state)],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO,
        )  # fmt: skip
    for line in proc.stdout:
        match = re.match(r"\s+dashboard\s+(\S+)$", line)
        if match:
            assert match[1] == URL
            return proc
    proc.wait(timeout=30)
    raise AssertionError(f"the demo printed no dashboard line:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode


@netns
def test_dashboard_on_the_demo(tmp_path):
    assert inside()
    log = tmp_path / "demo.log"
    demo = start_demo(tmp_path / "demo-state", log)
    driver = None
    seen: set[tuple[str, str]] = set()
    try:
        driver = chromium()
        driver.get(URL)
        dashboard = get_json("/ui/api/dashboard")
        target = dashboard["target"]
        tree = get_json("/")
        wait(lambda: link(driver) == "live", 10.0, "the page to connect")
        wait(lambda: number(text(driver, "#integrated")) is not None, 10.0, "a loudness")
        assert text(driver, "#name") == dashboard["name"]
        assert text(driver, "#target") == (f"{target['name']} −14.0 LUFS ±1 LU · TP ≤ −1.0")
        assert text(driver, "#reference") == "reference −18 dBFS RMS"
        assert number(text(driver, "#lra")) is not None

        # the monitor section is the namespace's: every choice, only what the daemon has
        monitor = tree["CONTENTS"]["monitor"]["CONTENTS"]
        systems = monitor["system"]["RANGE"][0]["VALS"]
        shown = js(driver, SYSTEM_CHOICES)
        assert shown == systems and "car" in systems
        for address in ("/monitor/source", "/monitor/dim/on", "/monitor/cut", "/monitor/mono",
                        "/monitor/swap", "/monitor/solo", "/monitor/reference/on",
                        "/monitor/level", "/player/play", "/snapshot/save"):  # fmt: skip
            assert exists(driver, f'[data-address="{address}"]'), address
        assert "talkback" not in tree["CONTENTS"]
        assert not exists(driver, '[data-address="/talkback/on"]')
        names = js(driver, FADER_NAMES)
        assert names == [[f"/ch/{n}/fader", name] for n, name in
                         enumerate(dashboard["channels"], start=1)]  # fmt: skip

        # a fader moved over OSC by another program shows within 100 ms
        js(driver, WATCH, '[data-address="/ch/1/fader"]', "-12", "faderAt")
        assert js(driver, "return window.faderAt") is None
        sent = oscsend("/ch/1/fader", "f", "-12")
        shown_at = wait(lambda: js(driver, "return window.faderAt"), 2.0, "the page's fader")
        assert shown_at / 1000.0 - sent < 0.100, f"{shown_at / 1000.0 - sent:.3f} s"
        ch1 = '[data-address="/ch/1/fader"]'
        assert text(driver, f"{ch1} output") == "−12.0 dB"
        # the console fader law: -∞ at the bottom, -10 dB at half travel, 0 dB at three
        # quarters, +10 at the top (a 1000-step slider)
        slider = js(driver, "return document.querySelector(arguments[0] + ' input').value", ch1)
        assert slider == "475"
        hat = '[data-address="/ch/3/fader"]'
        for value, position, readout in (("-90", "0", "−∞ dB"), ("-10", "500", "−10.0 dB"),
                                         ("0", "750", "0.0 dB"), ("10", "1000", "+10.0 dB"),
                                         ("-6", "600", "−6.0 dB")):  # fmt: skip
            oscsend("/ch/3/fader", "f", value)
            wait(lambda v=value: data(driver, hat, "value") == v, 1.0, f"hat at {value}")
            assert js(driver, "return document.querySelector(arguments[0]).value",
                      f"{hat} input") == position  # fmt: skip
            assert text(driver, f"{hat} output") == readout

        # taps change the daemon (read back over OSC), and the page shows what it did
        car = '[data-address="/monitor/system"] [data-choice="car"]'
        tap(driver, car)
        until_daemon("/monitor/system", ["car"])
        wait(lambda: pressed(driver, car) == "true", 1.0, "the car button to light")
        assert data(driver, "#buses tr[aria-current=true]", "bus") == "car"
        assert text(driver, "#buses tr[aria-current=true] th") == "car"
        tap(driver, '[data-address="/monitor/system"] [data-choice="studio"]')
        until_daemon("/monitor/system", ["studio"])
        for address in ("/monitor/dim/on", "/monitor/cut", "/monitor/mono", "/monitor/swap",
                        "/monitor/reference/on", "/player/play"):  # fmt: skip
            button = f'button[data-address="{address}"]'
            tap(driver, button)
            until_daemon(address, [1])
            wait(lambda b=button: pressed(driver, b) == "true", 1.0, f"{address} lit")
            if address == "/monitor/cut":  # nothing heard: the meters read silence
                wait(lambda: text(driver, "#momentary") == "–", 3.0, "a dash for silence")
                assert data(driver, "#tile-momentary", "state") == "none"
            tap(driver, button)
            until_daemon(address, [0])
            wait(lambda b=button: pressed(driver, b) == "false", 1.0, f"{address} dark")
        for address, choice, back in (("/monitor/source", "ref", "mix"),
                                      ("/monitor/source", "ext", "mix"),
                                      ("/monitor/solo", "left", "off"),
                                      ("/monitor/solo", "right", "off")):  # fmt: skip
            tap(driver, f'[data-address="{address}"] [data-choice="{choice}"]')
            until_daemon(address, [choice])
            tap(driver, f'[data-address="{address}"] [data-choice="{back}"]')
            until_daemon(address, [back])
        # faders on the page: the daemon takes the value the page shows
        for address, fraction in (("/ch/4/fader", -0.25), ("/monitor/level", 0.3)):
            before = ask(address)[0]
            tap_slider(driver, f'[data-address="{address}"] input', fraction)
            wait(lambda a=address, b=before: abs(ask(a)[0] - b) > 1.0, 2.0, f"{address} moved")
            time.sleep(0.1)  # the last value sent has arrived
            (value,) = ask(address)
            readout = text(driver, f'[data-address="{address}"] output')
            assert number(readout) == pytest.approx(value, abs=0.06), (address, readout)
        oscsend("/monitor/level", "f", "0")

        # scenes: saved from the page, listed on the page and by the daemon, recalled
        driver.find_element(By.ID, "scene-name").send_keys("verse")
        tap(driver, '#scene-save button[type="submit"]')
        wait(lambda: "verse" in ask("/snapshot/list"), 2.0, "the scene saved")
        wait(lambda: exists(driver, '[data-scene="verse"]'), 2.0, "the scene listed")
        oscsend("/ch/1/fader", "f", "-3")
        wait(lambda: data(driver, ch1, "value") == "-3", 1.0, "the page's fader at -3")
        tap(driver, '[data-scene="verse"]')
        until_daemon("/ch/1/fader", [-12.0])
        wait(lambda: data(driver, ch1, "value") == "-12", 1.0, "the page's fader back at -12")

        # a tap on another page shows on this one within 100 ms
        mono = 'button[data-address="/monitor/mono"]'
        js(driver, WATCH, mono, "1", "monoAt")
        first = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.get(URL)
        wait(lambda: link(driver) == "live", 10.0, "the second page")
        button = driver.find_element(By.CSS_SELECTOR, mono)
        js(driver, "arguments[0].scrollIntoView({block: 'center'})", button)
        js(driver, TAPPED_AT, mono)
        button.click()
        until_daemon("/monitor/mono", [1])
        tapped_at = js(driver, "return window.tappedAt")
        driver.close()
        driver.switch_to.window(first)
        shown_at = wait(lambda: js(driver, "return window.monoAt"), 2.0, "mono from the other page")
        assert shown_at - tapped_at < 100, f"{shown_at - tapped_at} ms"
        tap(driver, mono)
        until_daemon("/monitor/mono", [0])

        # what a person sees, at the top of the page
        js(driver, "window.scrollTo(0, 0)")
        time.sleep(0.3)
        shot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(shot))
        with Image.open(shot) as image:
            assert image.size == (390, 844)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert len(colours) > 50, f"{len(colours)} colours: a blank page?"
        assert max(n for n, _ in colours) < 0.9 * 390 * 844

        # meters: at least 20 frames a second, each drawn; colours by the target
        before = js(driver, "return {...window.studiod.stats}")
        x_max = js(driver, "return window.studiod.trend.chart.scales.x.max")
        time.sleep(1.0)
        after = js(driver, "return {...window.studiod.stats}")
        assert after["loudnessFrames"] - before["loudnessFrames"] >= 20
        assert after["draws"] - before["draws"] >= 20
        check_tiles(driver, target, seen)
        rows = js(driver, BUS_ROWS)
        buses = ["master", *(m.name for m in demo_session(48000).systems)]
        assert [r[0] for r in rows] == buses
        master, studio = rows[0], rows[buses.index("studio")]
        assert number(master[1]) is not None and number(studio[4]) is not None
        inputs = js(driver, INPUT_ROWS)
        assert len(inputs) == len(dashboard["channels"])
        clips = ask("/meters/inputs")[3::4]
        for (re_text, state, clip_text), clipped in zip(inputs, clips, strict=True):
            re_db = number(re_text)
            if re_db is not None and abs(abs(re_db) - INPUT_NEAR_DB) > 0.05:
                expected = "ok" if abs(re_db) <= INPUT_NEAR_DB else (
                    "near" if re_db > 0 else "under")  # fmt: skip
                assert state == expected, (re_text, state)
            assert int(clip_text) == clipped
        assert any(number(r[0]) is not None for r in inputs)
        ticks = js(driver, "return [...document.querySelectorAll('#inputs .ref')]"
                   ".map((t) => t.style.left)")  # fmt: skip
        assert ticks == ["70%"] * len(inputs)  # -18 dBFS on -60 … 0
        assert "No calibrated output" in text(driver, "#dose")

        # the history: uPlot, the target band, the last hour, moving on with the clock
        chart = js(driver, CHART)
        assert chart["series"][1:5] == ["momentary", "short-term", "integrated", "true peak"]
        assert chart["strokes"][1:5] == [
            "rgba(120, 170, 220, 0.45)", "#6cc4ff", "#e8edf2", "rgba(255, 120, 90, 0.8)",
        ]  # fmt: skip
        assert chart["dash"] == [6, 4]  # integrated
        high = target["integrated_lufs"] + target["tolerance_lu"]
        assert chart["bands"] == 1 and chart["band"] == [high, high - 2 * target["tolerance_lu"]]
        assert chart["points"] >= 3 and chart["canvas"] >= 300
        assert chart["span"] == pytest.approx(3600, abs=5)
        assert chart["max"] > x_max

        # a true-peak alert: the tile goes red, the banner, the list and the history show it
        integrated_before = number(text(driver, "#integrated"))
        read_at = time.monotonic()
        alerts_before = int(data(driver, "#history", "alerts"))
        oscsend("/master/limiter/on", "i", "0")
        oscsend("/master/fader", "f", "10")
        wait(lambda: data(driver, "#tile-truepeak", "state") == "over", 3.0, "a red true peak")
        banner = '#alert-banner .alert[data-kind="true_peak"]'
        wait(lambda: exists(driver, banner), 4.0, "the true peak alert in the banner")
        assert js(driver, "return document.getElementById('alert-banner').hidden") is False
        assert "master" in text(driver, banner) or "studio" in text(driver, banner)
        assert js(driver, "return getComputedStyle(document.querySelector(arguments[0]))"
                  ".borderLeftColor", banner) == AMBER  # fmt: skip
        assert exists(driver, '#alerts li[data-kind="true_peak"]')
        assert int(data(driver, "#history", "alerts")) > alerts_before
        pixel = wait(lambda: js(driver, ALERT_PIXEL), 2.0, "the alert on the chart")
        assert all(abs(a - b) <= 12 for a, b in zip(pixel, (240, 180, 41, 255), strict=True)), pixel
        wait(lambda: data(driver, "#tile-momentary", "state") == "over", 3.0, "a red loudness")
        check_tiles(driver, target, seen)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - read_at)))
        integrated_after = number(text(driver, "#integrated"))
        assert integrated_before is not None and integrated_after is not None
        assert integrated_after > integrated_before  # the page follows the meter
        check_tiles(driver, target, seen)
        oscsend("/master/fader", "f", "-6")
        oscsend("/master/limiter/on", "i", "1")  # the alert clears after [alerts] clear_s
        # the demo is quieter than the target, and its true peak well under the ceiling
        assert {("integrated", "under"), ("truepeak", "ok")} <= seen, seen
        assert {("momentary", "over"), ("truepeak", "over")} <= seen, seen

        # the left side's polarity inverted: the correlation goes below 0 and red
        oscsend("/monitor/polarity", "i", "1")
        wait(lambda: data(driver, "#tile-correlation", "state") == "over", 4.0, "red correlation")
        assert number(text(driver, "#correlation")) < 0
        oscsend("/monitor/polarity", "i", "0")

        for seconds in (21600, 86400):
            tap(driver, f'[data-range="{seconds}"]')
            wait(lambda s=seconds: js(driver, "const c = window.studiod.trend.chart; "
                                      "return c.scales.x.max - c.scales.x.min") > s - 10,
                 3.0, f"{seconds} s of history")  # fmt: skip
            assert pressed(driver, f'[data-range="{seconds}"]') == "true"
        asked = js(driver, HISTORY_REQUESTS)
        queries = [parse_qs(urlsplit(u).query) for u in asked]
        assert [float(q["to"][0]) - float(q["from"][0]) for q in queries] == [3600, 21600, 86400]
        assert all(q["bus"] == ["master"] for q in queries)

        wait(lambda: not exists(driver, banner), 12.0, "the alert to leave the banner")
        listed = js(driver, ALERT_ROWS)
        assert listed[0][0] == "clear" and listed[-1][0] == "warning"  # newest first
        assert all(re.fullmatch(r"\d\d:\d\d:\d\d", t) for _, t in listed)

        # the banner's colours for the other severities (messages as the daemon sends them)
        for severity, colour in (("critical", RED), ("info", BLUE)):
            js(driver, "window.studiod.receive({address: '/alert', args: ['device', "
               "arguments[0], 'device', 'a test']})", severity)  # fmt: skip
            alert = f'#alert-banner .alert[data-severity="{severity}"]'
            assert js(driver, "return getComputedStyle(document.querySelector(arguments[0]))"
                      ".borderLeftColor", alert) == colour  # fmt: skip
        js(driver, "window.studiod.receive({address: '/alert', args: ['device', 'clear', "
           "'device', 'back']})")  # fmt: skip

        # nothing from outside the daemon; the namespace and start-up state read once (no
        # polling); no refusal, a clean console, big enough targets
        resources = js(driver, "return performance.getEntriesByType('resource')"
                       ".map((e) => e.name)")  # fmt: skip
        assert resources and all(r.startswith(ORIGIN) for r in resources), resources
        assert resources.count(ORIGIN) == 1
        assert resources.count(ORIGIN + "ui/api/dashboard") == 1
        assert driver.current_url == URL
        assert js(driver, "return window.studiod.stats.errors") == []
        assert severe_console(driver) == []
        assert too_small(driver) == []
        # a wider screen: two columns
        assert len(js(driver, COLUMNS).split()) == 1
        wide = {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", wide)
        wait(lambda: len(js(driver, COLUMNS).split()) == 2, 2.0, "two columns")
    finally:
        if driver is not None:
            driver.quit()
        code = stop(demo)
    assert code == 0, log.read_text()


# -- a daemon on every interface, with a password, a talkback input, a calibrated output ------
CONFIG = """
[audio]
backend = "virtual"
[session]
[[session.channel]]
name = "vocal"
inputs = 1
[[session.channel]]
name = "guitar"
inputs = [2, 3]
{more}
[session.monitor]
talkback_input = 4
[[session.monitor.system]]
name = "studio"
outputs = [1, 2]
[[session.monitor.system]]
name = "phones"
outputs = [3, 4]
additive = true
cue = true
[state]
dir = "state"
[log]
stats_interval_s = 0
[osc]
host = "0.0.0.0"
allow = ["127.0.0.1/32"]
password = "{password}"
[mdns]
enabled = false
[midi]
enabled = false
[loudness]
spl_at_minus20dbfs = {{ studio = 83.0 }}
"""
KEYS = """[[session.channel]]
name = "keys"
inputs = 5
"""


def start_daemon(config: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studiod.daemon.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
        )  # fmt: skip

    def up():
        assert proc.poll() is None, log.read_text()
        try:
            return get_json("/ui/api/dashboard")
        except OSError:
            return None

    wait(up, 60.0, "studiod run to serve the dashboard", step=0.05)
    return proc


def status_from(source: str) -> int:
    """The HTTP status of GET /ui/ for a client at ``source`` (a loopback address)."""
    conn = http.client.HTTPConnection("127.0.0.1", 9001, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/ui/")
        return conn.getresponse().status
    finally:
        conn.close()


@netns
def test_dashboard_password_and_reconnect(tmp_path):
    assert inside()
    assert OscConfig().host == "127.0.0.1"  # unless [osc] host says otherwise
    config = tmp_path / "studio.toml"
    config.write_text(CONFIG.format(password=PASSWORD, more=""))
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    driver = None
    try:
        assert "web: http://0.0.0.0:9001/" in log.read_text()
        assert status_from("127.0.0.2") == 403  # not in allow
        assert status_from("127.0.0.1") == 200

        driver = chromium()
        driver.get(URL)
        dialog_open = "return document.getElementById('auth').open"
        wait(lambda: js(driver, dialog_open), 10.0, "the password question")
        # only what this session has: a talkback, no reference player (no ext inputs)
        assert "player" not in get_json("/")["CONTENTS"]
        assert exists(driver, 'button[data-address="/talkback/on"]')
        assert not exists(driver, '[data-address="/player/play"]')

        # watching only: the daemon refuses changes until the password is given
        tap(driver, "#auth-cancel")
        assert not js(driver, dialog_open)
        assert js(driver, "return document.body.classList.contains('locked')")
        assert js(driver, "return window.studiod.stats.errors") == []
        tap(driver, 'button[data-address="/monitor/dim/on"]')
        wait(lambda: "refused" in text(driver, "#toast"), 2.0, "a refusal")
        assert js(driver, "return document.getElementById('toast').hidden") is False
        (refusal,) = js(driver, "return window.studiod.stats.errors")
        assert refusal.startswith("/monitor/dim/on: read-only")
        assert ask("/monitor/dim/on") == [0]

        # a wrong password is asked again; the right one unlocks
        tap(driver, "#unlock")
        assert js(driver, dialog_open)
        driver.find_element(By.ID, "password").send_keys("sesame")
        tap(driver, "#auth-ok")
        wait(lambda: js(driver, dialog_open) and js(
            driver, "return !document.getElementById('auth-error').hidden"), 2.0,
            "the question again, with 'wrong password'")  # fmt: skip
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        tap(driver, "#auth-ok")
        wait(lambda: not js(driver, "return document.body.classList.contains('locked')"), 2.0,
             "the page unlocked")  # fmt: skip
        assert not js(driver, dialog_open)
        talkback = 'button[data-address="/talkback/on"]'
        tap(driver, talkback)
        until_daemon("/talkback/on", [1])
        wait(lambda: pressed(driver, talkback) == "true", 1.0, "the talkback button lit")
        tap(driver, talkback)
        until_daemon("/talkback/on", [0])

        # the noise dose of the calibrated output, as the daemon reports it
        bus, percent = ask("/meters/dose")
        assert bus == "studio"
        row = '#dose .dose[data-bus="studio"] .percent'
        wait(lambda: number(text(driver, row)) == pytest.approx(percent, abs=0.06), 2.0,
             "the dose")  # fmt: skip
        assert js(driver, "return document.querySelectorAll('#dose .dose').length") == 1

        # a reload with another session: the page rebuilds itself
        config.write_text(CONFIG.format(password=PASSWORD, more=KEYS))
        daemon.send_signal(signal.SIGHUP)
        keys = '[data-address="/ch/3/fader"] .name'
        wait(lambda: exists(driver, keys), 10.0, "the new channel's fader")
        assert text(driver, keys) == "keys"

        # the daemon goes away and comes back: the page reconnects, unlocks, follows
        stop(daemon)
        wait(lambda: link(driver) == "offline", 5.0, "the page to see the daemon gone")
        assert text(driver, "#link") == "reconnecting"
        daemon = start_daemon(config, log)
        wait(lambda: link(driver) == "live", BACKOFF_MAX_S + 1.0, "the page to reconnect")
        assert js(driver, "return window.studiod.stats.reconnects") >= 1
        oscsend("/ch/2/fader", "f", "-7")
        wait(lambda: data(driver, '[data-address="/ch/2/fader"]', "value") == "-7", 1.0,
             "the page to follow a change after reconnecting")  # fmt: skip
        before = ask("/monitor/cut")[0]  # the page shows the daemon's values again
        assert pressed(driver, 'button[data-address="/monitor/cut"]') == str(bool(before)).lower()
        # the page gave the password again by itself
        wait(lambda: not js(driver, "return document.body.classList.contains('locked')"), 2.0,
             "the page unlocked again")  # fmt: skip
        assert not js(driver, dialog_open)
        tap(driver, 'button[data-address="/monitor/cut"]')
        until_daemon("/monitor/cut", [1 - before])
        # while the daemon was away the browser logged failed connections; nothing else
        assert severe_console(driver, ignore=("ERR_CONNECTION_REFUSED", "WebSocket")) == []
    finally:
        if driver is not None:
            driver.quit()
        stop(daemon)
