"""Fixtures shared by the daemon tests."""

import pytest


@pytest.fixture
def started(tmp_path):
    """``start(config_path=None, rig=None, notifier=None, **kw) -> (Daemon, Rig)``: a daemon
    on virtual devices (tests.daemon.test_runtime.Rig), started; closed after the test."""
    from studiod.daemon.config import load_config
    from studiod.daemon.notify import Notifier
    from studiod.daemon.runtime import Daemon
    from tests.daemon.test_runtime import Rig, write_config

    daemons = []

    def start(path=None, rig=None, notifier=None, **kw) -> tuple[Daemon, Rig]:
        rig = rig or Rig()
        daemon = Daemon(
            load_config(path or write_config(tmp_path)), device_factory=rig,
            notifier=notifier or Notifier({}), **kw,
        )  # fmt: skip
        daemons.append(daemon)
        daemon.start()
        return daemon, rig

    yield start
    for daemon in daemons:
        daemon.close()
