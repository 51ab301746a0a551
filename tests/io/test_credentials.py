"""io/credentials.py: secrets come from a file (a mounted Secret) or the environment, never from a flag."""
from programusers.io.credentials import read_secret


def test_a_secret_file_wins_over_the_environment_and_its_line_end_is_no_part_of_it(monkeypatch, tmp_path):
    secret = tmp_path / "redis-password"
    secret.write_text("from-a-file\r\n")
    monkeypatch.setenv("PROGRAMUSERS_TEST_SECRET", "from-the-environment")
    assert read_secret(str(secret), "PROGRAMUSERS_TEST_SECRET") == "from-a-file"
    assert read_secret(None, "PROGRAMUSERS_TEST_SECRET") == "from-the-environment"
    monkeypatch.setenv("PROGRAMUSERS_TEST_SECRET", "")
    assert read_secret(None, "PROGRAMUSERS_TEST_SECRET") is None  # set but empty: none
