"""Test kit of the key manager's tests: the kit's task force with a key manager ("keyman",
role key-manager) and channel "alerts" open to both modes (epoch and direct)."""

from __future__ import annotations

import dataclasses

from tfkit import NOW_MS, TaskForce, build_taskforce, identity

from tfshare import roster as R
from tfshare.epochs import EpochKeyDelivery
from tfshare.replay import MemoryReplayStore
from tfshare.seal import Opened, ReceivePolicy, open_envelope

KM = "keyman"


def km_taskforce(*, now_ms: int = NOW_MS, direct: bool = True) -> TaskForce:
    """coord, police, ngo, labour (alerts: all read; police, labour write; tips: police
    reads), outsider, and keyman (role key-manager, reads and writes nothing); alerts allows
    direct and epoch mode (epoch only without ``direct``), tips direct only."""
    tf = build_taskforce(now_ms=now_ms)
    t = now_ms - 3_500_000
    tf.ids[KM] = identity(KM)
    signed = R.add_member(tf.signed, tf.ids[KM].card_body(), role="key-manager", now_ms=t)
    signed = R.set_channel_modes(signed, "alerts", direct=direct, epoch=True, now_ms=t)
    return dataclasses.replace(tf, signed=R.sign(signed, tf.ids["coord"]))


def edited(tf: TaskForce, signed: R.SignedRoster) -> TaskForce:
    """``tf`` with an edited roster, signed by coord."""
    return dataclasses.replace(tf, signed=R.sign(signed, tf.ids["coord"]))


def without(tf: TaskForce, agency: str, *, now_ms: int) -> TaskForce:
    """``tf`` after the coordinators removed ``agency`` (revoked, retired)."""
    return edited(tf, R.revoke(tf.signed, agency, reason="retired", now_ms=now_ms))


def trusted(tf: TaskForce, *, now_ms: int) -> R.TrustedRoster:
    roster, _ = R.verify_roster(tf.roster_bytes, anchor=tf.anchor, state=None, now_ms=now_ms)
    return roster


def open_delivery(
    tf: TaskForce,
    agency: str,
    data: bytes,
    *,
    roster: R.TrustedRoster,
    now_ms: int,
    subject: str | None = None,
) -> EpochKeyDelivery:
    """Open a key delivery as ``agency`` would (every receive check); raises ``Rejected``."""
    opened = open_envelope(
        data,
        identity=tf.ids[agency],
        roster=roster,
        replay=MemoryReplayStore(),
        schemas=tf.schemas,
        now_ms=now_ms,
        subject=subject,
        policy=ReceivePolicy(),
    )
    assert isinstance(opened, Opened)
    assert isinstance(opened.record, EpochKeyDelivery)
    return opened.record
