{#-
    The day window of the daily marts: which UTC days a run (re)builds.

    - vars min_date / max_date (ISO dates, inclusive) given: exactly those days; only min_date
      given: that one day. This is how a backfill (one invocation) runs. Without the vars, the
      environment variables TIDEMARK_DBT_MIN_DATE / TIDEMARK_DBT_MAX_DATE play the same role:
      Dagster's partition runs use them, because a change of --vars makes dbt parse the whole
      project again. They are read only when the SQL is compiled for a run (`execute`), not
      while dbt parses: dbt re-parses every file whose parse read an environment variable that
      changed since, so reading them at parse made each partition run re-parse the marts and
      their tests (~1.5 s of CPU a run) for SQL the run compiles again anyway.
    - no vars, incremental run: the nightly correction window, today (UTC) and the
      `reprocess_days` days before it (var, default 3), to absorb late data.
    - no vars, first run or --full-refresh: every day (returns none).

    Returns a dict {"min": "YYYY-MM-DD", "max": "YYYY-MM-DD"} or none.
-#}
{% macro tidemark_day_window(incremental) -%}
    {%- set min_var = var('min_date', none) -%}
    {%- set max_var = var('max_date', none) -%}
    {%- if min_var is none and max_var is none and execute -%}
        {%- set min_var = env_var('TIDEMARK_DBT_MIN_DATE', '') or none -%}
        {%- set max_var = env_var('TIDEMARK_DBT_MAX_DATE', '') or none -%}
    {%- endif -%}
    {%- if min_var is none and max_var is not none -%}
        {{ exceptions.raise_compiler_error(
            "var max_date=" ~ max_var ~ " is set without min_date: pass both, e.g. "
            ~ "--vars '{min_date: 2026-01-01, max_date: 2026-01-07}', or min_date alone for one day."
        ) }}
    {%- endif -%}
    {%- if min_var is not none -%}
        {%- set min_day = tidemark_parse_date('min_date', min_var) -%}
        {%- set max_day = tidemark_parse_date('max_date', max_var if max_var is not none else min_var) -%}
        {%- if min_day > max_day -%}
            {{ exceptions.raise_compiler_error(
                "var min_date=" ~ min_day ~ " is after max_date=" ~ max_day
                ~ ": the window is inclusive, pass min_date <= max_date."
            ) }}
        {%- endif -%}
        {%- do return({"min": min_day.isoformat(), "max": max_day.isoformat()}) -%}
    {%- elif incremental -%}
        {%- set days = var('reprocess_days', 3) | int(-1) -%}
        {%- if days < 0 -%}
            {{ exceptions.raise_compiler_error(
                "var reprocess_days=" ~ var('reprocess_days') ~ " must be a whole number of days >= 0 (default 3)."
            ) }}
        {%- endif -%}
        {%- set today = modules.datetime.datetime.now(modules.pytz.utc).date() -%}
        {%- set first = today - modules.datetime.timedelta(days=days) -%}
        {%- do return({"min": first.isoformat(), "max": today.isoformat()}) -%}
    {%- else -%}
        {%- do return(none) -%}
    {%- endif -%}
{%- endmacro %}


{% macro tidemark_parse_date(name, value) -%}
    {%- set text = value | string | trim -%}
    {%- set parsed = modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
    {%- if not parsed -%}
        {{ exceptions.raise_compiler_error(
            "var " ~ name ~ "=" ~ text ~ " is not an ISO date: use YYYY-MM-DD, e.g. 2026-01-31."
        ) }}
    {%- endif -%}
    {%- set year, month, day = text[0:4] | int, text[5:7] | int, text[8:10] | int -%}
    {%- if month < 1 or month > 12 or day < 1 or day > tidemark_days_in_month(year, month) -%}
        {{ exceptions.raise_compiler_error(
            "var " ~ name ~ "=" ~ text ~ " is not a calendar date: check month and day."
        ) }}
    {%- endif -%}
    {%- do return(modules.datetime.date(year, month, day)) -%}
{%- endmacro %}


{% macro tidemark_days_in_month(year, month) -%}
    {%- set next_first = modules.datetime.date(year + 1, 1, 1) if month == 12
        else modules.datetime.date(year, month + 1, 1) -%}
    {%- do return((next_first - modules.datetime.timedelta(days=1)).day) -%}
{%- endmacro %}


{#- SQL predicate keeping the rows of the day window on `column` (a date column). -#}
{% macro day_window_filter(column) -%}
    {%- set window = tidemark_day_window(is_incremental()) -%}
    {%- if window is none -%}
        true
    {%- else -%}
        {{ column }} between '{{ window.min }}'::date and '{{ window.max }}'::date
    {%- endif -%}
{%- endmacro %}


{#-
    SQL predicate keeping the rows whose timestamptz `column` falls on the day window's UTC
    days, as a half-open range `column >= <first day> 00:00 UTC and column < <day after the
    last> 00:00 UTC`: a form an index on the column serves (sargable), unlike a filter on the
    derived date `(column at time zone 'UTC')::date`, which reads every row of history. For a
    timestamptz column it keeps exactly the rows day_window_filter keeps on that derived date
    (a timestamptz lies on UTC day D exactly when it is >= D 00:00+00 and < D+1 00:00+00), so use
    it instead of that filter, not beside it: the two together make the planner multiply their
    selectivities (a day's 3,000 orders estimated as 16). `true` without a window (a full build).
-#}
{% macro day_window_range(column) -%}
    {%- set window = tidemark_day_window(is_incremental()) -%}
    {%- if window is none -%}
        true
    {%- else -%}
        {%- set first = modules.datetime.date.fromisoformat(window.min) -%}
        {%- set after = modules.datetime.date.fromisoformat(window.max) + modules.datetime.timedelta(days=1) -%}
        {{ column }} >= '{{ first.isoformat() }} 00:00:00+00'::timestamptz
        and {{ column }} < '{{ after.isoformat() }} 00:00:00+00'::timestamptz
    {%- endif -%}
{%- endmacro %}


{#-
    SQL predicate keeping the rows whose `column` is among the keys `keys_query` returns (a
    select of the window's keys, e.g. `select orders.order_id from orders`) when a day window is
    set, so a one-day build reads only the rows of its day's keys; `true` without a window (a
    full build joins everything anyway, and the semi-join would only add work).
-#}
{% macro day_window_keys(column, keys_query) -%}
    {%- if tidemark_day_window(is_incremental()) is none -%}
        true
    {%- else -%}
        {{ column }} in ({{ keys_query }})
    {%- endif -%}
{%- endmacro %}


{#-
    Whether the run has a day window (a partition run, a backfill, vars min_date / max_date):
    a test over the window's rows may then look each key up by index; without one (a plain
    `dbt test` / `dbt build`, CI) it reads all of history, where one grouped pass per table is
    linear and per-key lookups are not. Renders `yes` with a window and nothing without one, so
    `{% if has_day_window() %}` works in dbt and in sqlfluff's stand-in alike.
-#}
{% macro has_day_window() -%}
    {%- if tidemark_day_window(is_incremental()) is not none -%}yes{%- endif -%}
{%- endmacro %}
