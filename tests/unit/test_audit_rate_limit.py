"""``RateLimit``: the audit service's token bucket per requesting member, and its answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from tfkit import NOW_MS, build_taskforce

from tfshare.audit import proofs
from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import (
    E_RATE_LIMITED,
    AuditService,
    RateLimit,
    rate_limited_response,
)
from tfshare.broker import proof_subject


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_the_rate() -> None:
    clock = Clock()
    limit = RateLimit(rate=10, burst=5, clock=clock)
    assert [limit.allow("ngo") for _ in range(7)] == [True] * 5 + [False] * 2
    clock.now += 0.15  # one and a half tokens back
    assert [limit.allow("ngo") for _ in range(2)] == [True, False]
    clock.now += 60  # refills up to the burst, not beyond
    assert [limit.allow("ngo") for _ in range(6)] == [True] * 5 + [False]


def test_each_member_has_its_own_bucket() -> None:
    limit = RateLimit(rate=1, burst=2, clock=Clock())
    assert [limit.allow("ngo") for _ in range(3)] == [True, True, False]
    assert [limit.allow("labour") for _ in range(2)] == [True, True]


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"rate": -1}, {"burst": 0.5}])
def test_nonsense_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_the_limited_answer_is_a_proof_response_error_clients_read() -> None:
    data = rate_limited_response("nl-north", "ngo", RateLimit(rate=20, burst=40))
    response = proofs.decode_response(data)
    assert isinstance(response.answer, proofs.ErrorAnswer)
    assert response.answer.code == E_RATE_LIMITED
    assert "at most 20 a second" in response.answer.message


def test_the_service_limits_the_member_named_by_its_proof_subject_only(tmp_path: Path) -> None:
    """The share spent is that of the member whose proof subject the request came on (the
    broker lets only that member publish there); a reply inbox of another member is refused
    outright, so naming a victim's inbox spends nobody's share and gets no answer."""
    tf = build_taskforce()
    service = AuditService(identity=tf.ids["coord"], roster=tf.trusted(),
                           roster_bytes=tf.roster_bytes,
                           store=AuditStore(tmp_path / "audit.db"),
                           url="nats://127.0.0.1:1", clock=lambda: NOW_MS,
                           proof_limit=RateLimit(rate=1e-9, burst=2))  # fmt: skip
    request = proofs.encode_request(proofs.inclusion_request("nl-north", index=0))

    def ask(agency: str, reply: str) -> str:
        assert service.reply_allowed(proof_subject("nl-north", agency), reply)
        answer = proofs.decode_response(service.answer_request(request)).answer
        return answer.code if isinstance(answer, proofs.ErrorAnswer) else "proof"

    assert [ask("ngo", "_INBOX_ngo.a1") for _ in range(3)][2] == E_RATE_LIMITED
    # ngo naming labour's inbox: refused, and labour's share is untouched.
    assert not service.reply_allowed(proof_subject("nl-north", "ngo"), "_INBOX_labour.x")
    assert ask("labour", "_INBOX_labour.b1") != E_RATE_LIMITED
    assert ask("labour", "_INBOX_labour.b2") != E_RATE_LIMITED
    outsider = proof_subject("nl-north", "outsider")
    assert not service.reply_allowed(outsider, "_INBOX_outsider.x")  # not a member
    assert not service.reply_allowed("tf.nl-north.audit.proof", "_INBOX_ngo.x")  # no requester
    assert service.stats.proofs_limited == 1
