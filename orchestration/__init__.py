"""Tidemark orchestration: the Dagster code location, the one-machine stack and the CLI.

Loading the code location (``dagster dev -m orchestration.definitions``, or a run's process)
pins the session settings of every database connection it makes
(:mod:`tidemark.session_env`), as the ``tidemark`` command does.
"""

from tidemark.session_env import pin_session_environment

pin_session_environment()
