"""`studiod demo` keeps its state in the user's state directory; `studiod log` takes
relative times as the docs write them (``--from -5m``)."""

from studiod.daemon import cli
from studiod.daemon.cmd_demo import demo_config
from studiod.daemon.cmd_log import join_relative_times


def test_demo_keeps_state_and_log_in_the_demo_folder_of_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    config = demo_config()
    assert config.state.dir == tmp_path / "studiod" / "demo"
    assert config.loudness.enabled and config.alerts.enabled


def test_relative_times_are_joined_to_their_option():
    argv = ["log", "--from", "-5m", "--to", "-30s", "--csv", "-", "--bus", "master"]
    assert join_relative_times(argv) == ["log", "--from=-5m", "--to=-30s", "--csv", "-",
                                         "--bus", "master"]  # fmt: skip
    assert join_relative_times(["log", "--from", "14:30"]) == ["log", "--from", "14:30"]


def test_log_from_minus_five_minutes_as_written(tmp_path, capsys):
    code = cli.main(["log", "--state-dir", str(tmp_path), "--from", "-5m", "--csv", "-"])
    err = capsys.readouterr().err
    assert code == 1 and "no loudness log here" in err  # not argparse's "expected one argument"
