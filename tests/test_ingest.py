"""Ingest: CSV / Parquet / SQL in, a frame typed by the feature schema out, or a clear DataError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.db import get_engine
from data.ingest import DataError, coerce_frame, load_frame, read_sql
from data.synthetic import generate_transactions, write_frame

EXPECTED_COLUMNS = [
    "transaction_id",
    "timestamp",
    "amount",
    "avg_amount_30d",
    "hour_of_day",
    "customer_age",
    "account_age_days",
    "distance_from_home_km",
    "transactions_24h",
    "failed_logins_24h",
    "merchant_category",
    "entry_mode",
    "device_type",
    "is_foreign",
    "card_present",
    "is_fraud",
]


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return generate_transactions(2_000, seed=1)


def small_frame(rows: int = 4) -> pd.DataFrame:
    return generate_transactions(rows, seed=7)


def assert_schema_types(frame: pd.DataFrame, schema) -> None:
    assert list(frame.columns) == EXPECTED_COLUMNS
    timestamp = frame["timestamp"].dtype
    assert isinstance(timestamp, pd.DatetimeTZDtype) and str(timestamp.tz) == "UTC"
    for feature in schema.numerical + schema.boolean:
        assert frame[feature.name].dtype == np.float64, feature.name
    for feature in schema.categorical:
        column = frame[feature.name]
        assert column.dtype == object, feature.name
        assert column.dropna().map(type).eq(str).all(), feature.name


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_ingest_gives_schema_columns_and_types(fraud_schema, transactions, tmp_path, suffix):
    path = write_frame(transactions, tmp_path / f"transactions{suffix}")
    frame = load_frame(path, fraud_schema)

    assert_schema_types(frame, fraud_schema)
    assert len(frame) == len(transactions)
    assert frame["timestamp"].equals(transactions["timestamp"].astype(frame["timestamp"].dtype))
    assert np.allclose(frame["amount"], transactions["amount"])
    assert frame["customer_age"].isna().sum() == transactions["customer_age"].isna().sum() > 0
    assert frame["is_foreign"].tolist() == transactions["is_foreign"].astype(float).tolist()
    assert frame["merchant_category"].tolist() == transactions["merchant_category"].tolist()
    assert frame["is_fraud"].tolist() == transactions["is_fraud"].tolist()


def test_missing_column_is_named_with_the_file(fraud_schema, transactions, tmp_path):
    path = write_frame(transactions.drop(columns=["amount"]), tmp_path / "no_amount.csv")
    with pytest.raises(DataError, match="amount") as error:
        load_frame(path, fraud_schema)
    assert str(path) in str(error.value)


def test_every_missing_column_is_listed(fraud_schema, transactions):
    absent = ["amount", "device_type", "is_fraud"]
    with pytest.raises(DataError) as error:
        coerce_frame(transactions.drop(columns=absent), fraud_schema, origin="batch.csv")
    message = str(error.value)
    assert "batch.csv" in message
    assert all(name in message for name in absent)


def test_target_is_optional_when_not_required(fraud_schema, transactions):
    frame = coerce_frame(
        transactions.drop(columns=["is_fraud"]), fraud_schema, require_target=False
    )
    assert "is_fraud" not in frame.columns
    assert list(frame.columns) == EXPECTED_COLUMNS[:-1]


def test_header_only_csv_is_refused(fraud_schema, tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text(",".join(EXPECTED_COLUMNS) + "\n")
    with pytest.raises(DataError, match="no data rows") as error:
        load_frame(path, fraud_schema)
    assert str(path) in str(error.value)


def test_zero_row_parquet_is_refused(fraud_schema, tmp_path):
    path = write_frame(small_frame().head(0), tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="no data rows"):
        load_frame(path, fraud_schema)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_zero_byte_file_is_refused(fraud_schema, tmp_path, suffix):
    path = tmp_path / f"nothing{suffix}"
    path.touch()
    with pytest.raises(DataError, match="empty") as error:
        load_frame(path, fraud_schema)
    assert str(path) in str(error.value)


def test_unknown_extension_is_refused(fraud_schema, tmp_path):
    path = tmp_path / "transactions.xlsx"
    path.write_text("whatever")
    with pytest.raises(DataError, match=r"\.xlsx.*use \.csv or \.parquet"):
        load_frame(path, fraud_schema)


def test_missing_file_is_refused(fraud_schema, tmp_path):
    path = tmp_path / "absent.parquet"
    with pytest.raises(DataError, match="not found") as error:
        load_frame(path, fraud_schema)
    assert str(path) in str(error.value)


def test_unreadable_file_gives_one_line_error(fraud_schema, tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_text("this is not parquet\n" * 10)
    with pytest.raises(DataError, match="cannot read as Parquet") as error:
        load_frame(path, fraud_schema)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_non_numeric_value_names_column_and_value(fraud_schema, tmp_path):
    frame = small_frame()
    frame["amount"] = ["12.5", "n/a-ish", "7", "twelve"]
    path = write_frame(frame, tmp_path / "bad_amount.csv")
    with pytest.raises(DataError) as error:
        load_frame(path, fraud_schema)
    message = str(error.value)
    assert "'amount'" in message and "numeric" in message
    assert "'n/a-ish'" in message and "'twelve'" in message
    assert str(path) in message


def test_numbers_as_text_missing_values_and_infinity(fraud_schema):
    frame = small_frame().astype({"amount": object})
    frame["amount"] = ["1.5", " 2 ", None, "inf"]
    frame["distance_from_home_km"] = [np.inf, -np.inf, np.nan, 3.0]
    typed = coerce_frame(frame, fraud_schema)
    assert typed["amount"].tolist()[:2] == [1.5, 2.0]
    assert np.isnan(typed["amount"][2]) and typed["amount"][3] == np.inf
    assert typed["distance_from_home_km"].tolist()[:2] == [np.inf, -np.inf]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([True, False, True, False], [1.0, 0.0, 1.0, 0.0]),
        ([1, 0, 0, 1], [1.0, 0.0, 0.0, 1.0]),
        ([1.0, 0.0, np.nan, 1.0], [1.0, 0.0, np.nan, 1.0]),
        (["true", "FALSE", "Yes", "no"], [1.0, 0.0, 1.0, 0.0]),
        (["T", "f", None, " TRUE "], [1.0, 0.0, np.nan, 1.0]),
        ([True, None, False, "yes"], [1.0, np.nan, 0.0, 1.0]),
    ],
)
def test_boolean_variants_become_zero_or_one(fraud_schema, raw, expected):
    frame = small_frame()
    frame["is_foreign"] = pd.Series(raw, dtype=object)
    typed = coerce_frame(frame, fraud_schema)
    assert typed["is_foreign"].dtype == np.float64
    assert typed["is_foreign"].equals(pd.Series(expected, dtype="float64", name="is_foreign"))


def test_boolean_variants_survive_a_csv_round_trip(fraud_schema, tmp_path):
    frame = small_frame()
    frame["card_present"] = ["yes", "no", "", "True"]
    typed = load_frame(write_frame(frame, tmp_path / "bools.csv"), fraud_schema)
    assert typed["card_present"].tolist()[:2] == [1.0, 0.0]
    assert np.isnan(typed["card_present"][2]) and typed["card_present"][3] == 1.0


@pytest.mark.parametrize("bad", [["maybe", "yes", "no", "2"], [0, 1, 2, 1]])
def test_unparseable_boolean_names_column_and_values(fraud_schema, bad):
    frame = small_frame()
    frame["card_present"] = bad
    with pytest.raises(DataError, match="'card_present'") as error:
        coerce_frame(frame, fraud_schema)
    assert ("'maybe'" if bad[0] == "maybe" else "2") in str(error.value)


def test_extra_columns_are_dropped(fraud_schema):
    frame = small_frame()
    frame.insert(0, "internal_note", "x")
    frame["score_from_old_model"] = 0.3
    typed = coerce_frame(frame, fraud_schema)
    assert list(typed.columns) == EXPECTED_COLUMNS


def test_columns_come_back_in_schema_order(fraud_schema):
    frame = small_frame()
    shuffled = frame[list(reversed(frame.columns))]
    assert list(coerce_frame(shuffled, fraud_schema).columns) == EXPECTED_COLUMNS


def test_categorical_numbers_become_strings(fraud_schema, tmp_path):
    frame = small_frame()
    frame["merchant_category"] = [1, 2, 1, 3]
    frame["device_type"] = [5.0, np.nan, 5.0, 6.0]  # how a category column with gaps reads back
    typed = coerce_frame(frame, fraud_schema)
    assert typed["merchant_category"].tolist() == ["1", "2", "1", "3"]
    assert typed["device_type"].dtype == object
    assert typed["device_type"][0] == "5" and pd.isna(typed["device_type"][1])

    from_csv = load_frame(write_frame(frame, tmp_path / "codes.csv"), fraud_schema)
    assert from_csv["merchant_category"].tolist() == ["1", "2", "1", "3"]


def test_timestamps_are_parsed_to_utc(fraud_schema):
    frame = small_frame()
    frame["timestamp"] = [
        "2026-03-01 12:00:00",
        "2026-03-01T14:00:00+02:00",
        "2026-03-01T12:00:00Z",
        "03/01/2026 12:00",
    ]
    typed = coerce_frame(frame, fraud_schema)
    assert (typed["timestamp"] == pd.Timestamp("2026-03-01 12:00", tz="UTC")).all()


def test_unparseable_timestamp_is_refused(fraud_schema):
    frame = small_frame()
    frame["timestamp"] = ["2026-03-01", "yesterday", "2026-03-02", "soon"]
    with pytest.raises(DataError, match=r"timestamp.*'yesterday'"):
        coerce_frame(frame, fraud_schema, origin="live.csv")


def test_target_words_become_labels_and_extra_classes_are_left_to_validation(fraud_schema):
    frame = small_frame()
    frame["is_fraud"] = ["true", "false", "False", "TRUE"]
    assert coerce_frame(frame, fraud_schema)["is_fraud"].tolist() == [1, 0, 0, 1]

    frame["is_fraud"] = [0, 1, 2, 1]
    assert coerce_frame(frame, fraud_schema)["is_fraud"].tolist() == [0, 1, 2, 1]


def test_coerce_leaves_the_input_untouched(fraud_schema):
    frame = small_frame()
    before = frame.copy()
    coerce_frame(frame, fraud_schema)
    pd.testing.assert_frame_equal(frame, before)


def test_read_sql_gives_the_same_types_as_files(fraud_schema, transactions, database_url):
    transactions.head(300).to_sql(
        "transactions", con=get_engine(database_url), index=False, if_exists="replace"
    )
    # The "%" checks that a LIKE pattern reaches the database intact (psycopg2 uses %s params).
    query = "SELECT * FROM transactions WHERE transaction_id LIKE 'txn-%'"
    frame = read_sql(query, fraud_schema, url=database_url)

    assert_schema_types(frame, fraud_schema)
    assert len(frame) == 300
    expected = transactions.head(300)
    assert frame["transaction_id"].tolist() == expected["transaction_id"].tolist()
    assert (frame["timestamp"] == expected["timestamp"]).all()
    assert np.allclose(frame["amount"], expected["amount"])
    assert frame["card_present"].tolist() == expected["card_present"].astype(float).tolist()
    assert frame["is_fraud"].tolist() == expected["is_fraud"].tolist()


def test_read_sql_uses_database_url_by_default(fraud_schema, transactions):
    transactions.head(50).to_sql("live", con=get_engine(), index=False)
    frame = read_sql("SELECT * FROM live WHERE amount > 0", fraud_schema, require_target=False)
    assert len(frame) == 50


def test_read_sql_empty_result_is_an_empty_typed_frame(fraud_schema, transactions, database_url):
    transactions.head(10).to_sql("transactions", con=get_engine(database_url), index=False)
    frame = read_sql("SELECT * FROM transactions WHERE 1 = 0", fraud_schema, url=database_url)
    assert frame.empty
    assert_schema_types(frame, fraud_schema)


def test_read_sql_bad_query_is_a_data_error(fraud_schema, database_url):
    with pytest.raises(DataError, match="no_such_table") as error:
        read_sql("SELECT * FROM no_such_table", fraud_schema, url=database_url)
    assert "\n" not in str(error.value)
    assert "Traceback" not in str(error.value)
