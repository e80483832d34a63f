"""Asset checks in CI (`make check`'s last step): a sample day materialized on a throwaway
instance passes when the delivery is good, and fails naming the asset, partition and check when a
blocking check fails. Real processes, real landing files, real DuckDB and dbt."""

import os
import subprocess
import sys
from datetime import date

from ml_platform.ingestion.landing import land_days
from ml_platform_tests.conftest import REPO_ROOT
from ml_platform_tests.reliability.bad_deliveries import duplicate_keys

GOOD, BAD = date(2013, 1, 2), date(2013, 1, 3)


def check(day: date, landing, tmp_path, warehouse: dict | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **(warehouse or {}),
        "ML_PLATFORM_SOURCE": "landing",
        "ML_PLATFORM_LANDING_ROOT": str(landing),
        # Anything left in the environment must not reach the throwaway instance or stores.
        "ML_PLATFORM_DATA_DIR": str(tmp_path / "not-used"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [sys.executable, "-m", "ml_platform.ci_check", "--day", day.isoformat()]
    return subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)


def test_make_check_passes_a_good_day_and_names_the_failing_blocking_check(tmp_path):
    landing = tmp_path / "landing"
    land_days(GOOD, 2, landing, echo=lambda *_: None)
    bad_file = duplicate_keys(landing, BAD)

    good = check(GOOD, landing, tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
    assert f"ingestion, features of {GOOD}: every blocking check passed" in good.stdout

    bad = check(BAD, landing, tmp_path)
    assert bad.returncode == 1, bad.stdout[-2000:]
    failures = [line for line in bad.stderr.splitlines() if line.startswith("ml-platform check:")]
    assert any(f"raw/flights [{BAD}]: blocking check key_unique failed" in line for line in failures), (
        failures
    )
    assert bad_file.exists()
    # Nothing was written where the environment pointed: the check runs on its own stores.
    assert not (tmp_path / "not-used").exists()


def test_make_check_on_a_lake_checks_a_throwaway_lake_and_leaves_the_configured_one_alone(tmp_path):
    """With a lake configured, the check builds the day in a new catalog database on the same
    server (dropped afterwards) and a data directory of its own; the configured lake stays empty."""
    import psycopg2

    from ml_platform_tests.conftest import PG_SERVER
    from ml_platform_tests.lake_support import lake_catalog

    landing = tmp_path / "landing"
    land_days(GOOD, 1, landing, echo=lambda *_: None)

    def databases() -> set[str]:
        with psycopg2.connect(dbname="postgres", **PG_SERVER) as conn, conn.cursor() as cur:
            cur.execute("select datname from pg_database where datname like 'ml_platform_check_%'")
            return {row[0] for row in cur.fetchall()}

    with lake_catalog(tmp_path) as configured:
        before = databases()
        lake = {
            "ML_PLATFORM_WAREHOUSE": configured.database,
            "ML_PLATFORM_LAKE_DATA_PATH": configured.data_path,
        }
        good = check(GOOD, landing, tmp_path, lake)
        assert good.returncode == 0, good.stderr[-3000:]
        assert f"ingestion, features of {GOOD}: every blocking check passed" in good.stdout
        assert databases() == before
        dbname = configured.database.split("dbname=")[1].split()[0]
        with psycopg2.connect(dbname=dbname, **PG_SERVER) as conn, conn.cursor() as cur:
            cur.execute("select count(*) from information_schema.tables where table_schema = 'public'")
            assert cur.fetchone()[0] == 0
        assert not (tmp_path / "lake").exists()


def test_make_check_names_a_lake_it_cannot_make_a_throwaway_catalog_on(tmp_path, monkeypatch, capsys):
    from ml_platform import ci_check
    from ml_platform_tests.conftest import PG_SERVER

    server = " ".join(f"{k}={v}" for k, v in PG_SERVER.items())
    # The check sets these itself: through monkeypatch, this process gets them back afterwards.
    monkeypatch.setenv("ML_PLATFORM_DATA_DIR", str(tmp_path / "not-used"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv(
        "ML_PLATFORM_WAREHOUSE", f"ducklake:postgres:dbname=no_such_catalog {server} password=s3cret"
    )
    monkeypatch.setenv("ML_PLATFORM_LAKE_DATA_PATH", str(tmp_path / "lake"))
    assert ci_check.main(["--day", GOOD.isoformat()]) == 2
    error = capsys.readouterr().err
    assert "ML_PLATFORM_WAREHOUSE=" in error and "cannot create the check's throwaway catalog" in error
    assert "no_such_catalog" in error and "s3cret" not in error
