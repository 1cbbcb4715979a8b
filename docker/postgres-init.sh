#!/bin/bash
# First start of the postgres container (docker-entrypoint-initdb.d): one database each for Prefect and MLflow,
# owned by POSTGRES_USER. Skipped by the image once the data volume holds a cluster.
set -euo pipefail
for db in "${PREFECT_DB:?}" "${MLFLOW_DB:?}"; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -c "CREATE DATABASE \"${db}\" OWNER \"${POSTGRES_USER}\""
done
