"""OpenMP's waiting policy for CTranslate2's threads: a process-wide setting that libgomp reads
once, when CTranslate2 is first loaded, so each place here that imports CTranslate2 or
faster-whisper calls :func:`spin_briefly_then_sleep` just before (the engine, the GPU queries,
fetching a hub model).
Never at import time: the benchmark's faster-whisper baseline imports this package and must run
with the environment a user's own script would have."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

OMP_WAIT_POLICY = "OMP_WAIT_POLICY"
GOMP_SPINCOUNT = "GOMP_SPINCOUNT"
OMP_SPIN_COUNT = 1000
"""Spins before a waiting OpenMP thread sleeps. Measured on the 2-core benchmark machine when it
was chosen: 1,000 decoded as fast as any larger count, 300 or fewer as slowly as none."""


def spin_briefly_then_sleep() -> None:
    """Have OpenMP (CTranslate2's threads) spin :data:`OMP_SPIN_COUNT` times while waiting for
    work, then sleep, unless the environment already sets either variable.

    Whisper's decoder runs one small step per token, each a few OpenMP regions a few
    microseconds long. libgomp's default (300,000 spins, cut to 100 once a process has more
    OpenMP threads than cores, as two workers on two cores have) and the passive policy (no spin
    at all) both put waiting threads to sleep between those regions, and waking them costs more
    than the work: on the 2-core benchmark machine one recording at a time ran about 1.2x as fast
    as with passive waits or libgomp's default (decoding twice as fast, the encoder unchanged),
    and eight offered at once about as fast (0.96x and 1.04x passive's in two runs; the sweep in
    ``bench/RESULTS.md``). A short spin wastes no core for longer than a few microseconds. libgomp reads
    these once, when CTranslate2 is first loaded, so they are set before that import; later they
    change nothing.
    """
    if "ctranslate2" in sys.modules:
        if os.environ.get(GOMP_SPINCOUNT) is None:
            log.debug("CTranslate2 was loaded before the engine: OpenMP keeps its wait policy")
        return
    if OMP_WAIT_POLICY in os.environ or GOMP_SPINCOUNT in os.environ:
        return
    # ACTIVE makes libgomp use the spin count as given, with more threads than cores too
    os.environ[OMP_WAIT_POLICY] = "ACTIVE"
    os.environ[GOMP_SPINCOUNT] = str(OMP_SPIN_COUNT)
