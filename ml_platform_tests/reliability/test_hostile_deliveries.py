"""Hostile landing deliveries that used to slip through, each a plain regression case: a file
missing a column inside a range, an empty delivery for a day upstream fills, and content that
cannot be what upstream meant (``hostile_deliveries.py``). Every one is refused naming the file
and the fault, alone and inside ranges of days (the same message every way); content encoded
differently but meaning the same rows reads as the clean delivery. What the landing sensor makes
of such files: ``test_landing_sensor_refusals.py``.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import LandingSource, PackagedSource, SourceError
from ml_platform_tests.reliability.hostile_deliveries import (
    ACCEPTED,
    BAD,
    DAYS,
    REFUSED,
    F,
    as_csv,
    as_parquet,
    day_frame,
)


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "landing"
    land_days(DAYS[0], len(DAYS), root, echo=lambda _: None)
    return root


def _deliver(root: Path, table: str, suffix: str, content: bytes) -> Path:
    for old in (root / table).glob(f"{BAD.isoformat()}.*"):
        old.unlink()
    path = root / table / f"{BAD.isoformat()}.{suffix}"
    path.write_bytes(content)
    return path


def _restore(root: Path, table: str) -> None:
    for old in (root / table).glob(f"{BAD.isoformat()}.*"):
        old.unlink()
    (root / table / f"{BAD.isoformat()}.parquet").write_bytes(as_parquet(day_frame(table)))


def _refusal(source: LandingSource, table: str, start: date, end: date) -> str:
    with pytest.raises(SourceError) as err:
        source.read_days(table, start, end)
    return str(err.value)


@pytest.mark.parametrize(("name", "table", "suffix", "content", "says"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_delivery_that_cannot_be_right_is_refused_alone_and_in_a_range(
    landing, name, table, suffix, content, says, record
):
    """Refused naming the file and the fault, with the same message alone and inside a range."""
    path = _deliver(landing, table, suffix, content())
    source = LandingSource(root=str(landing))
    try:
        alone = _refusal(source, table, BAD, BAD + timedelta(days=1))
        in_range = _refusal(source, table, DAYS[0], DAYS[-1] + timedelta(days=1))
        first_of_range = _refusal(source, table, BAD, DAYS[-1] + timedelta(days=1))
    finally:
        _restore(landing, table)
    expected = f"{path}: " + says.replace("{root}", str(landing))
    assert alone.startswith(expected) or (alone.startswith(f"{path}: ") and says in alone), alone
    assert in_range == first_of_range == alone
    record(
        fault=f"landing file: {name}",
        expected="refused naming the file and the fault, alone and inside a three-day range",
        observed=alone.replace(str(landing), "<landing>"),
        bad_input=True,
        clear_error=True,
    )


@pytest.mark.parametrize(("name", "suffix", "content"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_a_different_but_exact_encoding_is_stored_as_a_clean_delivery(landing, name, suffix, content, record):
    """Content that means exactly the clean rows reads as the clean delivery, alone and in a range."""
    clean = day_frame(F)
    _deliver(landing, F, suffix, content(clean))
    source = LandingSource(root=str(landing))
    try:
        alone = source.read_days(F, BAD, BAD + timedelta(days=1)).frame
        in_range = source.read_days(F, DAYS[0], DAYS[-1] + timedelta(days=1)).frame
    finally:
        _restore(landing, F)
    assert_frame_equal(alone, clean, check_exact=True)
    assert_frame_equal(in_range[in_range.flight_date == pd.Timestamp(BAD)].reset_index(drop=True), clean)
    record(
        fault=f"landing file: {name}",
        expected="read exactly as the clean delivery",
        observed=f"{len(alone)} rows identical to the clean delivery, alone and in a range",
    )


def test_an_empty_day_is_stored_only_once_upstream_declares_it(landing, record):
    """An empty delivery is refused until the marker says the day really has no rows."""
    path = _deliver(landing, "weather", "csv", as_csv(day_frame("weather").iloc[:0]))
    source = LandingSource(root=str(landing))
    marker = source.empty_marker("weather", BAD)
    try:
        refused = _refusal(source, "weather", DAYS[0], DAYS[-1] + timedelta(days=1))
        assert refused == f"{path}: no rows (upstream fills this day; add {marker} if it is really empty)"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        batch = source.read_days("weather", DAYS[0], DAYS[-1] + timedelta(days=1))
    finally:
        marker.unlink(missing_ok=True)
        _restore(landing, "weather")
    assert sorted(batch.frame.weather_date.dt.date.unique()) == [DAYS[0], DAYS[2]]
    record(
        fault="landing file: an empty delivery replacing a full day, then declared empty",
        expected="refused until upstream's marker declares the day empty; then stored as empty",
        observed=f"{refused.replace(str(landing), '<landing>')} | with the marker: "
        f"{len(batch.frame)} rows for the other two days, none for {BAD}",
        bad_input=True,
        clear_error=True,
    )


def test_the_year_end_without_weather_replays_and_reads(tmp_path, record):
    """2013-12-31 has no weather upstream: the replay lands it declared empty, and it reads."""
    root = tmp_path / "landing"
    land_days(date(2013, 12, 30), 2, root, echo=lambda _: None)
    source = LandingSource(root=str(root))
    weather = source.read_days("weather", date(2013, 12, 30), date(2014, 1, 1)).frame
    packaged = PackagedSource().read_days("weather", date(2013, 12, 30), date(2014, 1, 1)).frame
    assert_frame_equal(weather, packaged, check_exact=True)
    assert (root / "empty" / "weather" / "2013-12-31").exists()
    assert not (root / "empty" / "flights").exists()
    record(
        fault="the real empty day: no weather upstream for 2013-12-31",
        expected="landed with its marker and read as an empty day",
        observed=f"{len(weather)} weather rows for 2013-12-30..31, as packaged; "
        "marker empty/weather/2013-12-31",
    )
