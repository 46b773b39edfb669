from __future__ import annotations

import pytest
from kmkit import KM, edited, km_taskforce, trusted
from tfkit import NOW_MS, DeterministicRng, example_json

from tfshare import roster as R
from tfshare.epochs import EpochKeyring
from tfshare.errors import TrustError
from tfshare.seal import seal


def test_a_writer_that_does_not_read_an_epoch_only_channel_is_told_why_it_cannot_send() -> None:
    base = km_taskforce(direct=False)  # "alerts" epoch only
    tf = edited(base, R.grant(base.signed, KM, channel="alerts", read=False, write=True,
                              now_ms=NOW_MS))  # fmt: skip
    schema = tf.schemas.lookup("tf.alert/1")
    assert schema is not None
    with pytest.raises(TrustError, match="writes channel 'alerts' but does not read it"):
        seal(
            identity=tf.ids[KM], roster=trusted(tf, now_ms=NOW_MS), channel="alerts", to=None,
            schema=schema, body=schema.to_body(schema.from_json(example_json("tf.alert/1"))),
            seq=1, now_ms=NOW_MS, rng=DeterministicRng("write only"), epochs=EpochKeyring(),
        )  # fmt: skip
