"""Registry records travel through the broker: an agent meeting an unknown schema version
fetches its signed record, verifies it, caches it, and delivers the message."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

from livekit import make_agent, publish_as, run_agents
from tfkit import TaskForce, example_json

from tfshare.broker import BrokerProcess, channel_subject
from tfshare.registry.book import shipped
from tfshare.seal import seal
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.live import Agency
from tfshare.workflows.schemas import load_registry, publish_record, register, store_for


def _now() -> int:
    return time.time_ns() // 1_000_000


def test_unknown_schema_version_is_fetched_from_the_broker(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """ngo has never seen tf.alert/2; its agent fetches the coordinators' record from the
    broker's registry bucket and delivers police's tf.alert/2 message."""
    alert1 = shipped().lookup("tf.alert/1")
    assert alert1 is not None
    doc = copy.deepcopy(alert1.document)
    doc["$id"] = "urn:tfshare:schema:tf.alert/2"
    doc["properties"]["case_ref"] = {"type": "string", "maxLength": 64, "description": "ref"}
    path = tmp_path / "alert2.json"
    path.write_text(json.dumps(doc))
    coord_cache = store_for(tmp_path / "coord-registry", "nl-north")
    register(
        path,
        identity=live_tf.ids["coord"],
        roster=live_tf.trusted(),
        store=coord_cache,
        mode=None,
        now_ms=_now(),
    )
    publish_record(
        coord_cache,
        subject="tf.alert",
        version=2,
        identity=live_tf.ids["coord"],
        url=broker.url,
        taskforce="nl-north",
    )

    registry = load_registry(coord_cache, live_tf.trusted())
    alert2 = registry.lookup("tf.alert/2")
    assert alert2 is not None
    body = json.loads(example_json("tf.alert/1"))
    body["case_ref"] = "NL-2026-0042"
    sealed = seal(
        identity=live_tf.ids["police"],
        roster=live_tf.trusted(),
        channel="alerts",
        to=["ngo"],
        schema=alert2,
        body=alert2.to_body(alert2.from_json(json.dumps(body).encode())),
        seq=1,
        now_ms=_now(),
        rng=os.urandom,
    )
    publish_as(
        live_tf,
        "police",
        broker.url,
        channel_subject("nl-north", "alerts", "police"),
        sealed.data,
        sealed.msg_id.hex(),
    )

    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    agency = Agency(
        creds=Credentials(tmp_path / "unused.key", b""),
        roster=live_tf.trusted(),
        registry=shipped(),
        store=ngo.store,
        roster_path=tmp_path / "unused.roster",
        anchor_path=tmp_path / "unused.anchor",
        registry_dir=tmp_path / "ngo-registry",
    )
    ngo.fetch_schema = agency.fetch_schema
    run_agents([ngo], lambda: ngo.stats.delivered == 1, timeout=15)

    assert [i.schema for i in ngo.store.inbox()] == ["tf.alert/2"]
    assert not ngo.store.quarantined()
    cached = store_for(tmp_path / "ngo-registry", "nl-north")
    assert cached.versions("tf.alert") == [2]
