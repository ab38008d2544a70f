"""The callpipe-asr benchmark: accuracy, invented text, speed and memory on telephone audio.

Run it with ``./scripts/bench`` (``--quick`` for a short development run); it writes
``bench/RESULTS.md``. See ``bench/run.py`` for what each part measures.
"""
