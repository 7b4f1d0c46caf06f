"""The worker's garbage-collector tuning (streamrec.stream.app.tune_gc)."""

import gc

from streamrec.stream.app import tune_gc


def test_tune_gc_sets_thresholds_and_freezes_what_is_alive() -> None:
    before = gc.get_threshold()
    try:
        tune_gc((12_345, 11, 12), freeze=True)
        assert gc.get_threshold() == (12_345, 11, 12)
        assert gc.get_freeze_count() > 0  # start-up objects left the collected generations
        gc.unfreeze()
        tune_gc(None, freeze=False)  # null thresholds leave Python's, no freeze
        assert gc.get_threshold() == (12_345, 11, 12)
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
