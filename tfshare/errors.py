"""Errors and codes: the one family every tfshare failure belongs to.

Owns: ``TfshareError`` (a message for people plus a hint of what to do), its subclasses, one per
documented exit code, and ``RejectCode``, the stable receive-side rejection codes of PROTOCOL.md.

Never: put a secret (key, seed, passphrase, plaintext) in a message, hint or repr. Messages are
built from identifiers, sizes and codes only, and ``__repr__`` repeats nothing else.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in the README; scripts depend on them."""

    OK = 0
    ERROR = 1
    USAGE = 2
    REJECTED = 3
    BROKER = 4
    VALIDATION = 5
    TRUST = 6
    INTERRUPTED = 130


class RejectCode(StrEnum):
    """Why a receiver refused an envelope or a roster. Stable: tools and logs match on them."""

    E_TOO_LARGE = "E_TOO_LARGE"
    E_MALFORMED = "E_MALFORMED"
    E_NONCANONICAL = "E_NONCANONICAL"
    E_VERSION = "E_VERSION"
    E_CHANNEL = "E_CHANNEL"
    E_STALE = "E_STALE"
    E_FUTURE = "E_FUTURE"
    E_UNKNOWN_SENDER = "E_UNKNOWN_SENDER"
    E_REVOKED = "E_REVOKED"
    E_NOT_AUTHORIZED = "E_NOT_AUTHORIZED"
    E_BAD_SIG = "E_BAD_SIG"
    E_EQUIVOCATION = "E_EQUIVOCATION"
    E_NOT_RECIPIENT = "E_NOT_RECIPIENT"
    E_WRAP = "E_WRAP"
    E_EPOCH = "E_EPOCH"
    E_COMMIT = "E_COMMIT"
    E_DECRYPT = "E_DECRYPT"
    E_SCHEMA = "E_SCHEMA"
    E_BODY = "E_BODY"
    # The receiver could not finish its checks or its bookkeeping for this envelope (a fault
    # in the receiver, or an input no check foresaw): refused, quarantined, never delivered.
    E_INTERNAL = "E_INTERNAL"
    # Roster verification (trust.md); a receiver that cannot trust its roster opens nothing.
    E_ROSTER_MALFORMED = "E_ROSTER_MALFORMED"
    E_ROSTER_SIG = "E_ROSTER_SIG"
    E_ROSTER_ROLLBACK = "E_ROSTER_ROLLBACK"
    E_ROSTER_EXPIRED = "E_ROSTER_EXPIRED"
    E_ROSTER_TASKFORCE = "E_ROSTER_TASKFORCE"


class TfshareError(Exception):
    """Base of every error tfshare reports to a person: what went wrong and what to do."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __repr__(self) -> str:
        code = f"{self.code}: " if self.code else ""
        return f"{type(self).__name__}({code}{self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled whole, whatever the subclass's constructor takes (a worker process sends
        # refusals back to its parent): the class and the attributes, nothing re-validated.
        return (_restore_error, (type(self), self.message, dict(self.__dict__)))

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class UsageError(TfshareError):
    """The command line itself is wrong (a missing flag, a bad combination)."""

    exit_code = ExitCode.USAGE


class InputError(TfshareError):
    """A file or value given to us cannot be used (missing, unreadable, of the wrong kind)."""

    exit_code = ExitCode.ERROR


class Rejected(TfshareError):
    """A receiver refused an envelope; ``code`` is the ``RejectCode``."""

    exit_code = ExitCode.REJECTED

    def __init__(self, code: RejectCode, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or _REJECT_HINT, code=code.value)
        self.reject_code = code
        # Filled in once the header decoded (claimed, not verified, before the signature).
        self.sender: str | None = None
        self.msg_id: bytes | None = None
        # E_SCHEMA only: the schema name the plaintext named, so an agent can fetch it from
        # the registry and retry. Never logged (it comes from inside the encryption).
        self.schema: str | None = None
        # E_EPOCH only: the message names an epoch newer than any key held; its key may
        # still be on its way (an agent asks for redelivery later instead of quarantining).
        self.epoch_ahead = False


_REJECT_HINT = "do not act on this message; ask the sender to resend it, or report the code"


class BrokerError(TfshareError):
    """The broker could not be reached, or did not answer in time."""

    exit_code = ExitCode.BROKER


class BrokerRefused(BrokerError):
    """The broker is there but refused the operation (permissions): retrying cannot help."""


class ValidationError(TfshareError):
    """A body or schema does not satisfy its message type; ``paths`` names every failing field."""

    exit_code = ExitCode.VALIDATION

    def __init__(self, message: str, *, hint: str, paths: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.paths = paths


class TrustError(TfshareError):
    """Keys, passphrases, cards, anchors or rosters that cannot be trusted."""

    exit_code = ExitCode.TRUST


class RosterRejected(TrustError):
    """A roster failed verification; ``code`` is the ``RejectCode`` (E_ROSTER_*)."""

    def __init__(self, code: RejectCode, message: str, *, hint: str) -> None:
        super().__init__(message, hint=hint, code=code.value)
        self.reject_code = code


def _restore_error(
    kind: type[TfshareError], message: str, state: dict[str, object]
) -> TfshareError:
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error
