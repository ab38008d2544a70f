"""Which device a model runs on: ``cpu``, ``cuda`` (a given GPU) or ``auto``, checked up front.

A model configured for CUDA on a machine where CUDA is unusable must stop the server at
start-up with the reason, not crash the first request. CTranslate2 reports how many CUDA
devices it can use (0 without a driver, a GPU or its CUDA build) and which compute types each
supports; the CUDA libraries themselves (cuBLAS, cuDNN) only load at the first inference, so
the faster-whisper engine also runs one tiny inference when it loads on a GPU.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import EngineError
from ..settings import GPU_ONLY_COMPUTE_TYPES, ModelSettings
from .openmp import spin_briefly_then_sleep

log = logging.getLogger(__name__)

CPU_FALLBACK_COMPUTE_TYPE = "int8"
CUDA_LIBRARY_PACKAGES = ("nvidia.cublas.lib", "nvidia.cudnn.lib")
"""Where the ``gpu`` extra's wheels keep the shared libraries."""
GPU_HINT = (
    "check `nvidia-smi`, and install the CUDA runtime libraries CTranslate2 needs with "
    "pip install 'callpipe-asr[gpu]'; or set device: cpu (or auto)"
)


@dataclass(frozen=True)
class Placement:
    """Where a model runs once ``auto`` is decided."""

    device: str
    """``cpu`` or ``cuda``."""
    device_index: int
    compute_type: str


def load_cuda_libraries() -> list[str]:
    """Load cuBLAS and cuDNN from the ``gpu`` extra's wheels (``nvidia-cublas-cu12``,
    ``nvidia-cudnn-cu12``) where they are installed, so CTranslate2 finds them without an
    ``LD_LIBRARY_PATH`` edit: a library already loaded under its soname satisfies CTranslate2's own
    ``dlopen``. Libraries the system provides are left to the system. The paths loaded."""
    import ctypes
    import importlib.util

    loaded: list[str] = []
    for package in CUDA_LIBRARY_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for directory in spec.submodule_search_locations:
            for library in sorted(Path(directory).glob("lib*.so*")):
                try:
                    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
                    loaded.append(str(library))
                except OSError as exc:  # one unloadable file must not hide the others; CTranslate2 will say
                    log.debug("could not load %s: %s", library, exc)
    return loaded


def cuda_device_count() -> int:
    """CUDA devices CTranslate2 can use here (0 where it cannot load CUDA at all)."""
    spin_briefly_then_sleep()
    import ctranslate2  # imported here: only faster-whisper models on a GPU need it

    try:
        return int(ctranslate2.get_cuda_device_count())
    except RuntimeError:
        return 0


def supported_compute_types(device: str, index: int) -> frozenset[str]:
    spin_briefly_then_sleep()
    import ctranslate2

    return frozenset(ctranslate2.get_supported_compute_types(device, index))


def place(name: str, model: ModelSettings, gpus: int | None = None) -> Placement:
    """The device, GPU and compute type ``model`` runs with, or :class:`EngineError` saying why
    the CUDA it asks for is unusable. ``gpus`` overrides the CUDA device count (tests)."""
    if model.engine != "faster-whisper" or model.device == "cpu":
        return Placement("cpu", 0, model.compute_type)
    if gpus is None:
        load_cuda_libraries()
    count = cuda_device_count() if gpus is None else gpus
    if model.device == "auto":
        if count > model.device_index:
            return _checked(name, Placement("cuda", model.device_index, model.compute_type))
        compute_type = CPU_FALLBACK_COMPUTE_TYPE if model.compute_type in GPU_ONLY_COMPUTE_TYPES else model.compute_type
        log.info("model %s: no CUDA device, running on the CPU (%s)", name, compute_type)
        return Placement("cpu", 0, compute_type)
    if count == 0:
        raise EngineError(f"model '{name}' asks for device: cuda, but CTranslate2 finds no usable CUDA device: {GPU_HINT}")
    if model.device_index >= count:
        raise EngineError(
            f"model '{name}' asks for CUDA device_index {model.device_index}, but only {count} CUDA device(s) "
            f"are usable (numbered from 0)"
        )
    return _checked(name, Placement("cuda", model.device_index, model.compute_type))


def _checked(name: str, placement: Placement) -> Placement:
    if placement.compute_type in ("default", "auto"):
        return placement
    supported = supported_compute_types(placement.device, placement.device_index)
    if placement.compute_type not in supported:
        raise EngineError(
            f"model '{name}': CUDA device {placement.device_index} does not support compute_type "
            f"{placement.compute_type} (it supports {', '.join(sorted(supported))})"
        )
    return placement


def placed_settings(model: ModelSettings, placement: Placement) -> ModelSettings:
    """``model`` with ``auto`` replaced by where it actually runs."""
    return dataclasses.replace(
        model, device=placement.device, device_index=placement.device_index, compute_type=placement.compute_type
    )
