"""Files on disk: atomic, permission-correct writes and bounded reads."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfshare.errors import InputError
from tfshare.files import read_bytes, write_atomic


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that changes it."""
    previous = os.umask(0o022)
    os.umask(previous)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# write_atomic ---------------------------------------------------------------------------------


def test_write_atomic_writes_the_data(tmp_path: Path) -> None:
    """The file holds exactly the bytes written."""
    target = tmp_path / "out.bin"
    write_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"


def test_secret_file_is_0600(tmp_path: Path, umask: None) -> None:
    """A secret file is created 0600 (even with a permissive umask)."""
    os.umask(0o000)
    target = tmp_path / "agency.key"
    write_atomic(target, b"secret", secret=True)
    assert _mode(target) == 0o600


def test_public_file_is_0644(tmp_path: Path, umask: None) -> None:
    """A public file is 0644 by default."""
    os.umask(0o022)
    target = tmp_path / "agency.card"
    write_atomic(target, b"public")
    assert _mode(target) == 0o644


def test_public_file_is_0644_under_a_restrictive_umask(tmp_path: Path, umask: None) -> None:
    """A public file is 0644 even when the umask would have taken bits away."""
    os.umask(0o077)
    target = tmp_path / "agency.card"
    write_atomic(target, b"public")
    assert _mode(target) == 0o644


def test_secret_file_is_0600_under_a_restrictive_umask(tmp_path: Path, umask: None) -> None:
    """A secret file stays 0600 under a restrictive umask (no bits added or lost)."""
    os.umask(0o077)
    target = tmp_path / "agency.key"
    write_atomic(target, b"secret", secret=True)
    assert _mode(target) == 0o600


def test_secret_overwrite_of_a_public_file_is_0600(tmp_path: Path) -> None:
    """Replacing a 0644 file with a secret one leaves a 0600 file, not the old mode."""
    target = tmp_path / "agency.key"
    write_atomic(target, b"public")
    write_atomic(target, b"secret", secret=True)
    assert _mode(target) == 0o600
    assert target.read_bytes() == b"secret"


def test_overwrite_replaces_an_existing_file(tmp_path: Path) -> None:
    """By default an existing file is replaced with the new content."""
    target = tmp_path / "roster.bin"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"


def test_overwrite_false_refuses_an_existing_file(tmp_path: Path) -> None:
    """overwrite=False raises InputError when the file exists."""
    target = tmp_path / "agency.key"
    target.write_bytes(b"old key")
    with pytest.raises(InputError, match="already exists"):
        write_atomic(target, b"new key", secret=True, overwrite=False)


def test_overwrite_false_leaves_the_existing_file_untouched(tmp_path: Path) -> None:
    """After the refusal the old file keeps its content and mode."""
    target = tmp_path / "agency.key"
    target.write_bytes(b"old key")
    target.chmod(0o600)
    with pytest.raises(InputError):
        write_atomic(target, b"new key", overwrite=False)
    assert target.read_bytes() == b"old key"
    assert _mode(target) == 0o600


def test_overwrite_false_writes_a_new_file(tmp_path: Path) -> None:
    """overwrite=False creates the file when nothing is there yet."""
    target = tmp_path / "agency.key"
    write_atomic(target, b"key", secret=True, overwrite=False)
    assert target.read_bytes() == b"key"
    assert _mode(target) == 0o600


def test_overwrite_false_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    """A name that appears taken only at link time (dangling symlink) is still not clobbered."""
    target = tmp_path / "agency.key"
    target.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="already exists"):
        write_atomic(target, b"key", overwrite=False)
    assert target.is_symlink()
    assert not (tmp_path / "nowhere").exists()


def test_no_temp_file_left_after_success(tmp_path: Path) -> None:
    """A successful write leaves only the target in the directory."""
    write_atomic(tmp_path / "a.bin", b"a")
    write_atomic(tmp_path / "b.bin", b"b", secret=True, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_missing_directory_is_an_input_error(tmp_path: Path) -> None:
    """Writing into a directory that does not exist raises InputError naming it."""
    with pytest.raises(InputError, match="does not exist"):
        write_atomic(tmp_path / "missing" / "out.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_no_temp_file_left_after_a_failed_rename(tmp_path: Path) -> None:
    """When the final rename fails (target is a directory) the temp file is removed."""
    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(InputError, match="cannot write"):
        write_atomic(target, b"x")
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_no_temp_file_left_after_a_failed_link(tmp_path: Path) -> None:
    """When the no-clobber link fails the temp file is removed."""
    target = tmp_path / "agency.key"
    target.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError):
        write_atomic(target, b"key", secret=True, overwrite=False)
    assert _leftovers(tmp_path) == []


def test_no_temp_file_left_after_refusing_to_overwrite(tmp_path: Path) -> None:
    """Refusing an existing target leaves no temp file beside it."""
    target = tmp_path / "agency.key"
    target.write_bytes(b"old")
    with pytest.raises(InputError):
        write_atomic(target, b"new", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agency.key"]


# read_bytes -----------------------------------------------------------------------------------


def test_read_bytes_returns_the_content(tmp_path: Path) -> None:
    """A file within the limit is read whole."""
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    assert read_bytes(path, what="roster", limit=10) == b"12345"


def test_read_bytes_accepts_exactly_the_limit(tmp_path: Path) -> None:
    """A file of exactly ``limit`` bytes is accepted."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_bytes(path, what="roster", limit=10) == b"x" * 10


def test_read_bytes_missing_file(tmp_path: Path) -> None:
    """A missing file is an InputError naming what and where."""
    path = tmp_path / "missing.roster"
    with pytest.raises(InputError, match="does not exist") as info:
        read_bytes(path, what="roster", limit=10)
    assert "roster" in str(info.value)
    assert str(path) in str(info.value)


def test_read_bytes_directory(tmp_path: Path) -> None:
    """A directory is an InputError saying so."""
    with pytest.raises(InputError, match="is a directory"):
        read_bytes(tmp_path, what="roster", limit=10)


def test_read_bytes_over_limit(tmp_path: Path) -> None:
    """A file one byte over the limit is an InputError naming the limit."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 11)
    with pytest.raises(InputError, match="larger than 10 bytes"):
        read_bytes(path, what="roster", limit=10)


def test_read_bytes_oversize_ok_returns_limit_plus_one(tmp_path: Path) -> None:
    """With oversize_ok a large file is not an error: limit + 1 bytes come back."""
    path = tmp_path / "f"
    path.write_bytes(bytes(range(100)))
    assert read_bytes(path, what="sealed message", limit=10, oversize_ok=True) == bytes(range(11))


def test_read_bytes_oversize_ok_small_file_is_whole(tmp_path: Path) -> None:
    """With oversize_ok a file within the limit is still returned whole."""
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert read_bytes(path, what="sealed message", limit=10, oversize_ok=True) == b"abc"


def test_read_bytes_oversize_ok_still_reports_missing(tmp_path: Path) -> None:
    """oversize_ok does not hide a missing file."""
    with pytest.raises(InputError, match="does not exist"):
        read_bytes(tmp_path / "missing", what="sealed message", limit=10, oversize_ok=True)
