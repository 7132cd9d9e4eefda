"""Every Tidemark setting in one typed object, read from ``TIDEMARK_*`` environment variables.

:class:`Settings` (pydantic-settings) is the only place an environment variable is parsed: the
stack, the CLI, the demo and the Dagster code location all call :func:`load_settings`. Every
setting has a default that works on a fresh clone; an unusable value is refused with the
variable's name, what it must be and how to fix it (a :class:`~tidemark.errors.SettingsError`,
printed without a traceback). Secrets are only ever read from the environment and never printed
(see :func:`redact`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tidemark.errors import SettingsError
from tidemark.redact import redact
from tidemark.session_env import pin_url

DEFAULT_PORT = 55432
DEFAULT_DAGSTER_PORT = 3000
SOURCE_DB = "shop"
LANDING_DB = "tidemark"
ADMIN_USER = "postgres"
APP_ROLE = "tidemark_app"
INGEST_ROLE = "tidemark_ingest"
READER_ROLE = "tidemark_reader"
DBT_ROLE = "tidemark_dbt"
REPO = Path(__file__).resolve().parents[1]
PARTITIONS_START_FILE = "partitions_start"
PASSFILE = "pgpass"  # $TIDEMARK_HOME/pgpass: the embedded roles' passwords (stack/credentials.py)

# Fields whose environment variable is not TIDEMARK_<FIELD NAME>.
_ENV_NAMES = {"port": "TIDEMARK_PG_PORT"}
_URL_FIELDS = ("source_url", "landing_url", "landing_dbt_url", "materialize_url")


class Settings(BaseSettings):
    """Where Tidemark keeps its state, how it reaches its databases, and how Dagster runs it.

    Attributes:
        home: ``TIDEMARK_HOME``: data directory of the embedded server, logs, Dagster home.
        port: ``TIDEMARK_PG_PORT``: TCP port of the embedded server on 127.0.0.1.
        source_url: ``TIDEMARK_SOURCE_URL``: an external source server, or None (embedded).
        landing_url: ``TIDEMARK_LANDING_URL``: an external landing server, or None (embedded).
        landing_dbt_url: ``TIDEMARK_LANDING_DBT_URL``: the URL dbt builds with on that external
            landing server (as ``tidemark_dbt``); None: dbt uses ``TIDEMARK_LANDING_URL`` and
            Tidemark warns (on the embedded server dbt always runs as ``tidemark_dbt``).
        materialize_url: ``TIDEMARK_MATERIALIZE_URL``: Materialize for live views, or None.
        live_target: ``TIDEMARK_LIVE_TARGET``: where live views deploy (embedded, materialize).
        dagster_port: ``TIDEMARK_DAGSTER_PORT``: port of the Dagster UI on 127.0.0.1.
        dbt_project_dir: ``TIDEMARK_DBT_PROJECT_DIR``: the dbt project (default: the shipped one).
        dbt_target_path: ``TIDEMARK_DBT_TARGET_PATH``: dbt manifest and invocation directories
            (default ``$TIDEMARK_HOME/dbt/target``).
        views_dir: ``TIDEMARK_VIEWS_DIR``: live view files (default: the shipped views).
        partitions_start: ``TIDEMARK_PARTITIONS_START``: first daily partition (default: the
            first day of data, recorded by ``tidemark up``).
        batch_cron: ``TIDEMARK_BATCH_CRON``: the nightly batch (UTC).
        correction_days: ``TIDEMARK_CORRECTION_DAYS``: days before yesterday the nightly batch
            re-runs.
        mart_deadline_cron: ``TIDEMARK_MART_DEADLINE_CRON``: yesterday's partition due (UTC).
        checks_cron: ``TIDEMARK_CHECKS_CRON``: when the live-view and source-freshness checks
            run on their own (UTC).
        full_history_cron: ``TIDEMARK_FULL_HISTORY_CRON``: when the dbt tests tagged
            ``full_history`` run (UTC; daily, after the nightly batch).
        ingest_lag_warn_s: ``TIDEMARK_INGEST_LAG_WARN_S``: ingestion lag that warns.
        ingest_lag_error_s: ``TIDEMARK_INGEST_LAG_ERROR_S``: ingestion lag that fails.
        slot_wal_warn_gb: ``TIDEMARK_SLOT_WAL_WARN_GB``: WAL (GiB) a replication slot may retain
            before `tidemark status` warns about it.
        materialize_lag_s: ``TIDEMARK_MATERIALIZE_LAG_S``: largest Materialize lag accepted.
        reconcile_days: ``TIDEMARK_RECONCILE_DAYS``: closed days back reconciliation compares.
        correction_attempts: ``TIDEMARK_CORRECTION_ATTEMPTS``: failed correction runs of one
            day of a mart (and failed reconciliation runs in a row) before the correction
            sensor stops asking (``tidemark reconcile retry`` asks again).
        correction_backoff_s: ``TIDEMARK_CORRECTION_BACKOFF_S``: seconds the correction sensor
            waits after the first failed run before asking again, doubled after each further
            failure.
        demo_beyond_lateness_share: ``TIDEMARK_DEMO_BEYOND_LATENESS_SHARE``: share of the demo
            load's orders placed on an earlier, already closed day (beyond the orders'
            allowed lateness), so late-data accounting and corrections run all the time.
        heartbeat_s: ``TIDEMARK_HEARTBEAT_S``: an idle source gets a heartbeat (a logical
            message through its slot, and so a freshness sample) after this many seconds.
        freshness_objective: ``TIDEMARK_FRESHNESS_OBJECTIVE``: the freshness objective of a
            live view whose file declares no ``@freshness`` (``p95 2s``).
        freshness_window_s: ``TIDEMARK_FRESHNESS_WINDOW_S``: the sliding window (seconds)
            the freshness check judges the objective over.
        watermark_idle_after_s: ``TIDEMARK_WATERMARK_IDLE_AFTER_S``: a table with no change
            for this long while its source commits is idle; its watermark follows the source.
        watermark_future_skew_s: ``TIDEMARK_WATERMARK_FUTURE_SKEW_S``: how far past its
            source commit time an event time may advance a watermark.
        verify_share: ``TIDEMARK_VERIFY_SHARE``: the share of one core each live view's
            periodic comparison with its query (``matches_query``) may take; it runs again
            once its last duration divided by this has passed.
        log_max_mb: ``TIDEMARK_LOG_MAX_MB``: a log of ``$TIDEMARK_HOME/logs`` larger than this
            is rotated by ``tidemark up``.
        log_keep: ``TIDEMARK_LOG_KEEP``: rotated files kept per log (``x.log.1`` ...).
        run_retention_days: ``TIDEMARK_RUN_RETENTION_DAYS``: Dagster runs that ended longer
            ago than this many days are deleted (daily by ``tidemark up``, or by ``tidemark
            dagster prune``) once later runs hold everything the UI shows of them; 0 keeps
            every run.
    """

    model_config = SettingsConfigDict(env_prefix="TIDEMARK_", env_ignore_empty=True,
                                      extra="ignore", frozen=True, populate_by_name=True)

    home: Path = Path(".tidemark")
    port: int = Field(DEFAULT_PORT, ge=1024, le=65535, validation_alias="TIDEMARK_PG_PORT")
    source_url: str | None = None
    landing_url: str | None = None
    landing_dbt_url: str | None = None
    materialize_url: str | None = None
    live_target: Literal["embedded", "materialize"] = "embedded"
    dagster_port: int = Field(DEFAULT_DAGSTER_PORT, ge=1024, le=65535)
    dbt_project_dir: Path = REPO / "dbt_project"
    dbt_target_path: Path | None = None
    views_dir: Path | None = None
    partitions_start: date | None = None
    batch_cron: str = "30 2 * * *"
    correction_days: int = Field(3, ge=0, le=366)
    mart_deadline_cron: str = "0 9 * * *"
    checks_cron: str = "*/15 * * * *"
    full_history_cron: str = "30 4 * * *"
    ingest_lag_warn_s: float = Field(60.0, gt=0)
    ingest_lag_error_s: float = Field(300.0, gt=0)
    slot_wal_warn_gb: float = Field(5.0, gt=0)
    materialize_lag_s: float = Field(5.0, gt=0)
    reconcile_days: int = Field(30, ge=1, le=3660)
    correction_attempts: int = Field(3, ge=1, le=100)
    correction_backoff_s: float = Field(120.0, ge=0, le=86400)
    demo_beyond_lateness_share: float = Field(0.01, ge=0, le=1)
    heartbeat_s: float = Field(10.0, gt=0, le=3600)
    freshness_objective: str = "p95 2s"
    freshness_window_s: int = Field(300, ge=10, le=3600)
    watermark_idle_after_s: float = Field(60.0, gt=0)
    watermark_future_skew_s: float = Field(300.0, ge=0)
    verify_share: float = Field(0.01, gt=0, le=1)
    log_max_mb: float = Field(10.0, gt=0)
    log_keep: int = Field(3, ge=0, le=100)
    run_retention_days: int = Field(7, ge=0, le=36500)

    @field_validator("home", "dbt_project_dir", "dbt_target_path", "views_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @field_validator("source_url", "landing_url", "landing_dbt_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # e.g. postgresql://u:pa/ss@h/db: libpq reads host u, port "pa"
            port_ok = False
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not port_ok:
            raise ValueError("must be a URL like postgresql://user@host:5432/dbname (in a "
                             "password, write '/' as '%2F', '@' as '%40', '%' as '%25')")
        try:  # libpq's own message quotes the bad part, which may be the password
            conninfo_to_dict(value.strip())
        except ProgrammingError:
            raise ValueError("cannot be read by libpq (in a password, write '%' as '%25', "
                             "a space as '%20')") from None
        return value.strip()

    @field_validator("batch_cron", "mart_deadline_cron", "checks_cron", "full_history_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a cron string of five fields, like '30 2 * * *'")
        return value.strip()

    @field_validator("freshness_objective")
    @classmethod
    def _objective(cls, value: str) -> str:
        from streaming_views.errors import ViewFileError
        from streaming_views.objective import parse_objective

        try:
            return parse_objective(value).text
        except ViewFileError as exc:
            raise ValueError(str(exc).split(": ", 2)[-1]) from None

    # -- derived places ----------------------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.home / "pgdata"

    @property
    def log_dir(self) -> Path:
        """Directory for process logs."""
        return self.home / "logs"

    @property
    def dagster_home(self) -> Path:
        """``DAGSTER_HOME`` of ``tidemark up``: Dagster's SQLite storage and ``dagster.yaml``."""
        return self.home / "dagster"

    @property
    def dbt_target_dir(self) -> Path:
        """The dbt target directory holding ``manifest.json`` (absolute)."""
        return self.dbt_target_path or self.home / "dbt" / "target"

    @property
    def lag_thresholds(self) -> tuple[float, float]:
        """(warn, error) ingestion lag in seconds (warn never above error)."""
        return min(self.ingest_lag_warn_s, self.ingest_lag_error_s), self.ingest_lag_error_s

    def first_partition_day(self) -> date | None:
        """The first daily partition: the setting, else the first day of data ``tidemark up``
        recorded in ``$TIDEMARK_HOME/partitions_start``, else None."""
        if self.partitions_start is not None:
            return self.partitions_start
        try:
            return date.fromisoformat((self.home / PARTITIONS_START_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    # -- databases ---------------------------------------------------------------------------

    @property
    def uses_embedded(self) -> bool:
        """True when at least one of source and landing lives on the embedded server."""
        return self.source_url is None or self.landing_url is None

    def embedded_url(self, database: str, user: str = ADMIN_USER) -> str:
        """Connection URL of a database on the embedded server (its password in the home's
        pgpass file, which the URL names)."""
        return embedded_server_url(self.port, database, user, self.home / PASSFILE)

    def source_dsn(self) -> str:
        """Admin connection URL of the source database ("shop" when embedded); a URL with its
        own ``options`` gets the pinned session settings after them (:func:`_own_options`)."""
        return pin_url(self.source_url) or self.embedded_url(SOURCE_DB)

    def landing_dsn(self) -> str:
        """Admin connection URL of the landing database ("tidemark" when embedded); a URL with
        its own ``options`` gets the pinned session settings after them (:func:`_own_options`)."""
        return pin_url(self.landing_url) or self.embedded_url(LANDING_DB)

    def reader_dsn(self) -> str:
        """Read-only URL for SQL clients (psql, BI tools) on the landing database.

        On your own landing server it is ``TIDEMARK_LANDING_URL`` with the user replaced by
        ``tidemark_reader`` and no password (the README's landing grants create that role):
        never the landing URL's own, writing role.
        """
        if self.landing_url is not None:
            return reader_url(self.landing_url)
        return self.embedded_url(LANDING_DB, READER_ROLE)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment (``overrides`` win over it).

    Also sets the watermark policy of this process (``ingestion.watermarks.configure``) from
    ``TIDEMARK_WATERMARK_IDLE_AFTER_S`` and ``TIDEMARK_WATERMARK_FUTURE_SKEW_S``.

    Returns:
        The settings, with defaults filled in.

    Raises:
        SettingsError: a variable is set to a value that cannot be used (all of them named).
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from None
    from datetime import timedelta

    from ingestion.watermarks import configure

    # One policy per process: the ingesting process and every reader of the same settings agree.
    configure(timedelta(seconds=settings.watermark_idle_after_s),
              timedelta(seconds=settings.watermark_future_skew_s))
    return settings


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = field if field.startswith("TIDEMARK_") else _ENV_NAMES.get(
            field, f"TIDEMARK_{field.upper()}")
        value = error.get("input")
        reason = str(error["msg"]).removeprefix("Value error, ")
        # A URL that failed is not echoed at all: where libpq misreads it (a '/' or '@' in its
        # password unencoded), redact cannot tell the password from the rest either.
        shown = "value not shown: it may hold a password" if field in _URL_FIELDS else (
            f"got {str(value)!r}")
        problems.append(f"{name} {reason} ({shown})")
    return ("; ".join(problems) + ". Fix or unset the variable (unset: the default is used; "
            "the README's Configuration section lists every setting).")


def embedded_server_url(port: int, database: str, user: str = ADMIN_USER,
                        passfile: Path | None = None) -> str:
    """URL of a database on an embedded server (127.0.0.1, no TLS).

    ``sslmode=disable`` because the embedded server has no certificate: a ``PGSSLMODE=require``
    in the user's shell (right for their cloud databases) would otherwise refuse every
    connection to it. ``passfile`` names the pgpass file holding the role's password (the
    server asks every connection for one): libpq reads it, the URL never holds the password.
    With it comes an empty ``password=``, so that a ``PGPASSWORD`` in the user's shell (meant
    for their own servers) does not win over the file (libpq reads the file only when no
    password is given, and the URL's empty one keeps ``PGPASSWORD`` out).
    """
    url = f"postgresql://{user}@127.0.0.1:{port}/{database}?sslmode=disable"
    if passfile is None:
        return url
    return f"{url}&password=&passfile={quote(str(passfile), safe='/')}"


def reader_url(url: str) -> str:
    """The URL of ``url``'s server and database for the read-only role ``tidemark_reader``.

    Args:
        url: a landing URL (``postgresql://user[:password]@host:port/db?...``).

    Returns:
        The same URL with user ``tidemark_reader``, without a password (user and password
        query parameters dropped too); a string that is not a URL is returned masked.
    """
    parts = urlsplit(url)
    if not parts.netloc:
        return redact(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(pair for pair in parts.query.split("&")
                     if pair and pair.split("=", 1)[0].lower() not in ("user", "password"))
    return urlunsplit(parts._replace(netloc=f"{READER_ROLE}@{host}", query=query))
