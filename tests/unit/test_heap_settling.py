"""After start-up the server freezes what it built, so full collections stop walking it."""

from __future__ import annotations

import gc
import weakref

from extauthz_server.app.server import settle_heap


class _Node:
    def __init__(self) -> None:
        self.peer: _Node | None = None


def test_what_start_up_built_is_kept_out_of_collections() -> None:
    built_at_start = _Node()
    built_at_start.peer = built_at_start
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        # get_objects() lists what collections walk; frozen objects are not among them.
        assert not any(found is built_at_start for found in gc.get_objects())
    finally:
        gc.unfreeze()


def test_cycles_built_after_start_up_are_still_collected() -> None:
    try:
        settle_heap()
        later = _Node()
        later.peer = later
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
