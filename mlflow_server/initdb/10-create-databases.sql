-- Run once by the postgres image, on an empty data directory only (docker-entrypoint-initdb.d).
-- POSTGRES_DB creates "mlflow"; the Dagster storage and the API's prediction log get their own.
CREATE DATABASE dagster;
CREATE DATABASE predictions;
