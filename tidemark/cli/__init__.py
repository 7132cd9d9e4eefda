"""The ``tidemark`` command line: one module per command group."""
