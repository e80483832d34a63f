"""What arrived in the landing zone since the last look: the landing sensor's plain logic.

A file is identified by size and modification time; only a changed signature costs a read,
and a content hash decides whether the change is real (a re-landed identical file is not).
Each new file is judged exactly as a run reading its day judges it (``LandingSource.judge_file``),
so a file the run would refuse is reported here and its day waits, while good days go on.
A day is ready when both its flights and weather files are present and valid.
"""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from ml_platform.ingestion.schemas import DAILY_TABLES
from ml_platform.ingestion.source import DAY_FILE, LandingSource, SourceError, day_of_file

TABLES = tuple(DAILY_TABLES)  # flights, weather


@dataclass
class FileState:
    signature: str  # "size:mtime_ns"
    sha256: str
    status: str  # "ok" | "rejected"
    problem: str = ""


@dataclass
class ScanResult:
    ready_days: list[date] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: dict[str, FileState] = field(default_factory=dict)
    changed_days: set[date] = field(default_factory=set)


def load_cursor(raw: str | None) -> dict[str, FileState]:
    if not raw:
        return {}
    return {path: FileState(**state) for path, state in json.loads(raw)["files"].items()}


def dump_cursor(files: dict[str, FileState]) -> str:
    return json.dumps({"files": {p: vars(s) for p, s in sorted(files.items())}}, separators=(",", ":"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scan(
    landing: LandingSource, previous: dict[str, FileState], first_day: date, end_day: date | None
) -> ScanResult:
    """Compare the landing zone with the previous cursor; validate new or changed files."""
    result = ScanResult(files=dict(previous))
    root = landing.root_path
    present: dict[str, set[date]] = {t: set() for t in TABLES}
    for table in TABLES:
        folder = root / table
        if not folder.is_dir():
            continue
        # Temp files of an atomic write in progress are not deliveries.
        paths = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        twice = _delivered_twice(paths)
        for path in paths:
            rel = f"{table}/{path.name}"
            old = previous.get(rel)
            found = readable(landing, rel, path, old, result)
            if found is None:
                continue
            real, stat = found
            # The signature also covers what else decides the verdict: a second file for the
            # day, or upstream's marker that the day is really empty.
            signature = f"{stat.st_size}:{stat.st_mtime_ns}{_context(landing, table, path, twice)}"
            if old is not None and old.signature == signature:
                if old.status == "ok":
                    present[table].add(day_of_file(real))
                continue
            problem = twice.get(path.name)
            if problem:
                state = FileState(signature, _sha256(real), "rejected", problem)
            else:
                state = _validate(landing, table, real, signature, first_day, end_day)
            result.files[rel] = state
            if state.status != "ok":
                result.problems.append(f"{rel}: {state.problem}")
                continue
            day = day_of_file(real)
            present[table].add(day)
            if old is None or old.sha256 != state.sha256 or old.status != "ok":
                result.changed_days.add(day)
    complete = present["flights"] & present["weather"]
    result.ready_days = sorted(d for d in result.changed_days if d in complete)
    return result


def readable(landing: LandingSource, rel: str, path: Path, old: FileState | None, result: ScanResult):
    """The delivered file behind ``rel`` and its stat, or None once its refusal is recorded (a
    link out of the root, a file gone): recorded again only when the link itself changes."""
    try:
        real = landing.resolve(rel)
        return real, real.stat()
    except (SourceError, OSError) as exc:
        link = path.lstat()
        signature = f"link:{link.st_size}:{link.st_mtime_ns}"
        if old is None or old.signature != signature:
            result.files[rel] = FileState(signature, "", "rejected", str(exc))
            result.problems.append(f"{rel}: {exc}")
        return None


def _delivered_twice(paths: list[Path]) -> dict[str, str]:
    """Names of the files that share their day with another file (a .parquet and a .csv): which
    one is the delivery cannot be told, so both wait until one is removed."""
    by_day: dict[str, list[Path]] = {}
    for path in paths:
        match = DAY_FILE.match(path.name)
        if match:
            by_day.setdefault(match.group(1), []).append(path)
    problems = {}
    for group in by_day.values():
        if len(group) > 1:
            group.sort(key=lambda p: p.suffix != ".parquet")  # named in the order a run names them
            problem = f"{' and '.join(map(str, group))}: the same day was delivered twice"
            problems.update({p.name: problem for p in group})
    return problems


def _context(landing: LandingSource, table: str, path: Path, twice: dict[str, str]) -> str:
    try:
        declared_empty = landing.empty_marker(table, day_of_file(path)).exists()
    except SourceError:  # not a day file: refused by its name
        return ""
    return (":twice" if path.name in twice else "") + (":declared-empty" if declared_empty else "")


def _validate(landing, table, path, signature, first_day, end_day) -> FileState:
    sha = _sha256(path)
    try:
        day = day_of_file(path)
        if day < first_day or (end_day is not None and day >= end_day):
            raise SourceError(f"{path}: day {day} is outside the partitions {first_day}..{end_day or 'open'}")
        landing.judge_file(table, path, day)
    except SourceError as exc:
        return FileState(signature, sha, "rejected", str(exc))
    return FileState(signature, sha, "ok")


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Inclusive [first, last] runs of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(days):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def range_run_key(first: date, last: date, files: dict[str, FileState]) -> str:
    """Stable for the same files: a restarted daemon re-deriving a request gets the same key."""
    digest = hashlib.sha256()
    day = first
    while day <= last:
        for table in TABLES:
            for rel, state in sorted(files.items()):
                if rel.startswith(f"{table}/{day.isoformat()}.") and state.status == "ok":
                    digest.update(f"{rel}={state.sha256};".encode())
        day += timedelta(days=1)
    return f"landing:{first.isoformat()}..{last.isoformat()}:{digest.hexdigest()[:16]}"
