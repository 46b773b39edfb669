"""``tfshare schema``: list, show, validate, compat, register, export, and seal/open through a
registry of registered schema versions."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rfc8785

TASKFORCE = "tf-north"  # the task force tests/cli/conftest.py builds; a cache folder each

Run = Callable[..., subprocess.CompletedProcess[str]]
RunIn = Callable[[Path], Run]
Creds = Callable[[str], list[str]]
Result = subprocess.CompletedProcess[str]

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLES = ROOT / "examples"
SHIPPED = ("tf.alert/1", "tf.red_flag/1", "tf.tip_summary/1", "tf.receipt/1")
ONE_MIB = 1024 * 1024  # the document limit of docs/SCHEMA-PROFILE.md

# Exit codes (README).
ERROR, USAGE, REJECTED, SCHEMA, TRUST = 1, 2, 3, 5, 6


# ---------------------------------------------------------------------------------------------
# Helpers


def ok(result: Result) -> Result:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def failed(result: Result, code: int) -> str:
    """Assert exit ``code``, one error line with its hint right after, no traceback; the error."""
    assert result.returncode == code, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("tfshare: error: ")]
    hints = [line for line in lines if line.startswith("tfshare: hint: ")]
    assert len(errors) == 1, result.stderr
    assert len(hints) == 1, result.stderr
    assert lines.index(hints[0]) == lines.index(errors[0]) + 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    return errors[0]


def shipped_path(name: str) -> Path:
    subject, version = name.split("/")
    return SCHEMAS / subject / f"{version}.json"


def shipped_doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(shipped_path(name).read_text(encoding="utf-8"))
    return doc


def fingerprint(doc: dict[str, Any]) -> str:
    """SHA-256 of the RFC 8785 canonical form (docs/SCHEMA-PROFILE.md, Identity)."""
    return hashlib.sha256(rfc8785.dumps(doc)).hexdigest()


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")
    return path


def files_under(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (relative path -> content); empty if it does not exist."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def alert_v2() -> dict[str, Any]:
    """tf.alert/1 with "$id" tf.alert/2 and one optional, described property: compatible."""
    doc = shipped_doc("tf.alert/1")
    doc["$id"] = "urn:tfshare:schema:tf.alert/2"
    doc["properties"]["case_ref"] = {
        "description": "The sender's own case reference, 1 to 64 characters.",
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
    }
    return doc


def without_required_grading(doc: dict[str, Any]) -> dict[str, Any]:
    doc["required"].remove("grading")
    return doc


def without_severity_low(doc: dict[str, Any]) -> dict[str, Any]:
    doc["properties"]["severity"]["enum"].remove("low")
    return doc


def alert2_draft(change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """tf.alert/1 as tf.alert/2 with ``change`` applied."""
    doc = shipped_doc("tf.alert/1")
    doc["$id"] = "urn:tfshare:schema:tf.alert/2"
    return change(doc)


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return body


def invalid_alert() -> dict[str, Any]:
    """examples/alert.json with four failing paths."""
    body = example("alert.json")
    body["severity"] = "apocalyptic"
    body["where"]["country"] = "nl"
    body["handling"]["tlp"] = "PURPLE"
    del body["title"]
    return body


INVALID_ALERT_PATHS = ("$.severity", "$.where.country", "$.handling.tlp", "'title'")


def deep_body(path: Path, depth: int = 10_000) -> Path:
    """A well-formed JSON body whose "where" nests ``depth`` objects deep."""
    path.write_text('{"where": ' + '{"x": ' * depth + "{}" + "}" * depth + "}")
    return path


def schema_of_size(size: int) -> dict[str, Any]:
    """A compatible tf.alert/2 whose compact JSON is exactly ``size`` bytes."""
    doc = alert_v2()
    doc["properties"]["case_ref"]["description"] = ""
    padding = size - len(json.dumps(doc).encode())
    assert padding >= 0
    doc["properties"]["case_ref"]["description"] = "x" * padding
    return doc


def write_compact(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Module fixtures: tf.alert/2 registered once, and an alert sealed under it


@dataclass(frozen=True)
class Registered:
    work: Path
    registry: Path
    doc: dict[str, Any]
    result: Result


@pytest.fixture(scope="module")
def registered(
    run_in: RunIn, creds: Creds, trust: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Registered:
    """coord registers the compatible tf.alert/2 into a fresh registry directory."""
    work = tmp_path_factory.mktemp("schema-registry")
    registry = work / "registry"
    doc = alert_v2()
    source = write_json(work / "alert-2.json", doc)
    result = run_in(work)(
        "schema", "register", source, *creds("coord"), *trust, "--registry", registry
    )
    return Registered(work, registry, doc, result)


@pytest.fixture(scope="module")
def v2_envelope(run_in: RunIn, creds: Creds, trust: list[str], registered: Registered) -> Path:
    """police seals a tf.alert/2 body that uses case_ref, on "alerts", through the registry."""
    ok(registered.result)
    work = registered.work
    body = example("alert.json")
    body["case_ref"] = "NL-2026-0042"
    body_path = write_json(work / "alert-v2-body.json", body)
    out = work / "alert-v2.tfenv"
    ok(
        run_in(work)(
            "seal", *creds("police"), *trust, "--state", work / "police-state",
            "--registry", registered.registry, "--channel", "alerts",
            "--schema", "tf.alert/2", "--in", body_path, "--out", out,
        )
    )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# schema list


def test_list_shows_shipped_schemas_with_fingerprint_and_mode(run: Run) -> None:
    """schema list: one line per shipped schema, with its fingerprint prefix and FULL_TRANSITIVE."""
    lines = ok(run("schema", "list")).stdout.splitlines()
    assert len(lines) == len(SHIPPED), lines
    for name in SHIPPED:
        (line,) = [line for line in lines if line.split()[0] == name]
        assert fingerprint(shipped_doc(name))[:16] in line
        assert line.split()[-1] == "FULL_TRANSITIVE"


def test_list_json_fingerprints_are_sha256_of_rfc8785(run: Run) -> None:
    """schema list --json: one object; each fingerprint is SHA-256 of the file's RFC 8785 form."""
    (line,) = ok(run("schema", "list", "--json")).stdout.splitlines()
    rows = json.loads(line)["schemas"]
    assert sorted(row["name"] for row in rows) == sorted(SHIPPED)
    for row in rows:
        assert row["fingerprint"] == fingerprint(shipped_doc(row["name"]))
        assert row["mode"] == "FULL_TRANSITIVE"
        assert f"{row['subject']}/{row['version']}" == row["name"]


def test_list_with_roster_shows_registered_version(
    run: Run, trust: list[str], registered: Registered
) -> None:
    """schema list --roster --anchor --registry DIR shows tf.alert/2 with its fingerprint."""
    ok(registered.result)
    result = ok(run("schema", "list", *trust, "--registry", registered.registry, "--json"))
    rows = {row["name"]: row for row in json.loads(result.stdout)["schemas"]}
    assert set(rows) == {*SHIPPED, "tf.alert/2"}
    assert rows["tf.alert/2"]["fingerprint"] == fingerprint(registered.doc)
    human = ok(run("schema", "list", *trust, "--registry", registered.registry)).stdout
    assert any(line.split()[0] == "tf.alert/2" for line in human.splitlines())


def test_list_without_roster_leaves_out_registered_versions_with_a_note(
    run: Run, registered: Registered
) -> None:
    """schema list --registry DIR without --roster/--anchor shows only verified (shipped) ones."""
    ok(registered.result)
    result = ok(run("schema", "list", "--registry", registered.registry))
    assert "tf.alert/2" not in result.stdout
    assert "not shown" in result.stderr


def test_list_roster_without_anchor_is_usage(run: Run, tf: Path) -> None:
    """schema list --roster without --anchor: exit 2."""
    failed(run("schema", "list", "--roster", tf / "taskforce.roster"), USAGE)


def test_tampered_record_is_skipped_by_list_with_a_warning(
    run: Run, trust: list[str], registered: Registered, tmp_path: Path
) -> None:
    """A changed byte in a registered record: schema list skips it with a warning naming the
    file, and lists every other schema."""
    ok(registered.result)
    registry = tmp_path / "tampered"
    shutil.copytree(registered.registry, registry)
    record = registry / TASKFORCE / "tf.alert" / "2.tfschema"
    data = record.read_bytes()
    assert data.count(b"case reference") == 1
    record.write_bytes(data.replace(b"case reference", b"case REFERENCE"))
    result = ok(run("schema", "list", *trust, "--registry", registry))
    assert "tf.alert/1" in result.stdout and "tf.red_flag/1" in result.stdout
    assert "tf.alert/2" not in result.stdout
    (warning,) = [line for line in result.stderr.splitlines() if "schema_record_skipped" in line]
    assert str(record) in warning
    assert "tfshare: error" not in result.stderr


# ---------------------------------------------------------------------------------------------
# schema show


def test_show_prints_the_shipped_document(run: Run) -> None:
    """schema show tf.alert/1: stdout is the shipped document; fingerprint and mode on stderr."""
    result = ok(run("schema", "show", "tf.alert/1"))
    assert json.loads(result.stdout) == shipped_doc("tf.alert/1")
    assert fingerprint(shipped_doc("tf.alert/1")) in result.stderr
    assert "FULL_TRANSITIVE" in result.stderr


def test_show_subject_resolves_the_latest_shipped_version(run: Run) -> None:
    """schema show tf.alert (no version) prints the latest shipped version, tf.alert/1."""
    result = ok(run("schema", "show", "tf.alert"))
    assert json.loads(result.stdout) == shipped_doc("tf.alert/1")
    assert "tf.alert/1" in result.stderr


def test_show_subject_resolves_the_latest_registered_version(
    run: Run, trust: list[str], registered: Registered
) -> None:
    """schema show tf.alert with a verified registry holding tf.alert/2 prints tf.alert/2."""
    ok(registered.result)
    result = ok(run("schema", "show", "tf.alert", *trust, "--registry", registered.registry))
    assert json.loads(result.stdout) == registered.doc
    assert "tf.alert/2" in result.stderr


def test_show_unknown_schema_exit_5(run: Run) -> None:
    """schema show of an unknown name: exit 5 naming it, nothing on stdout."""
    result = run("schema", "show", "tf.nope/1")
    assert "tf.nope/1" in failed(result, SCHEMA)
    assert result.stdout == ""


# ---------------------------------------------------------------------------------------------
# schema validate


def test_validate_example_tip_summary(run: Run) -> None:
    """schema validate tf.tip_summary/1 examples/tip_summary.json: exit 0."""
    result = ok(run("schema", "validate", "tf.tip_summary/1", EXAMPLES / "tip_summary.json"))
    assert "valid tf.tip_summary/1" in result.stderr
    assert result.stdout == ""


def test_validate_names_every_failing_path(run: Run, tmp_path: Path) -> None:
    """An alert with four errors: exit 5, and the one error line names every failing path."""
    body = write_json(tmp_path / "bad.json", invalid_alert())
    error = failed(run("schema", "validate", "tf.alert/1", body), SCHEMA)
    for path in INVALID_ALERT_PATHS:
        assert path in error, path


def test_validate_deeply_nested_body_exit_5(run: Run, tmp_path: Path) -> None:
    """A body nested 10,000 levels deep: exit 5, one error line, no traceback."""
    result = run("schema", "validate", "tf.alert/1", deep_body(tmp_path / "deep.json"))
    failed(result, SCHEMA)
    assert "RecursionError" not in result.stderr


def test_validate_deeply_nested_body_is_not_called_non_json(run: Run, tmp_path: Path) -> None:
    """A 10,000-deep body is well-formed JSON: the error must not say it is "not JSON"."""
    body = deep_body(tmp_path / "deep.json")
    error = failed(run("schema", "validate", "tf.alert/1", body), SCHEMA)
    assert "not JSON" not in error


def test_validate_non_json_body_exit_5(run: Run, tmp_path: Path) -> None:
    """A body that is not JSON: exit 5."""
    body = tmp_path / "body.json"
    body.write_text("this is not JSON {")
    failed(run("schema", "validate", "tf.alert/1", body), SCHEMA)


# ---------------------------------------------------------------------------------------------
# schema compat

OLD_ALERT = shipped_path("tf.alert/1")
ENUM_REASON = '$.properties.severity.enum: value "low" removed'


def test_compat_compatible_change_exit_0(run: Run, tmp_path: Path) -> None:
    """compat tf.alert/1 with an optional property added: exit 0, "compatible" on stderr."""
    new = write_json(tmp_path / "new.json", alert_v2())
    result = ok(run("schema", "compat", OLD_ALERT, new))
    assert "compatible under FULL_TRANSITIVE" in result.stderr


@pytest.mark.parametrize("mode", ["FULL", "BACKWARD"])
def test_compat_enum_value_removed_refused(run: Run, tmp_path: Path, mode: str) -> None:
    """An enum value removed under FULL or BACKWARD: exit 5, the reason naming its path."""
    new = write_json(tmp_path / "new.json", alert2_draft(without_severity_low))
    result = run("schema", "compat", OLD_ALERT, new, "--mode", mode)
    assert f"not {mode}-compatible" in failed(result, SCHEMA)
    reasons = [line for line in result.stderr.splitlines() if line.startswith(ENUM_REASON)]
    assert len(reasons) == 1, result.stderr


@pytest.mark.parametrize("mode", ["FORWARD", "NONE"])
def test_compat_enum_value_removed_accepted(run: Run, tmp_path: Path, mode: str) -> None:
    """An enum value removed under FORWARD or NONE: exit 0."""
    new = write_json(tmp_path / "new.json", alert2_draft(without_severity_low))
    result = ok(run("schema", "compat", OLD_ALERT, new, "--mode", mode))
    assert f"compatible under {mode}" in result.stderr


def test_compat_json_compatible(run: Run, tmp_path: Path) -> None:
    """compat --json of a compatible change: one object, compatible true, no reasons."""
    new = write_json(tmp_path / "new.json", alert_v2())
    (line,) = ok(run("schema", "compat", OLD_ALERT, new, "--json")).stdout.splitlines()
    assert json.loads(line) == {"compatible": True, "mode": "FULL_TRANSITIVE", "reasons": []}


def test_compat_json_incompatible(run: Run, tmp_path: Path) -> None:
    """compat --json of an enum value removed: exit 5, one object with the reason."""
    new = write_json(tmp_path / "new.json", alert2_draft(without_severity_low))
    result = run("schema", "compat", OLD_ALERT, new, "--json")
    failed(result, SCHEMA)
    (line,) = result.stdout.splitlines()
    info = json.loads(line)
    assert (info["compatible"], info["mode"]) == (False, "FULL_TRANSITIVE")
    assert len(info["reasons"]) == 1
    assert info["reasons"][0].startswith(ENUM_REASON)


def test_compat_unsupported_keyword_named_with_path(run: Run, tmp_path: Path) -> None:
    """A keyword outside the profile: exit 5, the error naming the keyword and its path."""
    doc = alert_v2()
    doc["properties"]["summary"]["contentEncoding"] = "base64"
    new = write_json(tmp_path / "new.json", doc)
    error = failed(run("schema", "compat", OLD_ALERT, new), SCHEMA)
    assert "contentEncoding" in error
    assert "$.properties.summary" in error


def test_compat_ten_megabyte_schema_refused(run: Run, tmp_path: Path) -> None:
    """A 10 MB schema file: refused as a schema over the size limit (exit 5), saying so."""
    new = write_compact(tmp_path / "big.json", schema_of_size(10 * ONE_MIB))
    error = failed(run("schema", "compat", OLD_ALERT, new), SCHEMA)
    assert "larger than" in error


def test_compat_oversize_schema_exit_code_does_not_depend_on_how_much(
    run: Run, tmp_path: Path
) -> None:
    """Schemas 1 byte and 10 MB over the 1 MiB limit are refused with the same exit code."""
    barely = write_compact(tmp_path / "barely.json", schema_of_size(ONE_MIB + 1))
    huge = write_compact(tmp_path / "huge.json", schema_of_size(10 * ONE_MIB))
    codes = {
        name: run("schema", "compat", OLD_ALERT, path).returncode
        for name, path in (("1 MiB + 1 byte", barely), ("10 MiB", huge))
    }
    assert len(set(codes.values())) == 1, codes


# ---------------------------------------------------------------------------------------------
# schema register


def test_register_compatible_change(registered: Registered) -> None:
    """register a compatible tf.alert change as tf.alert/2: exit 0, its name and fingerprint."""
    result = ok(registered.result)
    assert "registered tf.alert/2" in result.stderr
    assert "tf.alert/2" in result.stdout
    assert fingerprint(registered.doc) in result.stdout
    assert (registered.registry / TASKFORCE / "tf.alert" / "2.tfschema").is_file()


INCOMPATIBLE = {
    "required-removed": (without_required_grading, "$.properties.grading"),
    "enum-value-removed": (without_severity_low, ENUM_REASON),
}


def _register(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path, agency: str, doc: object
) -> tuple[Result, Path, dict[str, bytes]]:
    """Register ``doc`` as ``agency`` into an empty, existing registry directory."""
    registry = tmp_path / "registry"
    registry.mkdir()
    before = files_under(registry)
    source = write_json(tmp_path / "draft.json", doc)
    result = run("schema", "register", source, *creds(agency), *trust, "--registry", registry)
    return result, registry, before


@pytest.mark.parametrize("case", sorted(INCOMPATIBLE))
def test_register_incompatible_change_refused(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path, case: str
) -> None:
    """register an incompatible tf.alert/2: exit 5, the error giving the reason and its path."""
    change, reason = INCOMPATIBLE[case]
    result, _, _ = _register(run, creds, trust, tmp_path, "coord", alert2_draft(change))
    error = failed(result, SCHEMA)
    assert "not FULL_TRANSITIVE-compatible" in error
    assert reason in error


@pytest.mark.parametrize("case", [*sorted(INCOMPATIBLE), "non-coordinator"])
def test_register_refusal_writes_nothing(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path, case: str
) -> None:
    """A refused registration leaves the registry directory exactly as it was."""
    if case == "non-coordinator":
        agency, doc = "police", alert_v2()
    else:
        agency, doc = "coord", alert2_draft(INCOMPATIBLE[case][0])
    result, registry, before = _register(run, creds, trust, tmp_path, agency, doc)
    assert result.returncode != 0, result.stderr
    assert files_under(registry) == before


def test_register_by_non_coordinator_exit_6(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """register with a member's (police) key: exit 6, the error saying it is not a coordinator."""
    result, _, _ = _register(run, creds, trust, tmp_path, "police", alert_v2())
    error = failed(result, TRUST)
    assert "police" in error
    assert "coordinator" in error


# ---------------------------------------------------------------------------------------------
# seal and open through the registry


def test_open_registered_schema_delivers_new_field(
    run: Run, creds: Creds, trust: list[str], registered: Registered, v2_envelope: Path
) -> None:
    """ngo opens the tf.alert/2 envelope with the registry: delivered, case_ref in the body."""
    result = ok(
        run(
            "open", v2_envelope, *creds("ngo"), *trust, "--state", "ngo-state",
            "--registry", registered.registry, "--json",
        )
    )  # fmt: skip
    info = json.loads(result.stdout)
    assert info["outcome"] == "delivered"
    assert info["schema"] == "tf.alert/2"
    assert info["schema_fp"] == fingerprint(registered.doc)
    assert info["body"]["case_ref"] == "NL-2026-0042"


def test_open_with_empty_registry_rejects_e_schema(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path, v2_envelope: Path
) -> None:
    """A receiver whose registry does not know tf.alert/2 rejects the envelope: exit 3, E_SCHEMA."""
    empty = tmp_path / "empty-registry"
    empty.mkdir()
    result = run(
        "open", v2_envelope, *creds("labour"), *trust, "--state", "labour-state",
        "--registry", empty,
    )  # fmt: skip
    assert "E_SCHEMA" in failed(result, REJECTED)
    assert "NL-2026-0042" not in result.stdout


def _seal_invalid(run: Run, creds: Creds, trust: list[str], tmp_path: Path) -> tuple[Result, Path]:
    body = write_json(tmp_path / "bad.json", invalid_alert())
    out = tmp_path / "bad.tfenv"
    result = run(
        "seal", *creds("police"), *trust, "--state", "police-state", "--channel", "alerts",
        "--schema", "tf.alert/1", "--in", body, "--out", out,
    )  # fmt: skip
    return result, out


def test_seal_invalid_body_names_every_failing_path(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """seal of an invalid alert: exit 5, the error line naming every failing path."""
    result, _ = _seal_invalid(run, creds, trust, tmp_path)
    error = failed(result, SCHEMA)
    for path in INVALID_ALERT_PATHS:
        assert path in error, path


def test_seal_invalid_body_writes_no_envelope(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """seal of an invalid alert writes no .tfenv file."""
    result, out = _seal_invalid(run, creds, trust, tmp_path)
    assert result.returncode != 0
    assert not out.exists()
    assert list(tmp_path.rglob("*.tfenv")) == []


# ---------------------------------------------------------------------------------------------
# schema export


def test_export_writes_the_shipped_documents(run: Run, tmp_path: Path) -> None:
    """schema export DIR writes DIR/<subject>/<version>.json, equal to the shipped documents."""
    out = tmp_path / "exported"
    result = ok(run("schema", "export", out))
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(f"{name}.json" for name in SHIPPED)
    for name in SHIPPED:
        exported = out / f"{name}.json"
        assert json.loads(exported.read_text(encoding="utf-8")) == shipped_doc(name)
        assert str(exported) in result.stdout.splitlines()


def test_export_with_registry_includes_registered_version(
    run: Run, trust: list[str], registered: Registered, tmp_path: Path
) -> None:
    """schema export with a verified registry also writes tf.alert/2.json."""
    ok(registered.result)
    out = tmp_path / "exported"
    ok(run("schema", "export", out, *trust, "--registry", registered.registry))
    exported = json.loads((out / "tf.alert" / "2.json").read_text(encoding="utf-8"))
    assert exported == registered.doc
    assert "case_ref" in exported["properties"]


def test_export_into_a_file_is_a_file_error(run: Run, tmp_path: Path) -> None:
    """schema export to a path that is a regular file: exit 1 (a file problem), not 5."""
    target = tmp_path / "not-a-directory"
    target.write_text("x")
    error = failed(run("schema", "export", target), ERROR)
    assert str(target) in error
