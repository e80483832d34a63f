-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d):
-- POSTGRES_DB holds Dagster's storage; MLflow's backend store gets a database of its own.
CREATE DATABASE mlflow;
