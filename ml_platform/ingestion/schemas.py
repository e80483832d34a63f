"""Column order, types and constraints of every raw table, declared once.

The same declaration conforms incoming frames, creates warehouse tables, drives the type and
range checks, judges landed files (``ingestion/judge.py``) and renders the table schema shown in
the Dagster UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd
from dagster import TableColumn, TableColumnConstraints, TableSchema

from ml_platform.ingestion import intraday

_PANDAS_DTYPES = {
    "DATE": "datetime64[us]",
    "TIMESTAMPTZ": "datetime64[us, UTC]",
    "BIGINT": "Int64",
    "DOUBLE": "float64",
    "VARCHAR": "string",
}


# Text upstream never sends as a value: each is a null written out by some other writer, and
# storing it would turn "unknown" into a code. Upstream writes a null as an empty field.
NULL_SPELLINGS = frozenset({"NA", "N/A", "NULL", "null", "None", "NaN", "nan", "#N/A", "-", ""})


class SchemaError(ValueError):
    """A frame does not fit its table's declared schema."""


@dataclass(frozen=True)
class Column:
    """A column and its domain: the values upstream can mean. A landed value outside it is
    refused with the file rather than stored."""

    name: str
    sql_type: str
    nullable: bool = True
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    pattern: str | None = None  # text: the whole value matches (codes are written in capitals)
    references: str | None = None  # "<reference table>.<column>" that lists every valid code
    clock: bool = False  # a local time of day written hhmm (0..2400, minutes below 60)
    filled: bool = False  # an outcome: a day of rows never has it missing on every row

    @property
    def pandas_dtype(self) -> str:
        return _PANDAS_DTYPES[self.sql_type]

    def domain(self) -> list[str]:
        """The domain in words, as the UI's column constraints show it."""
        words = []
        if self.minimum is not None or self.maximum is not None:
            words.append(f"between {self.minimum} and {self.maximum}")
        if self.clock:
            words.append("a time of day hhmm")
        if self.pattern:
            words.append(f"matches {self.pattern}")
        if self.references:
            words.append(f"in raw/{self.references.split('.')[0]}")
        if self.filled:
            words.append("never missing for a whole day")
        return words


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partition_column: str | None = None
    description: str = ""
    # Rules between columns of a landed row, and whether upstream fills every day with rows.
    date_parts: tuple[str, str, str] | None = None  # year, month, day of the partition column
    local_hour: tuple[str, str, str] | None = None  # hour, the instant it names, and its time zone
    clock_parts: tuple[str, str, str] | None = None  # hhmm column, its hour and its minute
    filled_daily: bool = False
    # The date that date_parts and local_hour describe, when it is not the partition column.
    day_column: str | None = None
    # Hourly tables: the instant column that must fall in the file's UTC hour (``event_hour``).
    event_instant: str | None = None
    # An instant written out from others: (instant, the instant of its hour, the minute).
    instant_of: tuple[str, str, str] | None = None
    _by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def day(self) -> str | None:
        return self.day_column or self.partition_column

    @property
    def hourly(self) -> bool:
        return self.event_instant is not None

    def column(self, name: str) -> Column:
        return self._by_name[name]

    def ddl_columns(self) -> str:
        return ", ".join(f'"{c.name}" {c.sql_type}{"" if c.nullable else " NOT NULL"}' for c in self.columns)

    def dagster_schema(self) -> TableSchema:
        return TableSchema(
            columns=[
                TableColumn(
                    name=c.name,
                    type=c.sql_type,
                    description=c.description or None,
                    constraints=TableColumnConstraints(
                        nullable=c.nullable,
                        unique=self.key == (c.name,),
                        other=c.domain(),
                    ),
                )
                for c in self.columns
            ]
        )


def conform(frame: pd.DataFrame, spec: TableSpec, *, origin: str) -> pd.DataFrame:
    """Return ``frame`` with exactly the declared columns, in order, with the declared dtypes.

    ``origin`` names where the frame came from, so an error points at the file or day at fault.
    Unknown extra columns are dropped (the caller reports them); missing ones and values that do
    not convert are errors.
    """
    missing = [c for c in spec.column_names if c not in frame.columns]
    if missing:
        raise SchemaError(f"{origin}: {spec.name} is missing column(s) {', '.join(missing)}")
    out = {}
    for col in spec.columns:
        values = frame[col.name]
        try:
            out[col.name] = _convert(values, col)
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"{origin}: column {col.name!r} of {spec.name} does not convert to {col.sql_type}: {exc}"
            ) from exc
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def extra_columns(frame: pd.DataFrame, spec: TableSpec) -> list[str]:
    return [c for c in frame.columns if c not in spec.column_names]


def _convert(values: pd.Series, col: Column) -> pd.Series:
    values = values.reset_index(drop=True)
    if col.sql_type == "DATE":
        return (
            pd.to_datetime(values, errors="raise")
            .dt.tz_localize(None)
            .dt.normalize()
            .astype("datetime64[us]")
        )
    if col.sql_type == "TIMESTAMPTZ":
        return pd.to_datetime(values, utc=True, errors="raise").astype("datetime64[us, UTC]")
    if col.sql_type == "BIGINT":
        numeric = pd.to_numeric(values, errors="raise")
        if (numeric.dropna() % 1 != 0).any():
            raise ValueError("non-integer values")
        return numeric.astype("Int64")
    if col.sql_type == "DOUBLE":
        return pd.to_numeric(values, errors="raise").astype("float64")
    if col.sql_type == "VARCHAR":
        return values.astype("string")
    raise TypeError(f"unsupported type {col.sql_type}")


def _c(name, sql_type, nullable=True, lo=None, hi=None, doc="", **domain):
    return Column(name, sql_type, nullable, lo, hi, doc, **domain)


CARRIER = {"pattern": "[A-Z0-9]{2}", "references": "airlines.carrier"}
NYC_AIRPORT = {"pattern": "[A-Z]{3}", "references": "airports.faa"}
# Destinations include airports the reference table does not list (BQN, PSE, SJU, STT).
AIRPORT_CODE = {"pattern": "[A-Z]{3}"}
TAIL_NUMBER = {"pattern": "[A-Z0-9]{2,6}"}
NEW_YORK = "America/New_York"


FLIGHTS = TableSpec(
    name="flights",
    description="One row per scheduled departure from NYC (EWR, JFK, LGA), as delivered upstream.",
    partition_column="flight_date",
    key=("flight_date", "carrier", "flight", "origin", "sched_dep_time"),
    date_parts=("year", "month", "day"),
    local_hour=("hour", "time_hour", NEW_YORK),
    clock_parts=("sched_dep_time", "hour", "minute"),
    filled_daily=True,
    columns=(
        _c("flight_date", "DATE", False, doc="Local scheduled departure day; the partition column"),
        _c("year", "BIGINT", False, 2000, 2100),
        _c("month", "BIGINT", False, 1, 12),
        _c("day", "BIGINT", False, 1, 31),
        _c("dep_time", "DOUBLE", True, 0, 2400, clock=True, filled=True),
        _c("sched_dep_time", "BIGINT", False, 0, 2359, clock=True),
        _c("dep_delay", "DOUBLE", True, -1440, 2880, "Minutes; negative is early", filled=True),
        _c("arr_time", "DOUBLE", True, 0, 2400, clock=True, filled=True),
        _c("sched_arr_time", "BIGINT", True, 0, 2400, clock=True),
        _c("arr_delay", "DOUBLE", True, -1440, 2880, "Minutes; null when cancelled or diverted", filled=True),
        _c("carrier", "VARCHAR", False, **CARRIER),
        _c("flight", "BIGINT", False, 0, 99999),
        _c("tailnum", "VARCHAR", True, **TAIL_NUMBER),
        _c("origin", "VARCHAR", False, **NYC_AIRPORT),
        _c("dest", "VARCHAR", False, **AIRPORT_CODE),
        _c("air_time", "DOUBLE", True, 0, 1440),
        _c("distance", "DOUBLE", False, 0, 10000, "Miles"),
        _c("hour", "BIGINT", False, 0, 23),
        _c("minute", "BIGINT", False, 0, 59),
        _c("time_hour", "TIMESTAMPTZ", False),
    ),
)

WEATHER = TableSpec(
    name="weather",
    description="Hourly weather at the three NYC airports.",
    partition_column="weather_date",
    key=("origin", "time_hour"),
    date_parts=("year", "month", "day"),
    local_hour=("hour", "time_hour", NEW_YORK),
    filled_daily=True,
    columns=(
        _c("weather_date", "DATE", False, doc="Local day of the observation; the partition column"),
        _c("origin", "VARCHAR", False, **NYC_AIRPORT),
        _c("year", "BIGINT", False, 2000, 2100),
        _c("month", "BIGINT", False, 1, 12),
        _c("day", "BIGINT", False, 1, 31),
        _c("hour", "BIGINT", False, 0, 23),
        _c("temp", "DOUBLE", True, -60, 130, "Fahrenheit", filled=True),
        _c("dewp", "DOUBLE", True, -80, 100, filled=True),
        _c("humid", "DOUBLE", True, 0, 100, filled=True),
        _c("wind_dir", "DOUBLE", True, 0, 360),
        _c("wind_speed", "DOUBLE", True, 0, 1100, "mph", filled=True),
        _c("wind_gust", "DOUBLE", True, 0, 1100),
        _c("precip", "DOUBLE", True, 0, 10, filled=True),
        _c("pressure", "DOUBLE", True, 900, 1100),
        _c("visib", "DOUBLE", True, 0, 10, filled=True),
        _c("time_hour", "TIMESTAMPTZ", False),
    ),
)

PLANES = TableSpec(
    name="planes",
    description="Aircraft by tail number.",
    key=("tailnum",),
    columns=(
        _c("tailnum", "VARCHAR", False),
        _c("year", "DOUBLE", True, 1900, 2100, "Year manufactured"),
        _c("type", "VARCHAR"),
        _c("manufacturer", "VARCHAR"),
        _c("model", "VARCHAR"),
        _c("engines", "BIGINT", True, 0, 8),
        _c("seats", "BIGINT", True, 0, 1000),
        _c("speed", "DOUBLE"),
        _c("engine", "VARCHAR"),
    ),
)

AIRPORTS = TableSpec(
    name="airports",
    description="Airports by FAA code.",
    key=("faa",),
    columns=(
        _c("faa", "VARCHAR", False),
        _c("name", "VARCHAR"),
        _c("lat", "DOUBLE", True, -90, 90),
        _c("lon", "DOUBLE", True, -180, 180),
        _c("alt", "BIGINT"),
        _c("tz", "BIGINT"),
        _c("dst", "VARCHAR"),
        _c("tzone", "VARCHAR"),
    ),
)

AIRLINES = TableSpec(
    name="airlines",
    description="Carrier codes and names.",
    key=("carrier",),
    columns=(_c("carrier", "VARCHAR", False), _c("name", "VARCHAR")),
)


# The intraday feed (ingestion/intraday.py): columns shared with flights and weather keep their
# declaration; no column must be filled in every hour (a quiet hour has few rows).
def _like(spec: TableSpec, names: list[str], **own: Column) -> tuple[Column, ...]:
    known = {c.name: replace(c, filled=False) for c in spec.columns}
    return tuple(own[n] if n in own else known[n] for n in names)


def _flight_columns(names: list[str], **own: Column) -> tuple[Column, ...]:
    return _like(FLIGHTS, names, **own)


EVENT_HOUR = _c(
    "event_hour", "TIMESTAMPTZ", False, doc="The UTC hour the file delivers; the partition column"
)
FLIGHT_KEY = ("flight_date", "carrier", "flight", "origin", "sched_dep_time")

SCHEDULE = TableSpec(
    name="schedule",
    description="Every flight planned for a day, delivered before the day (scheduled instants in UTC).",
    partition_column="flight_date",
    key=FLIGHT_KEY,
    date_parts=FLIGHTS.date_parts,
    local_hour=FLIGHTS.local_hour,
    clock_parts=FLIGHTS.clock_parts,
    instant_of=("sched_dep_at", "time_hour", "minute"),
    filled_daily=True,
    columns=_flight_columns(
        intraday.SCHEDULE_COLUMNS,
        sched_dep_at=_c("sched_dep_at", "TIMESTAMPTZ", False, doc="Scheduled departure instant"),
        sched_arr_at=_c("sched_arr_at", "TIMESTAMPTZ", True, doc="Scheduled arrival instant"),
    ),
)

DEPARTURES = TableSpec(
    name="departures",
    description="Flights that left in a UTC hour, delivered as the hour ends.",
    partition_column="event_hour",
    day_column="flight_date",
    key=FLIGHT_KEY,
    event_instant="dep_at",
    columns=_flight_columns(
        [*intraday.DEPARTURE_COLUMNS, "event_hour"],
        dep_delay=_c("dep_delay", "DOUBLE", False, -1440, 2880, "Minutes; negative is early"),
        dep_at=_c("dep_at", "TIMESTAMPTZ", False, doc="Wheels-off instant"),
        event_hour=EVENT_HOUR,
    ),
)

ARRIVALS = TableSpec(
    name="arrivals",
    description="Flights that arrived in a UTC hour, delivered as the hour ends.",
    partition_column="event_hour",
    day_column="flight_date",
    key=FLIGHT_KEY,
    event_instant="arr_at",
    columns=_flight_columns(
        [*intraday.ARRIVAL_COLUMNS, "event_hour"],
        arr_delay=_c("arr_delay", "DOUBLE", False, -1440, 2880, "Minutes; negative is early"),
        arr_at=_c("arr_at", "TIMESTAMPTZ", False, doc="Arrival instant"),
        event_hour=EVENT_HOUR,
    ),
)

OBSERVATIONS = TableSpec(
    name="observations",
    description="Weather observations stamped in a UTC hour, delivered as the hour ends.",
    partition_column="event_hour",
    day_column="weather_date",
    key=WEATHER.key,
    date_parts=WEATHER.date_parts,
    local_hour=WEATHER.local_hour,
    event_instant="time_hour",
    columns=_like(WEATHER, [*WEATHER.column_names, "event_hour"], event_hour=EVENT_HOUR),
)

DAILY_TABLES = {spec.name: spec for spec in (FLIGHTS, WEATHER)}
REFERENCE_TABLES = {spec.name: spec for spec in (PLANES, AIRPORTS, AIRLINES)}
SCHEDULE_TABLES = {SCHEDULE.name: SCHEDULE}
HOURLY_TABLES = {spec.name: spec for spec in (DEPARTURES, ARRIVALS, OBSERVATIONS)}
# Tables delivered one file per day: the daily ones and the schedule.
DAY_FILE_TABLES = {**DAILY_TABLES, **SCHEDULE_TABLES}
ALL_TABLES = {**DAILY_TABLES, **REFERENCE_TABLES, **SCHEDULE_TABLES, **HOURLY_TABLES}
