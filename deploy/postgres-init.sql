-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d):
-- POSTGRES_DB holds Dagster's storage; MLflow's backend store gets a database of its own.
CREATE DATABASE mlflow;
-- The DuckLake catalog of the `distributed` compose profile (ML_PLATFORM_WAREHOUSE): DuckLake
-- creates its tables on first use; unused on one machine.
CREATE DATABASE ml_platform_lake;
