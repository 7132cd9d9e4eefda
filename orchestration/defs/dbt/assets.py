"""The daily truth in Dagster: the dbt assets.

* ``tag:unpartitioned`` models (staging, intermediate, dims) are one ``@dbt_assets``;
  ``tag:daily`` marts another, on a :class:`~dagster.DailyPartitionsDefinition` with a
  single-run backfill policy: a backfill of N days is ONE ``dbt build --vars
  {min_date, max_date}`` over the run's partition window.
* dbt sources ``shop.<table>`` map to the ingestion assets ``shop/<table>``; models are keyed
  ``<schema>/<model>`` (``staging/stg_shop__orders``, ``marts/fct_daily_store_revenue``).
* dbt tests are asset checks (dagster-dbt's default), source tests included: they are checks
  of the ingestion assets and run with the unpartitioned build; those tagged ``full_history``
  run once a day instead (:mod:`orchestration.defs.dbt.full_history`).
"""



from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.defs.dbt.full_history import (
    full_history_excludes,
    tagged_check_keys,
    tagged_tests,
)
from orchestration.defs.dbt.partitions import DAILY_TAG, daily_partitions, day_vars
from orchestration.defs.dbt.project import (
    clean_invocations,
    invocation_dir,
    tidemark_dbt_project,
)
from orchestration.defs.dbt.state import current_state
from orchestration.defs.dbt.translator import TidemarkTranslator
from orchestration.defs.errors import DefinitionsError
from orchestration.defs.resources import TidemarkResource

PROJECT = tidemark_dbt_project()
STATE = current_state()
if STATE.manifest is None:  # orchestration.definitions leaves dbt out then
    raise DefinitionsError(STATE.failure.explain() if STATE.failure else
                           f"No dbt manifest at {PROJECT.manifest_path}.")
MANIFEST = STATE.manifest
#: The manifest the dbt assets below were defined from, as loaded (``target/manifest.json`` is
#: rewritten when another process parses an edited project): each build compares against it.
LOADED_MANIFEST = Path(MANIFEST).read_bytes()
TRANSLATOR = TidemarkTranslator(STATE.warning(), STATE.metadata())


def run_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource, tidemark: TidemarkResource,
            args: list[str], extra_metadata: dict[str, Any] | None = None,
            indirect_selection: str = "buildable", env: dict[str, str] | None = None
            ) -> Iterator[Any]:
    """Run one dbt command for the selected assets and stream its events to Dagster.

    The profile is pointed at the resource's landing URL for the invocation
    (:meth:`TidemarkResource.dbt_cli`, with ``env`` for the child); the invocation's directory
    goes under ``<target>/runs`` and old ones are cleaned afterwards. ``--state`` names the
    manifest these definitions were loaded from (``state:new`` in :func:`build_args`). Dagster
    overrides ``indirect_selection`` when it subsets the checks.
    """
    if STATE.failure is not None:  # dbt would stop at the same parse error
        raise dg.Failure(STATE.failure.explain(), metadata=STATE.metadata())
    target = invocation_dir(context.op_execution_context.op.name, context.run.run_id)
    loaded = target / "loaded"
    loaded.mkdir(parents=True)
    (loaded / "manifest.json").write_bytes(LOADED_MANIFEST)
    invocation = tidemark.dbt_cli(dbt, [*args, "--state", str(loaded)],
                                  {"DBT_INDIRECT_SELECTION": indirect_selection, **(env or {})},
                                  context=context, target_path=target)
    for event in invocation.stream():
        if extra_metadata and isinstance(event, dg.Output):
            event = event.with_metadata({**event.metadata, **extra_metadata})
        yield event
    clean_invocations()


def manifest_sources(manifest: Path = MANIFEST) -> list[str]:
    """The Tidemark sources the dbt project reads: ``mydb`` for dbt sources ``mydb`` and
    ``mydb_cdc`` (``_mydb__sources.yml``)."""
    import json

    names = {source["source_name"] for source in
             json.loads(Path(manifest).read_text()).get("sources", {}).values()}
    return sorted({name.removesuffix("_cdc") for name in names})


def unregistered_excludes(context: dg.AssetExecutionContext, tidemark: TidemarkResource,
                          sources: list[str] | None = None) -> list[str]:
    """dbt ``--exclude`` arguments for the sources of the project (``sources``, default
    :func:`manifest_sources`) not registered in this landing, with a warning naming them.

    A clone carries ``_mydb__sources.yml`` (``tidemark contracts init mydb``) and models over
    it; a stack where ``mydb`` is not registered (a colleague's fresh ``tidemark up``, CI) has
    no ``mydb.*`` or ``cdc.mydb__*``, so their source tests and models would fail the build
    ("relation ... does not exist"). They are left out of it instead.
    """
    from orchestration.defs.ingestion.state import ingestible_sources

    _, unregistered = ingestible_sources(tidemark, manifest_sources() if sources is None
                                         else sources)
    if not unregistered:
        return []
    context.log.warning(
        f"Not built: the dbt sources, source tests and models over {', '.join(unregistered)}, "
        "not registered in this landing (`tidemark source add NAME`, README \"Your own "
        "database\"); they build once it is registered and landed.")
    return [f"source:{name}+" for name in unregistered] + [
        f"source:{name}_cdc+" for name in unregistered]


def build_args(context: dg.AssetExecutionContext, tidemark: TidemarkResource) -> list[str]:
    """``dbt build`` of the step's selection, without unit tests, the sources not registered
    here (:func:`unregistered_excludes`), the whole-history tests the step did not select
    (:func:`full_history_excludes`) and the nodes new since the definitions were loaded.

    dbt parses the project's files again when it starts: a model, or a ``_mydb__sources.yml``
    (``tidemark contracts init mydb``), saved after this code location loaded its manifest is
    in dbt's selection but not among the step's assets and checks, and dagster-dbt failed the
    whole step on its first result (``KeyError: 'test.tidemark.source_...'``; the first build of
    ``tidemark up`` then stopped the stack). ``state:new`` (against ``--state``, the loaded
    manifest: :func:`run_dbt`) leaves them to the next load of the definitions.
    """
    # one --exclude of space-separated values: dagster-dbt takes the flag's values apart
    excluded = ["test_type:unit", "state:new", *unregistered_excludes(context, tidemark),
                *full_history_excludes(context.selected_asset_check_keys, FULL_HISTORY)]
    return ["build", "--exclude", " ".join(excluded)]


@dbt_assets(manifest=MANIFEST, project=PROJECT, select="tag:unpartitioned source:*",
            dagster_dbt_translator=TRANSLATOR, name="dbt_unpartitioned")
def dbt_unpartitioned(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                      tidemark: TidemarkResource):
    """Staging and intermediate views, the dimension tables and the source tests (``dbt build``).

    Tests run with ``buildable`` indirect selection: a test that also reads a daily mart (a
    mart's relationship to a dimension) waits for the marts' step, where the marts exist. Unit
    tests are dbt's CI (``dbt build`` in tests/dbt_project), not production builds.
    """
    yield from run_dbt(context, dbt, tidemark, build_args(context, tidemark))


@dbt_assets(manifest=MANIFEST, project=PROJECT, select=f"tag:{DAILY_TAG}",
            dagster_dbt_translator=TRANSLATOR, name="dbt_daily_marts",
            partitions_def=daily_partitions(),  # replaced at each build: with_current_start
            backfill_policy=dg.BackfillPolicy.single_run())
def dbt_daily_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                    tidemark: TidemarkResource):
    """Daily marts for the run's days: one ``dbt build`` over the partition window."""
    dbt_vars = day_vars(context.partition_time_window)
    context.log.info(f"dbt build of the daily marts for {dbt_vars}")
    # Unit tests bring their own fixture days and would see the partition's vars: they run in
    # dbt's own CI (tests/dbt_project), not in a partition build. Tests run with ``eager``
    # indirect selection: every test of a mart, also one reading a dimension (built by the
    # unpartitioned step before this one).
    # The window goes in TIDEMARK_DBT_MIN_DATE / _MAX_DATE (macros/day_window.sql), not in
    # --vars: a change of --vars makes dbt parse the whole project again, while the macro reads
    # these only when it compiles the run's SQL, so dbt parses nothing again for them.
    yield from run_dbt(context, dbt, tidemark, build_args(context, tidemark),
                       {"dbt_vars": dbt_vars}, indirect_selection="eager",
                       env={"TIDEMARK_DBT_MIN_DATE": dbt_vars["min_date"],
                            "TIDEMARK_DBT_MAX_DATE": dbt_vars["max_date"]})


#: Checks of the dbt tests tagged ``full_history`` (:mod:`orchestration.defs.dbt.full_history`):
#: out of the builds unless a run selects them.
FULL_HISTORY = tagged_check_keys([dbt_unpartitioned, dbt_daily_marts], tagged_tests(MANIFEST))


def daily_mart_keys() -> list[dg.AssetKey]:
    """Keys of the daily marts."""
    return sorted(dbt_daily_marts.keys, key=lambda k: k.to_user_string())
