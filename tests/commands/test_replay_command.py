"""`programusers replay`: its summary line, and flags refused before it starts."""
import pytest

from programusers import cli
from programusers.commands import replay as replay_command


def test_summary_counts_only():
    assert replay_command.summary({"dead_letters_read": 5, "other_reason": 1, "now_valid": 3, "rows_written": 2,
                           "rows_deleted": 1, "still_bad_invalid_json": 1}) == (
        "5 dead letter(s) read, 1 of another reason skipped, 3 valid now: 2 row(s) written, 1 deleted; "
        "1 still bad (invalid_json=1); the dead letters stay in the topic")


@pytest.mark.parametrize("argv,message", [
    (["--since", "last week"], "is not an ISO-8601 date or time"),
    (["--reason", "no_such_reason"], "invalid choice"),
])
def test_a_flag_the_parser_cannot_read_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["replay", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_negative_batch_size_is_refused_before_any_read(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["replay", "--write-batch-bytes", "-1"])
    assert exit_.value.code == 2 and "argument --write-batch-bytes: -1 is not in 0.." in capsys.readouterr().err
