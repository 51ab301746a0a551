"""io/files.py on the local filesystem (the object stores' side runs in test_object_stores.py and the
report's store tests): private folders, files that appear whole, folder listings and removal."""
import os
import stat

from programusers.io import files


def test_a_private_folder_is_entered_by_its_owner_only_even_when_it_existed(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    for folder in (tmp_path / "new" / "nested", existing):
        files.make_private_dir(str(folder))
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_published_file_replaces_the_old_one_whole_with_its_mode(tmp_path):
    staged, destination = tmp_path / "staged.csv", tmp_path / "report.csv"
    destination.write_text("old")
    staged.write_text("new report")
    files.publish(str(staged), str(destination), 0o640)
    assert destination.read_text() == "new report" and not staged.exists()
    assert stat.S_IMODE(destination.stat().st_mode) == 0o640
    assert files.same_local_filesystem(str(tmp_path), str(tmp_path))


def test_folders_are_listed_and_removed_with_their_files(tmp_path):
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shard").write_text("x")
    (tmp_path / "a-file").write_text("not a folder")
    assert files.list_dirs(str(tmp_path)) == ["a", "b"]
    assert files.list_dirs(str(tmp_path / "missing")) == []
    assert files.exists(str(tmp_path / "a" / "shard")) and not files.exists(str(tmp_path / "a" / "nothing"))
    files.remove_dir(str(tmp_path / "a"))
    assert not os.path.exists(tmp_path / "a") and files.list_dirs(str(tmp_path)) == ["b"]
    assert files.is_local(str(tmp_path)) and not files.is_local("azfs://account/container/x")
