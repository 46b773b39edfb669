"""DirectoryStore: write-once versions, a compare-and-swap latest pointer, a pending folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfshare.errors import InputError, ValidationError
from tfshare.registry_store import Conflict, DirectoryStore


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "registry")


def test_get_of_a_missing_version_is_none(store: DirectoryStore) -> None:
    """Nothing registered: get is None, no subjects, no versions, no latest."""
    assert store.get("tf.alert", 1) is None
    assert store.subjects() == []
    assert store.versions("tf.alert") == []
    assert store.latest("tf.alert") is None


def test_create_then_get(store: DirectoryStore) -> None:
    """A created version reads back byte for byte, as DIR/<subject>/<version>.tfschema."""
    store.create("tf.alert", 2, b"record-2")
    assert store.get("tf.alert", 2) == b"record-2"
    assert (store.root / "tf.alert" / "2.tfschema").read_bytes() == b"record-2"


def test_create_is_write_once(store: DirectoryStore) -> None:
    """A second create of the same version is a Conflict and leaves the file unchanged."""
    store.create("tf.alert", 2, b"first")
    with pytest.raises(Conflict):
        store.create("tf.alert", 2, b"second")
    assert store.get("tf.alert", 2) == b"first"
    assert sorted(p.name for p in (store.root / "tf.alert").iterdir()) == ["2.tfschema"]


def test_create_with_the_same_bytes_is_still_a_conflict(store: DirectoryStore) -> None:
    """Write-once means write-once, even for identical content."""
    store.create("tf.alert", 2, b"same")
    with pytest.raises(Conflict):
        store.create("tf.alert", 2, b"same")


def test_conflict_is_a_validation_error() -> None:
    """Conflict belongs to the ValidationError family (exit code 5)."""
    assert issubclass(Conflict, ValidationError)


def test_set_latest_from_unset(store: DirectoryStore) -> None:
    """expected_revision 0 means unset; the first move gives revision 1."""
    store.create("tf.alert", 2, b"r")
    assert store.set_latest("tf.alert", 2, expected_revision=0) == 1
    assert store.latest("tf.alert") == (2, 1)


def test_set_latest_with_the_current_revision_moves_the_pointer(store: DirectoryStore) -> None:
    """Each successful compare-and-swap increments the revision."""
    store.create("tf.alert", 2, b"r")
    store.set_latest("tf.alert", 2, expected_revision=0)
    assert store.set_latest("tf.alert", 3, expected_revision=1) == 2
    assert store.latest("tf.alert") == (3, 2)


def test_set_latest_with_a_stale_revision_is_a_conflict(store: DirectoryStore) -> None:
    """A stale expected_revision is a Conflict and the pointer does not move."""
    store.create("tf.alert", 2, b"r")
    store.set_latest("tf.alert", 2, expected_revision=0)
    store.set_latest("tf.alert", 3, expected_revision=1)
    before = (store.root / "tf.alert" / "latest").read_bytes()
    for stale in (0, 1, 3):
        with pytest.raises(Conflict):
            store.set_latest("tf.alert", 4, expected_revision=stale)
    assert store.latest("tf.alert") == (3, 2)
    assert (store.root / "tf.alert" / "latest").read_bytes() == before


def test_two_registrars_racing_one_wins(store: DirectoryStore) -> None:
    """Two writers that read revision 0 cannot both move the pointer."""
    store.create("tf.alert", 2, b"r")
    seen = store.latest("tf.alert")
    assert seen is None
    store.set_latest("tf.alert", 2, expected_revision=0)
    with pytest.raises(Conflict):
        store.set_latest("tf.alert", 2, expected_revision=0)
    assert store.latest("tf.alert") == (2, 1)


def test_versions_ignore_pending_and_junk(store: DirectoryStore) -> None:
    """versions lists N.tfschema files only: not pending records, temp files or others."""
    store.create("tf.alert", 2, b"r2")
    store.create("tf.alert", 10, b"r10")
    folder = store.root / "tf.alert"
    for junk in ("latest.bak", "3.tfschema.bak", "x.tfschema", ".4.tfschema.abc.tmp", "5.json"):
        (folder / junk).write_bytes(b"junk")
    (folder / "6.tfschema.d").mkdir()
    pending = store.pending_path("tf.alert", 7)
    pending.parent.mkdir(parents=True)
    pending.write_bytes(b"pending")
    assert store.versions("tf.alert") == [2, 10]


def test_subjects_ignore_pending_and_junk(store: DirectoryStore) -> None:
    """subjects lists subject folders only: not pending/, files or invalid names."""
    store.create("tf.alert", 2, b"r")
    store.create("tf.red_flag", 2, b"r")
    pending = store.pending_path("tf.tip_summary", 2)
    pending.parent.mkdir(parents=True)
    pending.write_bytes(b"pending")
    (store.root / "README").write_bytes(b"junk")
    (store.root / "tf.receipt.json").write_bytes(b"junk")
    (store.root / "Not-A-Subject").mkdir()
    (store.root / ".hidden").mkdir()
    assert store.subjects() == ["tf.alert", "tf.red_flag"]


def test_pending_path_is_under_pending(store: DirectoryStore) -> None:
    """Pending records live under DIR/.pending/ (a name no subject can have)."""
    path = store.pending_path("tf.alert", 2)
    assert path == store.root / ".pending" / "tf.alert" / "2.tfschema"


@pytest.mark.parametrize("content", [b"", b"garbage", b"2", b"2 1 0", b"two 1", b"\xff\xfe"])
def test_damaged_latest_pointer_is_an_input_error(store: DirectoryStore, content: bytes) -> None:
    """A latest file that is not "<version> <revision>" is an InputError naming the subject."""
    store.create("tf.alert", 2, b"r")
    (store.root / "tf.alert" / "latest").write_bytes(content)
    with pytest.raises(InputError) as info:
        store.latest("tf.alert")
    assert "tf.alert" in str(info.value)


def test_oversized_latest_pointer_is_an_input_error(store: DirectoryStore) -> None:
    """A latest file far larger than a pointer is an InputError, not read whole."""
    store.create("tf.alert", 2, b"r")
    (store.root / "tf.alert" / "latest").write_bytes(b"2 " + b"1" * 10_000)
    with pytest.raises(InputError):
        store.latest("tf.alert")


def test_damaged_latest_pointer_blocks_set_latest(store: DirectoryStore) -> None:
    """A damaged pointer is not silently overwritten by the next registration."""
    store.create("tf.alert", 2, b"r")
    (store.root / "tf.alert" / "latest").write_bytes(b"garbage")
    with pytest.raises(InputError):
        store.set_latest("tf.alert", 2, expected_revision=0)
    assert (store.root / "tf.alert" / "latest").read_bytes() == b"garbage"


@pytest.mark.parametrize("subject", ["../escape", "tf/alert", "", "Tf.alert", ".hidden"])
def test_subject_that_is_not_a_name_is_refused(store: DirectoryStore, subject: str) -> None:
    """Subjects are checked before they become paths (no traversal)."""
    with pytest.raises(ValidationError):
        store.create(subject, 1, b"r")
    with pytest.raises(ValidationError):
        store.get(subject, 1)
    with pytest.raises(ValidationError):
        store.pending_path(subject, 1)
    assert not (store.root.parent / "escape").exists()


def test_unusable_root_is_an_input_error(tmp_path: Path) -> None:
    """A registry root that is a file is an InputError on create."""
    root = tmp_path / "file"
    root.write_bytes(b"not a directory")
    with pytest.raises(InputError):
        DirectoryStore(root).create("tf.alert", 2, b"r")


def test_subject_named_pending_does_not_vanish(store: DirectoryStore) -> None:
    """A subject called "pending" is either refused or listed, never silently hidden."""
    try:
        store.create("pending", 1, b"r")
    except ValidationError:
        return
    assert "pending" in store.subjects()
