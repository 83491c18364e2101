"""Feature-schema loading: the shipped file, and clear errors for broken ones."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from data.schema import SchemaError, load_schema, main, parse_schema

GOOD = """\
name: toy
target: label
id: row_id
features:
  - name: x
    type: numerical
    min: 0
    max: 10
  - name: colour
    type: categorical
    categories: [red, green]
  - name: flag
    type: boolean
    nullable: true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schema.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_fraud_schema_loads(fraud_schema):
    assert fraud_schema.name == "fraud"
    assert fraud_schema.target == "is_fraud"
    assert fraud_schema.id == "transaction_id"
    assert fraud_schema.timestamp == "timestamp"
    assert 10 <= len(fraud_schema.features) <= 15
    assert {f.type for f in fraud_schema.features} == {"numerical", "categorical", "boolean"}
    assert fraud_schema.feature("amount").min == 0
    assert "travel" in fraud_schema.feature("merchant_category").categories


def test_good_schema_fields(tmp_path):
    schema = load_schema(write(tmp_path, GOOD))
    assert schema.feature_names == ["x", "colour", "flag"]
    assert [f.name for f in schema.numerical] == ["x"]
    assert schema.feature("x").max == 10.0
    assert schema.feature("colour").categories == ("red", "green")
    assert schema.feature("flag").nullable is True
    assert schema.timestamp is None


def test_unknown_type_names_line_and_field(tmp_path):
    path = write(tmp_path, GOOD.replace("type: boolean", "type: bool"))
    with pytest.raises(SchemaError) as err:
        load_schema(path)
    message = str(err.value)
    assert "line 12" in message  # the `- name: flag` entry
    assert "'flag'" in message and "unknown type 'bool'" in message
    assert "numerical, categorical, boolean" in message


def test_duplicate_feature_name(tmp_path):
    text = GOOD + "  - name: x\n    type: numerical\n"
    with pytest.raises(SchemaError, match=r"line 15: duplicate feature name 'x'"):
        load_schema(write(tmp_path, text))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("target: label\n", ""), "missing required key 'target'"),
        (lambda t: t.replace("name: toy\n", ""), "missing required key 'name'"),
        (lambda t: t.split("features:")[0] + "features: []\n", "missing required key 'features'"),
        (lambda t: t.replace("target: label", "target: x"), "'x' is the target"),
        (lambda t: t.replace("    max: 10", "    max: -1"), "min (0.0) is greater than max"),
        (lambda t: t.replace("    min: 0\n", "    min: zero\n"), "'min' must be a number"),
        (lambda t: t.replace("nullable: true", "nullable: maybe"), "'nullable' must be true"),
        (lambda t: t.replace("id: row_id", "idd: row_id"), "unknown top-level key(s) ['idd']"),
        (lambda t: t.replace("    min: 0\n", "    minimum: 0\n"), "unknown key(s) ['minimum']"),
        (lambda t: t.replace("[red, green]", "[red, red]"), "lists a value twice"),
        (
            lambda t: t.replace("type: boolean", "type: boolean\n    categories: [a]"),
            "'categories' only applies to categorical",
        ),
        (lambda t: t.replace("target: label", "target: label\ntarget: y"), "appears twice"),
        (lambda t: "- just\n- a list\n", "must be a mapping"),
        (lambda t: t.replace("features:", "features: {}\nx:"), "unknown top-level key"),
        (lambda t: "name: [unclosed\n", "not valid YAML"),
        (lambda t: t.replace("id: row_id", "id: row_id\nscore: x"), "'x' is the score"),
        (
            lambda t: t.replace("id: row_id", "id: row_id\nprediction: label"),
            "'label' is the target and cannot also be the prediction",
        ),
        (lambda t: t.replace("id: row_id", "id: row_id\nscore: 3"), "'score' must be a column"),
    ],
)
def test_schema_mistakes_get_one_clear_error(tmp_path, edit, expected):
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(SchemaError) as err:
        load_schema(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(SchemaError, match="not found"):
        load_schema(tmp_path / "nope.yaml")


def test_cli_checks_a_file(tmp_path, capsys):
    assert main([str(write(tmp_path, GOOD))]) == 0
    assert "toy: target 'label', 3 features" in capsys.readouterr().out
    assert main([str(write(tmp_path, GOOD.replace("numerical", "numeric")))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown type 'numeric'" in err
    assert "Traceback" not in err


def test_a_plain_dict_parses_like_the_file(tmp_path):
    """`parse_schema` takes a dict as in the YAML file: one built in code (or read by another
    YAML loader) used to fail with KeyError: '__line__'."""
    from_file = load_schema(write(tmp_path, GOOD))
    from_dict = parse_schema(yaml.safe_load(GOOD))
    assert from_dict == from_file
    broken = yaml.safe_load(GOOD.replace("type: boolean", "type: bool"))
    with pytest.raises(SchemaError, match=r"^feature 'flag': unknown type 'bool'"):
        parse_schema(broken)
    duplicated = yaml.safe_load(GOOD.replace("name: flag", "name: x"))
    with pytest.raises(SchemaError, match="duplicate feature name 'x'"):
        parse_schema(duplicated)


def test_prediction_and_score_columns_can_be_named(tmp_path):
    default = load_schema(write(tmp_path, GOOD))
    assert (default.prediction, default.score) == ("prediction", "score")
    named = load_schema(
        write(
            tmp_path,
            GOOD.replace("id: row_id", "id: row_id\nprediction: label_hat\nscore: p_label"),
        )
    )
    assert (named.prediction, named.score) == ("label_hat", "p_label")
