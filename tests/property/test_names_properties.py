"""``tfshare.names``: every parser reads back exactly what its builder wrote, and nothing else
(malformed subjects and keys give None, never an exception or a guess)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfshare import names
from tfshare.encoding import NAME_PATTERN, is_name

NAME = st.from_regex(NAME_PATTERN)
# Text made of the characters subjects are made of, so that near misses are common.
SUBJECTISH = st.text(alphabet="tfch.audit_proofINBOX-ab1*>$ ", max_size=40)


@given(NAME, NAME, NAME)
def test_channel_subject_parses_back_to_its_parts(
    taskforce: str, channel: str, sender: str
) -> None:
    subject = names.channel_subject(taskforce, channel, sender)
    assert names.parse_channel_subject(subject) == (taskforce, channel, sender)
    parsed = names.parse_channel_subject(subject)
    assert parsed is not None
    assert (parsed.taskforce, parsed.channel, parsed.sender) == (taskforce, channel, sender)


@given(st.one_of(st.text(max_size=60), SUBJECTISH))
def test_parse_channel_subject_accepts_only_what_channel_subject_builds(text: str) -> None:
    parsed = names.parse_channel_subject(text)
    if parsed is not None:
        assert names.channel_subject(*parsed) == text
        assert all(is_name(part) for part in parsed)


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "tf.nl-north.ch.alerts",  # no sender
        "tf.nl-north.ch.alerts.police.extra",  # one token too many
        "tf.nl-north.ch.alerts.*",  # a wildcard is not a sender
        "tf.nl-north.ch.*.police",
        "tf.nl-north.ch.alerts.>",
        "tf.nl-north.ch..police",  # empty token
        "tf.nl-north.ch.alerts.Police",  # not a name (upper case)
        "tf.nl-north.audit.proof.police",  # an audit subject, not a channel's
        "xf.nl-north.ch.alerts.police",
        "tf.nl-north.CH.alerts.police",
        "tf.nl-north.ch.alerts.police.",
        " tf.nl-north.ch.alerts.police",
        "tf.nl-north.ch.alerts.pol ice",
        "tf.nl-north.ch.alerts." + "a" * 33,  # names are at most 32 characters
    ],
)
def test_malformed_channel_subjects_give_none(subject: str) -> None:
    assert names.parse_channel_subject(subject) is None


@given(NAME, NAME)
def test_proof_requester_is_the_agency_whose_proof_subject_it_is(
    taskforce: str, agency: str
) -> None:
    assert names.proof_requester(taskforce, names.proof_subject(taskforce, agency)) == agency


@given(NAME, st.one_of(st.text(max_size=60), SUBJECTISH))
def test_proof_requester_accepts_only_a_proof_subject(taskforce: str, text: str) -> None:
    requester = names.proof_requester(taskforce, text)
    if requester is not None:
        assert is_name(requester)
        assert names.proof_subject(taskforce, requester) == text


@given(NAME, st.from_regex(r"[A-Za-z0-9]{1,22}(\.[A-Za-z0-9]{1,8}){0,3}", fullmatch=True))
def test_inbox_owner_is_the_agency_of_the_inbox(agency: str, tokens: str) -> None:
    assert names.inbox_owner(f"{names.inbox_prefix(agency)}.{tokens}") == agency


@given(st.one_of(st.text(max_size=60), SUBJECTISH))
def test_inbox_owner_accepts_only_a_reply_subject_in_an_inbox(text: str) -> None:
    owner = names.inbox_owner(text)
    if owner is not None:
        assert is_name(owner)
        assert text.startswith(names.inbox_prefix(owner) + ".")
        assert "*" not in text and ">" not in text


@pytest.mark.parametrize(
    "subject",
    ["_INBOX_police", "_INBOX_police.", "_INBOX_.abc", "_INBOX_police.*", "_INBOX_police.>",
     "_INBOX_Police.abc", "_INBOX_police..abc", "INBOX_police.abc", "_INBOX_police.a b"],
)  # fmt: skip
def test_malformed_inbox_subjects_give_none(subject: str) -> None:
    assert names.inbox_owner(subject) is None


SCHEMA_SUBJECTS = st.from_regex(r"[a-z][a-z0-9_]{0,20}\.[a-z][a-z0-9_]{0,20}", fullmatch=True)


@given(SCHEMA_SUBJECTS, st.integers(1, 999_999))
def test_schema_key_parses_back(subject: str, version: int) -> None:
    assert names.parse_schema_key(names.schema_key(subject, version)) == (subject, version)


@given(st.text(max_size=40))
def test_parse_schema_key_accepts_only_what_schema_key_builds(text: str) -> None:
    parsed = names.parse_schema_key(text)
    if parsed is not None:
        assert names.schema_key(*parsed) == text


@given(NAME, st.text(min_size=1, max_size=30))
def test_kv_key_is_the_key_of_its_subject(taskforce: str, key: str) -> None:
    bucket = names.schema_bucket(taskforce)
    assert names.kv_key(bucket, names.kv_subject(bucket, key)) == key
    assert names.kv_key(bucket, names.kv_subject(names.roster_bucket(taskforce), key)) is None


@given(st.lists(st.tuples(NAME, NAME), min_size=2, max_size=8, unique=True))
def test_durable_names_are_distinct_per_agency_and_channel(pairs: list[tuple[str, str]]) -> None:
    """No reader's consumer on a channel is another reader's (or the audit service's)."""
    durables = {names.durable_name(agency, channel) for agency, channel in pairs}
    assert len(durables) == len(pairs)
    assert not durables & {names.audit_durable_name(agency) for agency, _ in pairs}


@given(NAME, NAME, NAME)
def test_a_channel_stream_keeps_exactly_that_channels_subjects(
    taskforce: str, channel: str, sender: str
) -> None:
    """The stream's subject filter is the channel subject with any sender."""
    (pattern,) = names.stream_subjects(taskforce, channel)
    subject = names.channel_subject(taskforce, channel, sender)
    assert pattern.split(".")[:-1] == subject.split(".")[:-1]
    assert pattern.endswith(".*")


@pytest.mark.parametrize(
    "subject",
    ["tf.nl-north.audit.proof.", "tf.nl-north.audit.proof.*", "tf.nl-north.audit.proof.>",
     "tf.nl-north.audit.proof.a.b", "tf.nl-north.audit.proof.Police", "tf.nl-north.audit.proof",
     "tf.nl-south.audit.proof.police", "tf.nl-north.audit.checkpoint"],
)  # fmt: skip
def test_malformed_proof_subjects_name_no_requester(subject: str) -> None:
    assert names.proof_requester("nl-north", subject) is None
