"""What of the intraday feed arrived since the last look: the intraday landing sensor's logic.

As ``landing_scan`` does for days: a file is known by size and modification time, a changed
one is judged exactly as a run reading it judges it, and its content hash tells a real change
from a re-landed identical file. Schedules are day files (``schedule/<YYYY-MM-DD>``), the other
tables hourly files (``<table>/<YYYY-MM-DD>T<HH>``); each hourly table of an hour is its own
delivery, so an hour is requested for the tables whose files are new and valid.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from ml_platform.automation.landing_scan import FileState, _sha256, readable
from ml_platform.ingestion.delivery import HOUR_FILE, day_of_file, hour_of_file
from ml_platform.ingestion.schemas import HOURLY_TABLES
from ml_platform.ingestion.source import DAY_FILE, LandingSource, SourceError

SCHEDULE = "schedule"
FOLDERS = (SCHEDULE, *HOURLY_TABLES)


@dataclass
class IntradayScan:
    schedule_days: list[date] = field(default_factory=list)
    hours: dict[datetime, list[str]] = field(default_factory=dict)  # hour -> tables ready
    problems: list[str] = field(default_factory=list)
    files: dict[str, FileState] = field(default_factory=dict)


@dataclass(frozen=True)
class Bounds:
    """The partitions files must fall in: days [first_day, end_day), hours [first_hour, end_hour)."""

    first_day: date
    end_day: date | None
    first_hour: datetime
    end_hour: datetime | None


def scan_intraday(landing: LandingSource, previous: dict[str, FileState], bounds: Bounds) -> IntradayScan:
    result = IntradayScan(files=dict(previous))
    root = landing.root_path
    hours: dict[datetime, set[str]] = {}
    for table in FOLDERS:
        folder = root / table
        if not folder.is_dir():
            continue
        paths = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        twice = _delivered_twice(paths, DAY_FILE if table == SCHEDULE else HOUR_FILE)
        for path in paths:
            rel = f"{table}/{path.name}"
            old = previous.get(rel)
            found = readable(landing, rel, path, old, result)
            if found is None:
                continue
            real, stat = found
            signature = f"{stat.st_size}:{stat.st_mtime_ns}{':twice' if path.name in twice else ''}"
            if table == SCHEDULE and _declared_empty(landing, path):
                signature += ":declared-empty"
            if old is not None and old.signature == signature:
                continue
            problem = twice.get(path.name)
            sha = _sha256(real)
            if problem is None:
                problem = _judge(landing, table, real, bounds)
            state = FileState(signature, sha, "rejected" if problem else "ok", problem or "")
            result.files[rel] = state
            if problem:
                result.problems.append(f"{rel}: {problem}")
            elif old is None or old.sha256 != sha or old.status != "ok":
                if table == SCHEDULE:
                    result.schedule_days.append(day_of_file(real))
                else:
                    hours.setdefault(hour_of_file(real), set()).add(table)
    result.schedule_days.sort()
    result.hours = {h: [t for t in HOURLY_TABLES if t in tables] for h, tables in sorted(hours.items())}
    return result


def _judge(landing: LandingSource, table: str, path: Path, bounds: Bounds) -> str | None:
    """Why the run would refuse this file, or None."""
    try:
        if table == SCHEDULE:
            day = day_of_file(path)
            if day < bounds.first_day or (bounds.end_day is not None and day >= bounds.end_day):
                raise SourceError(f"{path}: day {day} is outside the partitions")
            landing.judge_file(table, path, day)
        else:
            hour = hour_of_file(path)
            if hour < bounds.first_hour or (bounds.end_hour is not None and hour >= bounds.end_hour):
                raise SourceError(f"{path}: hour {hour:%Y-%m-%dT%H} is outside the partitions")
            landing.judge_hour_file(table, path, hour)
    except SourceError as exc:
        return str(exc)
    return None


def _declared_empty(landing: LandingSource, path: Path) -> bool:
    try:
        return landing.empty_marker(SCHEDULE, day_of_file(path)).exists()
    except SourceError:
        return False


def _delivered_twice(paths: list[Path], pattern) -> dict[str, str]:
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        if pattern.match(path.name):
            by_stem.setdefault(path.stem, []).append(path)
    problems = {}
    for group in by_stem.values():
        if len(group) > 1:
            group.sort(key=lambda p: p.suffix != ".parquet")
            problem = f"{' and '.join(map(str, group))}: the same delivery was made twice"
            problems.update({p.name: problem for p in group})
    return problems


def run_key(kind: str, partition: str, rels: list[str], files: dict[str, FileState]) -> str:
    """Stable for the same files: a restarted daemon re-deriving a request gets the same key."""
    digest = hashlib.sha256()
    for rel in sorted(rels):
        digest.update(f"{rel}={files[rel].sha256};".encode())
    return f"intraday-{kind}:{partition}:{digest.hexdigest()[:16]}"
