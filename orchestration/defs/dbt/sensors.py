"""``mart_freshness_sensor`` (running by default): evaluates the marts' ``freshness_check``."""

from orchestration.defs.dbt.checks import mart_freshness
from orchestration.defs.dbt.freshness import mart_freshness_sensor

mart_freshness_sensor_def = mart_freshness_sensor(mart_freshness)
