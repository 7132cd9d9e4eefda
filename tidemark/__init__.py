"""Tidemark on one machine: the embedded stack, the demo source and the ``tidemark`` CLI."""
