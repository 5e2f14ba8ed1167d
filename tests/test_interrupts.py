"""Interrupts land between tracking-store calls, never inside one (dlf.interrupts)."""
from __future__ import annotations

import signal
import sqlite3

import pytest

from dlf.interrupts import HeldCalls, held, ignored


def test_an_interrupt_inside_a_held_block_is_delivered_after_it():
    done = []
    with pytest.raises(KeyboardInterrupt), held():
        signal.raise_signal(signal.SIGINT)
        done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_ignored_swallows_interrupts_and_restores_the_handler():
    with ignored():
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_held_calls_complete_a_store_write_before_the_interrupt(tmp_path):
    """The failure it prevents: Ctrl-C inside a SQLite statement kept the database locked for the
    same process, so the interrupted run could not be closed."""

    class Store:
        def __init__(self):
            self.con = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
            self.con.execute("CREATE TABLE t (x)")
            self.version = 3

        def write(self, x):
            self.con.execute("BEGIN IMMEDIATE")
            self.con.execute("INSERT INTO t VALUES (?)", (x,))
            signal.raise_signal(signal.SIGINT)  # lands mid-transaction
            self.con.execute("COMMIT")
            return x

    store = HeldCalls(Store())
    assert store.version == 3  # plain attributes pass through
    with pytest.raises(KeyboardInterrupt):
        store.write(1)
    other = sqlite3.connect(tmp_path / "s.db", timeout=0.1)
    other.execute("INSERT INTO t VALUES (2)")  # not locked: the write completed
    other.commit()
    assert [r[0] for r in other.execute("SELECT x FROM t ORDER BY x")] == [1, 2]
