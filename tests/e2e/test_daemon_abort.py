"""SIGABRT, which systemd sends for a missed watchdog or a stop past TimeoutStopSec
(TimeoutStopFailureMode=abort): ``studiod run`` writes every thread's Python stack to
stderr, the journal, before it dies."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.conftest import DaemonProcess
from tests.e2e.netns import inside, netns
from tests.e2e.test_osc_fuzz import CONFIG

pytestmark = pytest.mark.e2e


@netns
def test_sigabrt_leaves_every_threads_stack_in_the_log(tmp_path):
    assert inside()
    daemon = DaemonProcess.from_text(CONFIG, tmp_path)
    try:
        daemon.start()
        daemon.proc.send_signal(signal.SIGABRT)
        assert daemon.proc.wait(timeout=20) == -signal.SIGABRT
        log = daemon.log()
        assert "Fatal Python error: Aborted" in log, log
        assert log.count("most recent call first") >= 3, log  # the main thread and others
        assert "daemon/runtime.py" in log, log  # the main thread, serving
    finally:
        daemon.close()
