"""Prompts that do not lose work (issue 12, item 4), driven with a scripted prompt.

Each answer is checked against its property's schema as it is typed and asked again with a
one-line reason; each prompt says the format and gives an example; ``now`` is the current UTC
time for a date-time; codes match in any case and are written in the schema's spelling; a
TLP:RED message is not left forwardable by a default; the admiralty scale offered is the
standard A to F; a failed publish's answers can be kept as a 0600 draft.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfshare.registry.book import shipped
from tfshare.registry.schema import Schema
from tfshare.workflows.bodies import (
    Prompter,
    body_json,
    is_draft,
    normalise_choice,
    prompt_missing,
    save_draft,
)

NOW = dt.datetime(2026, 5, 1, 12, 30, 15, 250_000, tzinfo=dt.UTC)


def _schema(name: str) -> Schema:
    schema = shipped().lookup(name)
    assert schema is not None
    return schema


TIP = _schema("tf.tip_summary/1")
ALERT = _schema("tf.alert/1")
RED_FLAG = _schema("tf.red_flag/1")


class Script:
    """A person at the prompts: answers per field path, in order; records what was said."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = {path: iter(texts) for path, texts in answers.items()}
        self.asked: list[str] = []
        self.offered: dict[str, list[str] | None] = {}
        self.said: list[str] = []

    def ask(self, path: str, offered: list[str] | None) -> str:
        self.asked.append(path)
        self.offered[path] = offered
        return next(self.answers[path])

    def prompter(self) -> Prompter:
        return Prompter(ask=self.ask, say=self.said.append, now=lambda: NOW)

    def said_about(self, path: str) -> list[str]:
        """The lines said from ``path``'s first prompt on."""
        first = next(i for i, line in enumerate(self.said) if line.startswith(f"{path}:"))
        return self.said[first:]


def _tip_answers(**changes: list[str]) -> dict[str, list[str]]:
    answers = {
        "source_type": ["hotline"],
        "received": ["2026-11-21T09:00:00Z"],
        "summary": ["A call."],
        "handling.tlp": ["AMBER"],
        "grading.system": ["admiralty-6x6"],
        "grading.source": ["B"],
        "grading.information": ["2"],
    }
    answers.update(changes)
    return answers


def _built(schema: Schema, script: Script, fields: tuple[str, ...] = ()) -> dict[str, object]:
    data = body_json(schema.document, base=None, fields=list(fields), prompt=script.prompter())
    out: dict[str, object] = msgspec.to_builtins(schema.from_json(data))
    return out


def test_a_bad_date_is_asked_again_with_the_reason_and_now_is_the_current_utc_time() -> None:
    """'yesterday' for received is refused at once, with one line saying how to write a
    date-time; the question comes again, and 'now' is the clock's time in the canonical
    RFC 3339 form (UTC, whole seconds, Z) the schema's pattern takes."""
    script = Script(_tip_answers(received=["yesterday", "NOW"]))
    body = _built(TIP, script)
    assert body["received"] == "2026-05-01T12:30:15Z"
    assert script.asked.count("received") == 2
    refusal = [line for line in script.said if line.startswith("received: not a date")]
    assert refusal == [
        "received: not a date and time: write it as 2026-11-21T09:00:00Z (RFC 3339), or 'now'"
    ]


def test_now_is_converted_to_utc_from_a_clock_in_another_zone() -> None:
    """A local clock's 'now' is written in UTC."""
    script = Script(_tip_answers(received=["now"]))
    prompter = script.prompter()
    prompter.now = lambda: dt.datetime(
        2026, 5, 1, 14, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))
    )
    data = body_json(TIP.document, base=None, fields=[], prompt=prompter)
    assert json.loads(data)["received"] == "2026-05-01T12:00:00Z"


def test_each_prompt_says_the_format_and_an_example() -> None:
    """Before each question: what the field is, its format, and an example (the schema's
    own example where it has one)."""
    script = Script(_tip_answers())
    _built(TIP, script)
    received = script.said_about("received")
    assert received[0].startswith("received: When the sender received the tip")
    assert received[1].startswith("  format: a date and time, RFC 3339")
    assert "'now'" in received[1]
    assert received[2] == "  e.g. 2026-11-21T09:42:00Z"  # the schema's example
    summary = script.said_about("summary")
    assert summary[1] == "  format: text from 1 to 4000 characters"
    assert summary[2].startswith("  e.g. ")


def test_a_pattern_field_is_checked_as_typed_and_its_example_shown() -> None:
    """where.country must be two capitals: 'Netherlands' is refused naming the pattern."""
    answers = {
        "title": ["Transfer tonight"],
        "summary": ["Seen at the station."],
        "severity": ["HIGH"],
        "category": ["Child-Trafficking"],
        "where.country": ["Netherlands", "NL"],
        "handling.tlp": ["tlp:amber+strict"],
        "grading.system": ["EUROPOL-4x4"],
        "grading.source": ["x"],
        "grading.information": ["4"],
    }
    script = Script(answers)
    body = _built(ALERT, script)
    assert script.asked.count("where.country") == 2
    assert "where.country: does not match ^[A-Z]{2}$" in " ".join(script.said)
    assert "  e.g. NL" in script.said_about("where.country")
    # Codes typed in any case, and TLP's own "TLP:" prefix, are the schema's spelling.
    assert (body["severity"], body["category"]) == ("high", "child-trafficking")
    assert body["handling"]["tlp"] == "AMBER+STRICT"  # type: ignore[index]
    assert body["grading"] == {"system": "europol-4x4", "source": "X", "information": "4"}


@pytest.mark.parametrize(
    ("path", "answers", "reason"),
    [
        ("handling.tlp", ["PURPLE", "RED"], "handling.tlp: not one of CLEAR, GREEN, AMBER"),
        ("summary", ["", "A call."], "summary: a value is needed here"),
        ("grading.information", ["7", "2"], "grading.information: not one of 1, 2, 3, 4, 5, 6"),
        ("source_type", ["phone", "hotline"], "source_type: not one of hotline, community"),
    ],
)
def test_an_answer_outside_the_schema_is_asked_again_with_a_one_line_reason(
    path: str, answers: list[str], reason: str
) -> None:
    """Enums, required text: the first answer is refused with its reason, the second taken."""
    script = Script(_tip_answers(**{path: answers}))
    _built(TIP, script)
    assert script.asked.count(path) == 2
    assert any(line.startswith(reason) for line in script.said), script.said
    assert all("\n" not in line for line in script.said)


def test_numbers_and_lists_are_checked_item_by_item() -> None:
    """A red flag's indicators: a comma-separated list, each item checked against the
    indicator-code pattern; a bad item refuses the whole answer, naming the item."""
    answers = {
        "indicators": [
            "ilo:debt-bondage, debt",
            "ilo:debt-bondage, htcds:control:withheld-documents",
        ],
        "entity.kind": ["phone"],
        "entity.value": ["+31 6 1234 5678"],
        "context": ["Seen in three ads."],
        "confidence": ["medium"],
        "handling.tlp": ["GREEN"],
        "grading.system": ["uk-3x5x2"],
        "grading.source": ["2"],
        "grading.intelligence": ["b"],
        "grading.handling": ["p"],
    }
    script = Script(answers)
    body = _built(RED_FLAG, script)
    assert body["indicators"] == ["ilo:debt-bondage", "htcds:control:withheld-documents"]
    assert script.asked.count("indicators") == 2
    assert any(line.startswith("indicators: does not match") for line in script.said)
    assert "format: a list from 1 to 20, separated by commas" in " ".join(script.said)


def test_a_given_value_that_is_not_valid_is_asked_for_again() -> None:
    """On a terminal a resumed draft or a --field with a bad value is not carried to the
    final validation: it is asked for again (a draft kept after a failure resumes)."""
    base = json.dumps({"received": "yesterday", "summary": "A call."}).encode()
    script = Script(_tip_answers(received=["now"]))
    data = body_json(TIP.document, base=base, fields=[], prompt=script.prompter())
    assert json.loads(data)["received"] == "2026-05-01T12:30:15Z"
    assert "received: the value given is not valid; type it again" in script.said
    assert "summary" not in script.asked  # valid: not asked again


def test_a_red_message_is_not_left_forwardable_by_a_default() -> None:
    """TLP:RED with no no_forward given: no_forward true (the schema's default false would
    let tfshare reshare it), said on the terminal; the other defaults are said too."""
    script = Script(_tip_answers(**{"handling.tlp": ["red"]}))
    body = _built(TIP, script)
    assert body["handling"] == {"tlp": "RED", "no_forward": True}  # pap, code: defaults
    assert any(
        line.startswith("handling.no_forward: true, because TLP:RED") for line in script.said
    )
    assert "handling: the schema's defaults apply: pap AMBER, code H1" in script.said


def test_a_red_message_from_fields_gets_no_forward_and_an_explicit_false_stays() -> None:
    """Without prompts too; a sender who says no_forward=false is not overruled, and an
    AMBER message keeps the schema's default."""
    example = json.loads(json.dumps(TIP.document["examples"][0]))
    example["handling"] = {"tlp": "AMBER"}
    base = json.dumps(example).encode()
    red = body_json(TIP.document, base=base, fields=["handling.tlp=RED"], prompt=None)
    assert json.loads(red)["handling"] == {"tlp": "RED", "no_forward": True}
    kept = ["handling.tlp=RED", "handling.no_forward=false"]
    allowed = body_json(TIP.document, base=base, fields=kept, prompt=None)
    assert json.loads(allowed)["handling"] == {"tlp": "RED", "no_forward": False}
    amber = body_json(TIP.document, base=base, fields=[], prompt=None)
    assert json.loads(amber)["handling"] == {"tlp": "AMBER"}


def test_fields_for_codes_are_text_and_any_case() -> None:
    """--field grading.information=2 is the code "2" (not the number 2), and
    --field handling.tlp=amber is AMBER: the body validates without prompts."""
    example = json.loads(json.dumps(TIP.document["examples"][0]))
    del example["grading"]
    fields = [
        "grading.system=admiralty-6x6",
        "grading.source=b",
        "grading.information=2",
        "handling.tlp=amber",
        "source_type=Hotline",
    ]
    data = body_json(TIP.document, base=json.dumps(example).encode(), fields=fields, prompt=None)
    record = msgspec.to_builtins(TIP.from_json(data))
    assert record["grading"] == {"system": "admiralty-6x6", "source": "B", "information": "2"}
    assert (record["handling"]["tlp"], record["source_type"]) == ("AMBER", "hotline")


def test_the_admiralty_scale_offered_is_the_standard_a_to_f() -> None:
    """The NATO admiralty scale grades sources A to F: that is what is offered. The shipped
    schema also allows G (it says why: an addition some agencies use), which stays valid
    when typed and is named as an addition, not offered as part of the scale."""
    script = Script(_tip_answers(**{"grading.source": ["g"]}))
    body = _built(TIP, script)
    assert script.offered["grading.source"] == ["A", "B", "C", "D", "E", "F"]
    assert body["grading"]["source"] == "G"  # type: ignore[index]
    lines = script.said_about("grading.source")
    assert lines[1].startswith("  one of: A (completely reliable), B (usually reliable)")
    assert "G" not in lines[1].split("(any case)")[0].replace("judged", "")
    assert lines[2].startswith("  also accepted: G (deliberately deceptive")


def test_the_answers_so_far_are_the_draft_even_when_interrupted() -> None:
    """The prompter's draft is the body being filled: after an interrupt it holds every
    answer taken (what the CLI keeps)."""

    def answers() -> Iterator[str]:
        yield "hotline"
        yield "now"
        raise KeyboardInterrupt

    typed = answers()
    prompter = Prompter(ask=lambda _path, _offered: next(typed), now=lambda: NOW)
    with pytest.raises(KeyboardInterrupt):
        prompt_missing(TIP.document, {}, prompter)
    assert prompter.answered == 2
    assert prompter.draft == {"source_type": "hotline", "received": "2026-05-01T12:30:15Z"}


def test_a_draft_is_a_new_0600_file_in_a_0700_drafts_directory(tmp_path: Path) -> None:
    """save_draft writes the body as JSON (0600, under <state>/drafts, 0700), never over
    another draft; is_draft knows it, and no other file."""
    body = {"summary": "A call about the salon.", "received": "2026-05-01T12:30:15Z"}
    first = save_draft(tmp_path, body, kind="tip", now=NOW)
    second = save_draft(tmp_path, body, kind="tip", now=NOW)
    assert first != second
    assert first.parent == tmp_path / "drafts"
    assert first.name.startswith("20260501T123015Z-tip-") and first.suffix == ".json"
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    assert json.loads(first.read_text()) == body
    assert is_draft(tmp_path, first)
    other = tmp_path / "body.json"
    other.write_text("{}")
    assert not is_draft(tmp_path, other)


@given(st.sampled_from(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]), st.data())
def test_a_tlp_label_in_any_case_is_its_schema_spelling(label: str, data: st.DataObject) -> None:
    """Every casing of a TLP label, with or without the standard's "TLP:" prefix."""
    cased = "".join(c.upper() if data.draw(st.booleans()) else c.lower() for c in label)
    prefix = data.draw(st.sampled_from(["", "TLP:", "tlp:", "Tlp: "]))
    choices = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
    assert normalise_choice(prefix + cased, choices, "tlp") == label


def test_choices_that_differ_only_in_case_are_matched_exactly() -> None:
    """Where case tells codes apart, only an exact match counts; an answer that equals
    several of them apart from case names none."""
    assert normalise_choice("a", ["a", "A"], "x") == "a"
    assert normalise_choice("A", ["a", "A"], "x") == "A"
    assert normalise_choice("AB", ["ab", "Ab"], "x") is None
    assert normalise_choice("b", ["B", "b2"], "x") == "B"
