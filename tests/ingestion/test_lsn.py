"""Log sequence numbers: text forms, and the SQL for a server's WAL position now."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from ingestion.lsn import WAL_NOW, lsn_to_str, str_to_lsn, wal_position
from tidemark.stack.embedded import EmbeddedServer


def test_lsn_text_round_trips() -> None:
    for value in (0, 1, 0xFFFFFFFF, 0x16B374D848, (0xFFFFFFFF << 32) | 0xFFFFFFFF):
        assert str_to_lsn(lsn_to_str(value)) == value
    assert lsn_to_str(0x16B374D848) == "16/B374D848"
    with pytest.raises(ValueError, match="not an LSN"):
        str_to_lsn("16B374D848")


def test_each_wal_position_is_the_primarys_own(pg: EmbeddedServer) -> None:
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        row = conn.execute(sql.SQL("select {}, {}, {}, pg_current_wal_flush_lsn()").format(
            WAL_NOW, wal_position("insert"), wal_position("flush"))).fetchone()
        now, insert, flush, flushed_after = (str_to_lsn(str(v)) for v in row)
    assert 0 < flush <= now <= insert
    assert flush <= flushed_after
    with pytest.raises(ValueError, match="unknown WAL position kind 'replay'"):
        wal_position("replay")
