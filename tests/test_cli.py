"""The console script: every command has --help; bad arguments give a message, not a
traceback."""
from __future__ import annotations

import pytest

from pipelines import cli


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: shopstream" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--warehouse", "bq://only-project"], "BigQuery target must look like bq://PROJECT.DATASET"),
    (["--weights", "/nonexistent/weights.json"], "weights file /nonexistent/weights.json does not exist"),
])
def test_bad_replay_arguments_are_reported_cleanly(small_dataset, extra, message, capsys):
    assert cli.main(["replay", "--input", str(small_dataset), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_input_names_what_was_looked_for(tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["replay", "--input", str(tmp_path)])
    assert "no click_stream files under" in str(exc.value.code)


def test_unknown_arguments_are_refused_where_beam_options_are_not_accepted(capsys):
    with pytest.raises(SystemExit):
        cli.main(["rankings", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
