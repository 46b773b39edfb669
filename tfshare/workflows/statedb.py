"""An agency's state database, created only once the command's checks have passed.

Owns: ``open_agency_state`` (the roster verified first - against the persisted rollback
state if the database exists, against none if it does not - and only then the database
opened or created, the roster state persisted and the schema registry loaded), and
``removed_if_failed`` (a database that the failing block itself created is removed again,
with its -wal, -shm and -journal files and the directories made for it).

So a command that fails - a wrong passphrase, a roster that does not verify, a damaged
registry cache, a broker port in use - leaves no new state database behind: a later command
does not find a state it never had (and ``--state /tmp/typo`` leaves no litter).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tfshare import roster as R
from tfshare.registry.book import Registry
from tfshare.store import StateStore
from tfshare.workflows.filekinds import load_anchor, read_kind
from tfshare.workflows.rosters import load_trusted
from tfshare.workflows.schemas import load_registry, store_for

STATE_DB = "state.db"
_SIDECARS = ("-wal", "-shm", "-journal")


@contextlib.contextmanager
def removed_if_failed(db: Path) -> Iterator[None]:
    """If ``db`` does not exist yet and the block raises, remove what the block made of it:
    the file, SQLite's side files and the directories created for it (deepest first, each
    only if empty). A database that existed before is never touched. Close it in the block
    before the exception leaves."""
    existed = db.exists()
    missing_dirs = [d for d in (db.parent, *db.parent.parents) if not d.exists()]
    try:
        yield
    except BaseException:
        if not existed:
            for suffix in ("", *_SIDECARS):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            for directory in missing_dirs:  # deepest first
                try:
                    directory.rmdir()
                except OSError:
                    break  # not empty (something else was put there) or gone: leave it
        raise


def verify_before_creating(roster_path: Path, anchor_path: Path, db: Path, *, now_ms: int) -> None:
    """When ``db`` does not exist yet: verify the roster against the anchor as
    ``load_trusted`` will (with no rollback state, which is what a new database holds),
    writing nothing. A roster that would be refused is refused before the database exists."""
    if db.exists():
        return  # load_trusted verifies it against the persisted state; nothing new is made
    R.verify_roster(
        read_kind(roster_path, "roster"), anchor=load_anchor(anchor_path), state=None, now_ms=now_ms
    )


@dataclass
class AgencyState:
    """An agency's open state database, the roster verified with it, and its registry."""

    store: StateStore
    roster: R.TrustedRoster
    registry: Registry


def open_agency_state(
    state_dir: Path,
    *,
    roster_path: Path,
    anchor_path: Path,
    registry_dir: Path | None,
    now_ms: int,
) -> AgencyState:
    """Verify the roster, then open (or create) ``state_dir``/state.db, persist the roster
    state and load the registry; if any of it fails, a database made here is removed."""
    db = state_dir / STATE_DB
    verify_before_creating(roster_path, anchor_path, db, now_ms=now_ms)
    with removed_if_failed(db):
        store = StateStore(db)
        try:
            roster = load_trusted(roster_path, anchor_path, store, now_ms=now_ms)
            registry = load_registry(store_for(registry_dir, roster.taskforce), roster)
        except BaseException:
            store.close()
            raise
    return AgencyState(store, roster, registry)
