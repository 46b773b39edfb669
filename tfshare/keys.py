"""Agency identities: the secret ``Identity``, the public ``Card``, key ids and fingerprints.

Owns: key generation from supplied randomness, the self-signed agency card, the binding of an
agency's encryption key to its signing key, ``kid_sig``/``kid_enc``, the fingerprint people
read aloud, and the rule a display name follows (``display_name_problem``).

Never: print or repr secret material (``Identity.__repr__`` shows ids only); convert an Ed25519
key into an X25519 one (signing and encryption keys are separate, generated separately).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal, Protocol

import msgspec
import nkeys  # type: ignore[import-untyped,unused-ignore]
from nacl.exceptions import CryptoError

from tfshare import primitives
from tfshare.encoding import (
    DECODE_ERRORS,
    Bytes32,
    Bytes64,
    DisplayName,
    Name,
    Uint,
    b32,
    blake2b_256,
    decode_canonical,
    encode,
    group,
    label,
    u32,
)
from tfshare.errors import TrustError
from tfshare.visible import codepoint, hidden_chars

Random = Callable[[int], bytes]
"""A source of randomness: ``rng(n)`` returns n bytes (``os.urandom`` in production)."""

L_KID_SIG: Final = label("tfshare/v1/kid/sig")
L_KID_ENC: Final = label("tfshare/v1/kid/enc")
L_FP: Final = label("tfshare/v1/fp")
L_CARD: Final = label("tfshare/v1/card")
L_ENC_BIND: Final = label("tfshare/v1/enc-bind")
L_STATE_KEY: Final = label("tfshare/v1/state-key")

NatsUser = Annotated[str, msgspec.Meta(pattern=r"^U[A-Z2-7]{55}\Z")]


def kid_sig(sign_pk: bytes) -> bytes:
    """8-byte id of an Ed25519 public key."""
    return blake2b_256(L_KID_SIG + sign_pk)[:8]


def kid_enc(enc_pk: bytes) -> bytes:
    """8-byte id of an X25519 public key."""
    return blake2b_256(L_KID_ENC + enc_pk)[:8]


def fingerprint(sign_pk: bytes) -> str:
    """The agency fingerprint: 20 bytes of H(L(fp) || sign_pk), lowercase base32, grouped by 4."""
    return group(b32(blake2b_256(L_FP + sign_pk)[:20]))


MAX_DISPLAY_NAME: Final = 128


def display_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an agency's display name, or None if it can.

    A display name is shown next to the fingerprint people read aloud, so it must not be able
    to forge or hide lines: no control, format, separator, private-use or unassigned character
    (``tfshare.visible``: newlines, terminal escapes, bidirectional overrides and isolates,
    zero-width characters, U+2028/U+2029), no leading or trailing space, 1-128 characters.
    The reason names the character by code point and never repeats the name.
    """
    if not 1 <= len(name) <= MAX_DISPLAY_NAME:
        return f"a display name has 1-{MAX_DISPLAY_NAME} characters, this one {len(name)}"
    hidden = hidden_chars(name)
    if hidden:
        return (
            f"the display name holds {codepoint(hidden[0])} (a control, format or line-break "
            "character, which could forge or hide what a terminal shows)"
        )
    if name != name.strip():
        return "the display name starts or ends with a space"
    return None


def enc_binding_message(agency_id: str, enc_pk: bytes) -> bytes:
    """What an agency signs to say "this X25519 key is mine"; carried into the roster."""
    return L_ENC_BIND + u32(agency_id.encode()) + enc_pk


# The X25519 public keys libsodium's crypto_scalarmult refuses (has_small_order in its
# crypto_scalarmult/curve25519/ref10/x25519_ref10.c), little-endian, the top bit clear: the
# u-coordinates of the points of small order on Curve25519 and its twist -- 0 (order 4), 1
# (order 1), two of order 8, p - 1 (order 2) -- and the non-canonical spellings p (= 0) and
# p + 1 (= 1). libsodium compares all but the top bit, which X25519 ignores (RFC 7748 5).
# With any other point, a clamped scalar (a multiple of 8 below the prime orders of the curve's
# and the twist's large subgroups) gives a non-zero shared secret; so this set answers exactly
# as the scalar multiplication did, without its cost (tests/property/test_low_order_points.py).
_P25519: Final = 2**255 - 19
LOW_ORDER_X25519: Final = frozenset(
    u.to_bytes(32, "little")
    for u in (
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        _P25519 - 1,
        _P25519,
        _P25519 + 1,
    )
)


def usable_x25519_key(enc_pk: bytes) -> bool:
    """False for the low-order points (and anything libsodium refuses) that would give every
    sender an all-zero shared secret: such a key can never be a recipient.

    A set look-up (about 0.1 us) instead of a scalar multiplication (about 30 us): a roster of
    20,000 members checks 20,000 keys when first joined."""
    if not isinstance(enc_pk, bytes) or len(enc_pk) != 32:
        return False
    return enc_pk[:31] + bytes((enc_pk[31] & 0x7F,)) not in LOW_ORDER_X25519


def verify_signature(sign_pk: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification that answers True/False instead of raising."""
    if len(signature) != 64 or len(sign_pk) != 32:
        return False
    try:
        # PyNaCl exposes only the combined form: verify sig || message.
        primitives.sign_open(signature + message, sign_pk)
    except CryptoError:
        return False
    return True


RetiredKind = Literal["enc", "sign"]


@dataclass(frozen=True, slots=True)
class RetiredSecret:
    """A secret kept after a rotation until ``destroy_after_ms`` (then the key file drops it).

    ``kind`` is "enc" (an X25519 secret) or "sign" (an Ed25519 seed); ``not_after_ms`` is when it
    stopped being the current key (0 when not known); ``public_key`` is its public half (what a
    roster lists: a secret whose key the roster in force still lists as the agency's is never
    destroyed). Its repr leaves the secret out.
    """

    kind: RetiredKind
    secret: bytes = field(repr=False)
    not_after_ms: int
    destroy_after_ms: int
    public_key: bytes = field(repr=False)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a retired secret cannot be pickled")


RetiredSpec = tuple[bytes, int] | tuple[bytes, int, int]
"""A retired secret as the constructor takes it: (secret, destroy_after_ms[, not_after_ms])."""


class _RetiredLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def secret(self) -> bytes: ...
    @property
    def not_after_ms(self) -> int: ...
    @property
    def destroy_after_ms(self) -> int: ...


def retired_specs(retired: Iterable[_RetiredLike], kind: RetiredKind) -> list[RetiredSpec]:
    """The ``kind`` secrets of ``retired`` (an identity's, or a key file's), in order, as
    ``Identity`` takes them: (secret, destroy_after_ms, not_after_ms)."""
    return [(r.secret, r.destroy_after_ms, r.not_after_ms) for r in retired if r.kind == kind]


class Identity:
    """An agency's secret keys. Never printed: ``repr`` shows the agency and key ids only.

    After a rotation it holds several keys: the current encryption key and the retired ones not
    yet destroyed (a message wrapped to an old key still opens, ``x25519_kid``), and every
    signing key held (``sign_keys_held``, newest first); ``sign``/``sign_pk``/``kid_sig`` use the
    active one, the newest unless ``with_signing_key`` chose the one the roster still lists.
    """

    __slots__ = (
        "_enc_by_kid",
        "_enc_sk",
        "_nats_seed",
        "_retired",
        "_sign_by_pk",
        "_sign_order",
        "_sign_sk",
        "_state_key",
        "_variants",
        "agency_id",
        "created_ms",
        "display_name",
        "enc_pk",
        "kid_enc",
        "kid_sig",
        "sign_pk",
    )

    def __init__(
        self,
        *,
        agency_id: str,
        display_name: str,
        sign_seed: bytes,
        enc_sk: bytes,
        nats_seed: bytes,
        created_ms: int,
        state_key: bytes | None = None,
        retired_enc: Sequence[RetiredSpec] = (),
        retired_sign: Sequence[RetiredSpec] = (),
        signing_pk: bytes | None = None,
    ) -> None:
        if len(sign_seed) != 32 or len(enc_sk) != 32 or len(nats_seed) != 32:
            raise ValueError("identity keys must be 32-byte seeds")
        if state_key is not None and len(state_key) != 32:
            raise ValueError("the state key must be 32 bytes")
        self.agency_id = agency_id
        self.display_name = display_name
        self.created_ms = created_ms
        self._enc_sk = enc_sk
        self.enc_pk: bytes = primitives.scalarmult_base(enc_sk)
        self._nats_seed = nats_seed
        # Ids are used on every seal and open; hash once.
        self.kid_enc = kid_enc(self.enc_pk)
        # Derived for key files written before the state key existed (v1), then kept as is:
        # a later encryption-key rotation must not change what the agent's state is sealed under.
        self._state_key = (
            state_key if state_key is not None else blake2b_256(L_STATE_KEY, key=enc_sk)
        )
        retired = [_retired("enc", spec) for spec in retired_enc]
        retired += [_retired("sign", spec) for spec in retired_sign]
        self._retired = tuple(retired)
        # kid -> (enc_sk, enc_pk), current first: enc_kids keeps this order.
        enc_by_kid: dict[bytes, tuple[bytes, bytes]] = {self.kid_enc: (enc_sk, self.enc_pk)}
        for item in self._retired:
            if item.kind == "enc":
                enc_by_kid.setdefault(kid_enc(item.public_key), (item.secret, item.public_key))
        self._enc_by_kid = enc_by_kid
        # sign_pk -> 64-byte secret key, newest (the key file's current) first.
        sign_by_pk: dict[bytes, bytes] = {}
        for seed in [sign_seed] + [r.secret for r in self._retired if r.kind == "sign"]:
            pk, sk = primitives.sign_seed_keypair(seed)
            sign_by_pk.setdefault(pk, sk)
        self._sign_by_pk = sign_by_pk
        self._sign_order = tuple(sign_by_pk)
        active = self._sign_order[0] if signing_pk is None else signing_pk
        if active not in sign_by_pk:
            raise KeyError("this identity holds no such signing key")
        self.sign_pk = active
        self._sign_sk = sign_by_pk[active]
        self.kid_sig = kid_sig(self.sign_pk)
        self._variants: dict[bytes, Identity] = {}

    @classmethod
    def generate(cls, agency_id: str, display_name: str, *, rng: Random, now_ms: int) -> Identity:
        """A new identity from ``rng``: independent signing, encryption and NATS seeds."""
        return cls(
            agency_id=agency_id,
            display_name=display_name,
            sign_seed=rng(32),
            enc_sk=rng(32),
            nats_seed=rng(32),
            created_ms=now_ms,
        )

    def signing_with_listed(self, listed: Collection[bytes]) -> Identity:
        """This identity signing with the newest key it holds that is in ``listed`` (the
        member's signing keys in the roster the agent follows): after ``keys rotate --sign``
        the old key until the coordinators apply the rotation, then the new one. Unchanged
        when none is listed (the roster check refuses that sender anyway)."""
        for pk in self._sign_order:
            if pk in listed:
                return self.with_signing_key(pk)
        return self

    def rotated(
        self, *, rng: Random, now_ms: int, grace_ms: int, enc: bool = True, sign: bool = False
    ) -> Identity:
        """A new encryption key (``enc``) and/or signing key (``sign``) from ``rng``; each key
        replaced becomes a retired secret that served until ``now_ms`` and is destroyed after
        ``now_ms + grace_ms``. The NATS seed and the state key stay."""
        if not (enc or sign):
            raise ValueError("a rotation replaces the encryption key, the signing key or both")
        sign_seed, enc_sk, nats_seed = self.secret_material()
        destroy_after_ms = now_ms + grace_ms
        retired_enc: list[RetiredSpec] = []
        retired_sign: list[RetiredSpec] = []
        new_enc_sk, new_sign_seed = enc_sk, sign_seed
        if enc:
            new_enc_sk = rng(32)
            retired_enc.append((enc_sk, destroy_after_ms, now_ms))
        if sign:
            new_sign_seed = rng(32)
            retired_sign.append((sign_seed, destroy_after_ms, now_ms))
        # Newest first: the key replaced now, then those replaced before.
        retired_enc += retired_specs(self._retired, "enc")
        retired_sign += retired_specs(self._retired, "sign")
        return Identity(
            agency_id=self.agency_id,
            display_name=self.display_name,
            sign_seed=new_sign_seed,
            enc_sk=new_enc_sk,
            nats_seed=nats_seed,
            created_ms=self.created_ms,
            state_key=self._state_key,
            retired_enc=retired_enc,
            retired_sign=retired_sign,
        )

    def __repr__(self) -> str:
        return f"Identity(agency_id={self.agency_id!r}, kid_sig={self.kid_sig.hex()}, <secret>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("Identity holds secret keys and cannot be pickled")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.sign_pk)

    @property
    def nats_user(self) -> str:
        """The NATS user public nkey ("U..."), used only to authenticate to the broker."""
        pair = nkeys.from_seed(self.nats_seed_encoded())
        public: bytes = pair.public_key
        return public.decode("ascii")

    def nats_seed_encoded(self) -> bytes:
        """The NATS user seed in nkey text form ("SU..."); secret: for the broker connection."""
        seed: bytes = nkeys.encode_seed(self._nats_seed, nkeys.PREFIX_BYTE_USER)
        return seed

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature over message."""
        signed: bytes = primitives.sign(message, self._sign_sk)
        return signed[:64]

    def x25519(self, peer_pk: bytes) -> bytes:
        """X25519(enc_sk, peer_pk); the caller must reject an all-zero result."""
        shared: bytes = primitives.scalarmult(self._enc_sk, peer_pk)
        return shared

    def secret_material(self) -> tuple[bytes, bytes, bytes]:
        """(sign_seed, enc_sk, nats_seed) of the current keys, for the key file; nothing else
        should call this. The signing seed is the newest held, whichever one is active."""
        return self._sign_by_pk[self._sign_order[0]][:32], self._enc_sk, self._nats_seed

    def retired_secrets(self) -> tuple[RetiredSecret, ...]:
        """The retired secrets still held, for the key file; nothing else should call this."""
        return self._retired

    @property
    def state_key(self) -> bytes:
        """The 32-byte key the agent seals its state under (stable across key rotations)."""
        return self._state_key

    @property
    def enc_kids(self) -> tuple[bytes, ...]:
        """kid_enc of every encryption key held: the current one first, then retired ones."""
        return tuple(self._enc_by_kid)

    def enc_pk_of(self, kid: bytes) -> bytes:
        """The X25519 public key with id ``kid``; KeyError if this identity does not hold it."""
        return self._enc_by_kid[kid][1]

    def x25519_kid(self, kid: bytes, peer_pk: bytes) -> bytes:
        """X25519 with the secret of key ``kid`` (KeyError if not held); the caller must reject
        an all-zero result."""
        shared: bytes = primitives.scalarmult(self._enc_by_kid[kid][0], peer_pk)
        return shared

    @property
    def sign_keys_held(self) -> tuple[bytes, ...]:
        """The Ed25519 public keys this identity can sign with, newest first."""
        return self._sign_order

    def with_signing_key(self, sign_pk: bytes) -> Identity:
        """The same identity signing with ``sign_pk`` (one of ``sign_keys_held``; KeyError
        otherwise): an agent signs with the newest key its roster lists, which after a
        rotation is the old one until the coordinators apply it."""
        if sign_pk == self.sign_pk:
            return self
        # Kept: a sender during a rotation's grace picks its key on every seal.
        variant = self._variants.get(sign_pk)
        if variant is None:
            sign_seed, enc_sk, nats_seed = self.secret_material()
            variant = Identity(
                agency_id=self.agency_id,
                display_name=self.display_name,
                sign_seed=sign_seed,
                enc_sk=enc_sk,
                nats_seed=nats_seed,
                created_ms=self.created_ms,
                state_key=self._state_key,
                retired_enc=retired_specs(self._retired, "enc"),
                retired_sign=retired_specs(self._retired, "sign"),
                signing_pk=sign_pk,
            )
            self._variants[sign_pk] = variant
        return variant

    def card_body(self) -> CardBody:
        """This agency's public card contents (what ``verify_card`` returns)."""
        return CardBody(
            agency_id=self.agency_id,
            display_name=self.display_name,
            sign_pk=self.sign_pk,
            enc_pk=self.enc_pk,
            nats_user=self.nats_user,
            created_ms=self.created_ms,
            enc_bind_sig=self.sign(enc_binding_message(self.agency_id, self.enc_pk)),
        )

    def card(self) -> Card:
        """This agency's self-signed public card."""
        body_bytes = encode(self.card_body())
        return Card(body=body_bytes, self_sig=self.sign(L_CARD + u32(body_bytes)))


class CardBody(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """The public part of an agency's identity (see PROTOCOL.md, "Agency card")."""

    agency_id: Name
    display_name: DisplayName
    sign_pk: Bytes32
    enc_pk: Bytes32
    nats_user: NatsUser
    created_ms: Uint
    enc_bind_sig: Bytes64


class Card(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True, tag="tfshare-card/1"
):
    """The card file: the encoded body and the agency's signature over it."""

    body: bytes
    self_sig: Bytes64


_body_decoder: Final = msgspec.msgpack.Decoder(CardBody)


def verify_card(card: Card) -> CardBody:
    """Decode and check a card: canonical body, self-signature, encryption-key binding, and a
    display name that cannot forge what a terminal shows (``display_name_problem``)."""
    hint = "ask the agency to send its card again (tfshare keys init writes it)"
    try:
        body = decode_canonical(card.body, _body_decoder)
    except DECODE_ERRORS as exc:
        raise TrustError(f"the card is malformed ({_reason(exc)})", hint=hint) from None
    if not verify_signature(body.sign_pk, L_CARD + u32(card.body), card.self_sig):
        raise TrustError(f"the card of {body.agency_id!r} has a bad self-signature", hint=hint)
    if not usable_x25519_key(body.enc_pk):
        raise TrustError(
            f"the card of {body.agency_id!r} has an unusable encryption key", hint=hint
        )
    if not verify_signature(
        body.sign_pk, enc_binding_message(body.agency_id, body.enc_pk), body.enc_bind_sig
    ):
        raise TrustError(
            f"the card of {body.agency_id!r} does not bind its encryption key", hint=hint
        )
    problem = display_name_problem(body.display_name)
    if problem is not None:
        # Signed by its key or not, such a card is refused: its name is the impostor's tool.
        raise TrustError(
            f"the card of {body.agency_id!r} is refused: {problem}",
            hint="do not add this card; ask the agency by phone to make its card again with "
            "'tfshare keys init --name' and a plain name",
        )
    return body


def _retired(kind: RetiredKind, spec: RetiredSpec) -> RetiredSecret:
    secret, destroy_after_ms = spec[0], spec[1]
    not_after_ms = spec[2] if len(spec) == 3 else 0
    if len(secret) != 32:
        raise ValueError("identity keys must be 32-byte seeds")
    if kind == "enc":
        public_key: bytes = primitives.scalarmult_base(secret)
    else:
        public_key = primitives.sign_seed_keypair(secret)[0]
    return RetiredSecret(kind, secret, not_after_ms, destroy_after_ms, public_key)


def _reason(exc: Exception) -> str:
    # msgspec messages name the path ("Expected `bytes`, got `str` - at `$[2]`") and never
    # echo the value, so they are safe to show.
    return str(exc).split("\n", 1)[0]
