"""StoreOptions as the exhaust takes them (a test of programusers/options.py, kept here until it moves to
tests/test_options.py)."""


def test_no_secret_is_a_flag_or_an_option():
    from programusers.options import StoreOptions

    names = StoreOptions([]).get_all_options(current_only=True)
    assert not [n for n in names if "password" in n and not n.endswith("password_file")]
