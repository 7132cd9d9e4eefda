# The Tidemark app image: the `tidemark` CLI (ingestion, live-view deploys, demo workload) and
# Dagster (webserver, daemon, dbt) for docker-compose.yml. No dev/test dependencies.
#
#   docker build -t tidemark-app:0.1.0 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (cached while only code changes), then the project itself: `pip install .`
# with the `deploy` extra (dagster-postgres), never `.[dev]`.
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY ingestion ./ingestion
COPY streaming_views ./streaming_views
COPY orchestration ./orchestration
COPY tidemark ./tidemark
RUN pip install '.[deploy]'

# dbt's project and the container configuration are read from the tree at run time.
COPY dbt_project ./dbt_project
COPY docker ./docker

# A non-root user owns only what it writes: Dagster's storage (step logs, artifacts), dbt's
# target/, and TIDEMARK_HOME. dagster.yaml itself stays root's (read-only for the app).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin tidemark \
    && mkdir -p /opt/dagster/home/storage /var/lib/tidemark \
    && cp docker/dagster.yaml /opt/dagster/home/dagster.yaml \
    && chown -R tidemark:tidemark /opt/dagster/home /var/lib/tidemark /app/dbt_project \
    && chown root:root /opt/dagster/home/dagster.yaml

# The source tree comes first on sys.path, so orchestration finds dbt_project/ beside it.
ENV PYTHONPATH=/app \
    DAGSTER_HOME=/opt/dagster/home \
    TIDEMARK_HOME=/var/lib/tidemark \
    TIDEMARK_DBT_TARGET_PATH=/app/dbt_project/target \
    DBT_LOG_PATH=/tmp/dbt-logs

USER tidemark

# The dbt manifest the Dagster code location loads, prepared the way `tidemark up` does it
# (dbt parse into TIDEMARK_DBT_TARGET_PATH; no database connection needed).
RUN python -m orchestration.defs.dbt.project

EXPOSE 3000
CMD ["tidemark", "--help"]
