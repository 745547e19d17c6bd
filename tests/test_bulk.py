"""headstart.bulk.paused_gc: the collector is off inside, restored after, also on errors."""

from __future__ import annotations

import gc

import pytest

from headstart.bulk import paused_gc


@paused_gc
def state(inner=None):
    return gc.isenabled(), inner() if inner else None


@paused_gc
def failing():
    raise ValueError("boom")


def test_collector_paused_inside_and_restored_after_nested_calls_and_errors():
    assert gc.isenabled()
    assert state(lambda: state()[0]) == (False, False)
    assert gc.isenabled()
    with pytest.raises(ValueError, match="boom"):
        failing()
    assert gc.isenabled()
    gc.disable()
    try:
        state()
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
