"""Profiles: one agency's setup on this machine, under $TFSHARE_HOME/profiles/NAME/.

Owns: creating a profile (new keys, or an existing key file imported), its ``config.toml``
(agency, server, file names, and the optional ``tls_ca``/``tls_cert``/``tls_key`` files and
``jetstream_domain`` of a task force past one machine), and loading it so every command can
run with ``--profile NAME`` (or ``TFSHARE_PROFILE``) instead of repeating --key/--roster/
--anchor/--server/--tls-*; explicit flags still win.

Layout: key (0600), anchor and roster copies, ``state/`` (SQLite: replay store, inbox,
quarantine, outbox, roster state) and ``config.toml``. The folder is 0700.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tfshare.encoding import is_name
from tfshare.errors import InputError, UsageError
from tfshare.files import read_bytes, write_atomic
from tfshare.urls import parse_server_url, usable_servers


def home() -> Path:
    return Path(os.environ.get("TFSHARE_HOME") or Path.home() / ".tfshare")


@dataclass(frozen=True)
class Profile:
    name: str
    folder: Path
    agency: str
    server: str  # one URL, or the cluster's nodes separated by commas
    # Entries of the config's server list left out, each with why (logged when loaded).
    skipped_servers: tuple[str, ...] = field(default=(), compare=False)
    # TLS for tls:// brokers (config.toml tls_ca, tls_cert, tls_key: absolute paths).
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The JetStream domain of the hub when this agency's server is a leaf node of it.
    jetstream_domain: str | None = None

    @property
    def key(self) -> Path:
        return self.folder / f"{self.agency}.key"

    @property
    def roster(self) -> Path:
        return self.folder / "roster.tfroster"

    @property
    def anchor(self) -> Path:
        return self.folder / "anchor.tfanchor"

    @property
    def state(self) -> Path:
        return self.folder / "state"


def _folder(name: str) -> Path:
    if not is_name(name):
        raise UsageError(
            f"{name!r} is not a valid profile name",
            hint="use 1-32 lowercase letters, digits, '-' or '_', starting with a letter",
        )
    return home() / "profiles" / name


def load(name: str) -> Profile:
    folder = _folder(name)
    path = folder / "config.toml"
    if not path.exists():
        raise UsageError(
            f"no profile {name!r} in {str(folder.parent)!r}",
            hint="create it with 'tfshare init --profile NAME ...'",
        )
    try:
        config = tomllib.loads(read_bytes(path, what="profile config", limit=64 * 1024).decode())
        agency, server = str(config["agency"]), config["server"]
    except (tomllib.TOMLDecodeError, KeyError, UnicodeDecodeError):
        raise InputError(
            f"the profile config {str(path)!r} is damaged",
            hint="fix it by hand (agency = ..., server = ...) or create the profile again",
        ) from None
    # server = "nats://a:4222,nats://b:4222" or server = ["nats://a:4222", "nats://b:4222"].
    text = ",".join(str(s) for s in server) if isinstance(server, list) else str(server)
    # A hand-edited server is checked like --server: a usage error naming it, not a timeout;
    # in a list, a bad entry is named and left out, and the others are used.
    servers, skipped = usable_servers(text, source=f"{str(path)!r}: server")
    if skipped:
        # Only then: every command loads its profile, and structlog is not light to import.
        import structlog  # noqa: PLC0415

        log = structlog.get_logger("tfshare.profiles")
        for reason in skipped:
            log.warning("profile_server_skipped", profile=name, reason=reason)
    tls = {k: _config_path(config, k, path) for k in ("tls_ca", "tls_cert", "tls_key")}
    domain = config.get("jetstream_domain")
    if domain is not None and not (isinstance(domain, str) and _DOMAIN.fullmatch(domain)):
        raise InputError(
            f"the profile config {str(path)!r}: jetstream_domain {str(domain)[:40]!r} is not a "
            "domain name",
            hint="give the hub's JetStream domain: letters, digits, '-' and '_' (e.g. tf)",
        )
    return Profile(name, folder, agency, servers, tuple(skipped), **tls, jetstream_domain=domain)


_DOMAIN = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _config_path(config: dict[str, object], name: str, path: Path) -> Path | None:
    """An optional file path of the profile config: absolute (a relative one would depend
    on where the command runs); ``~`` is expanded."""
    value = config.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InputError(
            f"the profile config {str(path)!r}: {name} is not a file path",
            hint=f'write it as {name} = "/absolute/path.pem"',
        )
    found = Path(value).expanduser()
    if not found.is_absolute():
        raise InputError(
            f"the profile config {str(path)!r}: {name} {value[:80]!r} is not an absolute path",
            hint=f'write the full path: {name} = "/absolute/path.pem"',
        )
    return found


def create(
    name: str,
    *,
    agency: str,
    server: str,
    roster: Path,
    anchor: Path,
    key: Path | None,
    passphrase: bytes,
    kdf: str,
    now_ms: int,
    allow_weak_passphrase: bool = False,
) -> Profile:
    """Create a profile: new keys (or ``key`` imported), copies of roster and anchor."""
    # Key files and cards only here: every command loads a profile, few create one (and
    # the crypto they pull in is most of a command's start-up).
    from tfshare.keyfile import read_keyfile_header  # noqa: PLC0415
    from tfshare.workflows.filekinds import read_kind  # noqa: PLC0415
    from tfshare.workflows.keys import init_keys  # noqa: PLC0415

    server = parse_server_url(server)
    folder = _folder(name)
    if folder.exists():
        raise InputError(
            f"profile {name!r} already exists ({str(folder)!r})",
            hint="choose another name, or remove the folder to start over",
        )
    read_kind(roster, "roster")
    read_kind(anchor, "anchor")
    if key is not None:
        header = read_keyfile_header(read_kind(key, "key"))
        if header.agency_id != agency:
            raise UsageError(
                f"the key file belongs to {header.agency_id!r}, not {agency!r}",
                hint="give the agency's own key file, or leave out --key to create new keys",
            )
    folder.mkdir(parents=True, mode=0o700)
    try:
        profile = Profile(name, folder, agency, server)
        if key is None:
            init_keys(
                agency,
                folder,
                display_name=None,
                passphrase=passphrase,
                kdf=kdf,
                now_ms=now_ms,
                allow_weak_passphrase=allow_weak_passphrase,
            )
        else:
            write_atomic(profile.key, read_kind(key, "key"), secret=True, overwrite=False)
        shutil.copyfile(roster, profile.roster)
        shutil.copyfile(anchor, profile.anchor)
        profile.state.mkdir(mode=0o700)
        config = f'# tfshare profile {name}\nagency = "{agency}"\nserver = "{server}"\n'
        write_atomic(folder / "config.toml", config.encode())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-made
        raise
    return profile
