"""churn_scoring.read_feature_windows: the 30-day per-feature windows aggregated in PostgreSQL equal
churn_features.feature_usage over the same feature days read into pandas (the path scoring used before),
exactly, on random feature days (gaps, repeated days, null uses, features outside the catalogue, suppliers
without feature days, as-of days before any activity and repeated rows), also when the as-of days span
several queries; and the feature matrix built from them is the one built the previous way."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.health import churn_scoring
from cs_pipeline.health.churn_features import build_features, feature_usage
from cs_pipeline.health.churn_scoring import read_feature_windows

from tests.health.test_churn_features import FEATURES, random_inputs

TABLE = "churn_windows_test.feature_days"


def _store(conn, fd: pd.DataFrame) -> None:
    conn.execute("DROP SCHEMA IF EXISTS churn_windows_test CASCADE")
    conn.execute("CREATE SCHEMA churn_windows_test")
    conn.execute(f"CREATE TABLE {TABLE} (supplier_id text, feature text, activity_date date, uses double precision)")
    with conn.cursor().copy(f"COPY {TABLE} (supplier_id, feature, activity_date, uses) FROM STDIN") as copy:
        for row in fd.itertuples(index=False):
            copy.write_row([row.supplier_id, row.feature, row.activity_date, None if np.isnan(row.uses) else row.uses])


@pytest.mark.parametrize("seed, per_query", [(1, 32), (2, 7), (3, 1)])
def test_windows_in_postgres_equal_the_pandas_windows(conn, monkeypatch, seed, per_query):
    rows, fd = random_inputs(seed)
    numeric_looking = {"s1": "001", "s2": "2", "s3": "1e3"}  # ids that read_csv would parse as numbers
    rows["supplier_id"], fd["supplier_id"] = rows["supplier_id"].replace(numeric_looking), \
        fd["supplier_id"].replace(numeric_looking)
    rows = pd.concat([rows, rows.iloc[:20]], ignore_index=True)  # repeated rows
    _store(conn, fd)
    monkeypatch.setattr(churn_scoring, "WINDOW_DAYS_PER_QUERY", per_query)
    got = read_feature_windows(conn, rows, FEATURES, table=TABLE, adoption=None)
    expected = feature_usage(rows, fd, FEATURES)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got["feat__forms__uses_30d"].gt(0).any() and got["feat__forms__uses_30d"].eq(0).any()
    assert got.loc[rows["supplier_id"].eq("001").to_numpy()].to_numpy().sum() > 0
    assert (got["feat__never_used__active_days_30d"] == 0).all()
    engagement = rows.assign(events_30d=np.arange(len(rows), dtype=np.int64))
    pd.testing.assert_frame_equal(build_features(engagement, None, FEATURES, usage=got),
                                  build_features(engagement, fd, FEATURES), check_exact=True)
    conn.rollback()


def test_windows_without_the_table_or_rows_are_zeros(conn):
    rows, _ = random_inputs(5)
    got = read_feature_windows(conn, rows, FEATURES, table="churn_windows_test.absent")
    assert got.shape == (len(rows), 2 * len(FEATURES)) and (got.to_numpy() == 0).all()
    assert read_feature_windows(conn, rows.iloc[:0], FEATURES, table=TABLE).shape == (0, 2 * len(FEATURES))


ADOPTION = "churn_windows_test.adoption"


def _store_adoption(conn, suppliers: list[str], features: list[str], day, uses: int,
                    without: tuple[str, str] | None = None) -> None:
    conn.execute(f"CREATE TABLE {ADOPTION} (supplier_id text, feature text, as_of_date date, uses_30d integer, "
                 "active_days_30d integer)")
    with conn.cursor().copy(f"COPY {ADOPTION} FROM STDIN") as copy:
        for supplier in suppliers:
            for feature in features:
                if (supplier, feature) != without:
                    copy.write_row([supplier, feature, day, uses, 3])


@pytest.mark.parametrize("gap", [None, "supplier", "feature", "one_pair"])
def test_rows_of_the_adoption_marts_day_take_its_sums_unless_it_lacks_one(conn, gap):
    """The rows of the day the feature-adoption mart is as of take its uses_30d / active_days_30d (planted
    here as 1,000 and 3 so that the source shows); other days are aggregated from the feature days; a mart
    without one of that day's suppliers or one catalogue feature, or without one supplier's row for one
    feature, is not used at all."""
    rows, fd = random_inputs(7)
    _store(conn, fd)
    day = rows["as_of_date"].mode()[0]
    mine = (rows["as_of_date"] == day).to_numpy()
    suppliers = sorted(set(rows.loc[mine, "supplier_id"]) | {"someone_else"})
    features = [f for f in FEATURES if f != "journeys"] if gap == "feature" else FEATURES
    _store_adoption(conn, suppliers[1:] if gap == "supplier" else suppliers, features, day, 1000,
                    without=(suppliers[0], FEATURES[1]) if gap == "one_pair" else None)
    got = read_feature_windows(conn, rows, FEATURES, table=TABLE, adoption=ADOPTION)
    aggregated = feature_usage(rows, fd, FEATURES)
    uses = [c for c in got.columns if c.endswith("__uses_30d")]
    if gap is None:
        assert (got.loc[mine, uses] == 1000).all().all() and (got.loc[mine].drop(columns=uses) == 3).all().all()
        pd.testing.assert_frame_equal(got.loc[~mine], aggregated.loc[~mine], check_exact=True)
    else:
        pd.testing.assert_frame_equal(got, aggregated, check_exact=True)
    conn.rollback()


def test_stored_probabilities_keep_ids_days_and_values(conn):
    """churn_scoring.stored_probabilities reads binary arrays (``fetch_arrays``): ids that look like numbers stay
    the text they are, days come back as UTC midnights (whatever the server's DateStyle), probabilities exactly,
    and only the asked version and days."""
    from datetime import date

    from cs_pipeline.health.churn_scoring import stored_probabilities
    from cs_pipeline.health.churn_service import ensure_churn_tables

    ensure_churn_tables(conn)
    conn.commit()
    rows = [("v-test", date(2026, 3, 1), "001", 0.1234), ("v-test", date(2026, 3, 1), "1e3", 0.5),
            ("v-test", date(2026, 3, 2), "s 1", 0.0001), ("v-other", date(2026, 3, 1), "001", 0.9),
            ("v-test", date(2026, 2, 28), "001", 0.7)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ops.churn_model_scores (version, as_of_date, supplier_id, churn_probability) "
                        "VALUES (%s, %s, %s, %s)", rows)
    got = stored_probabilities(conn, "v-test", [date(2026, 3, 1), date(2026, 3, 2)]) \
        .sort_values(["as_of_date", "supplier_id"]).reset_index(drop=True)
    expected = pd.DataFrame({"supplier_id": np.array(["001", "1e3", "s 1"], dtype=object),
                             "as_of_date": pd.to_datetime(["2026-03-01", "2026-03-01", "2026-03-02"]).to_numpy(dtype="datetime64[ns]"),
                             "churn_probability": [0.1234, 0.5, 0.0001]})
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert stored_probabilities(conn, "v-test", [date(2026, 4, 1)]).empty
    conn.execute("SET LOCAL DateStyle = 'SQL, DMY'")  # a server whose dates print as 01/03/2026
    again = stored_probabilities(conn, "v-test", [date(2026, 3, 1), date(2026, 3, 2)]) \
        .sort_values(["as_of_date", "supplier_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, expected, check_exact=True)
    # A day both hold for a supplier: marts.customer_health's row comes first (the caller keeps the first),
    # whatever order the server reads the two tables in.
    from cs_pipeline.health.store import ensure_health_tables

    ensure_health_tables(conn)
    conn.execute("INSERT INTO marts.customer_health (supplier_id, as_of_date, components, segment, scored, "
                 "scorecard_version, calculated_at, churn_probability, churn_model_version) "
                 "VALUES ('001', '2026-03-01', '{}', 'all', true, 'ws168', now(), 0.4242, 'v-test')")
    both = stored_probabilities(conn, "v-test", [date(2026, 3, 1)])
    first = both.drop_duplicates(["supplier_id", "as_of_date"], keep="first").set_index("supplier_id")
    assert len(both) == 3 and first.loc["001", "churn_probability"] == 0.4242
    assert first.loc["1e3", "churn_probability"] == 0.5
    conn.rollback()
