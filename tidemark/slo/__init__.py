"""Service-level objectives: is the freshness promise kept (``tidemark.slo.freshness``)."""
