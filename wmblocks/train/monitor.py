"""GPU utilisation and memory while training, for the progress line and the metrics.

On a CUDA device a daemon thread samples NVML's utilisation (the share of the last
sample period in which a kernel ran, ``torch.cuda.utilization``; it needs the
``nvidia-ml-py`` package, the ``gpu`` extra) every ``interval`` seconds; :meth:`read`
returns the mean since the previous read together with the caching allocator's
memory counters. None of these queries synchronises with the device. On other
devices :meth:`read` returns nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

GB = 1e9


def cuda_memory(device: torch.device) -> dict[str, float]:
    """The caching allocator's counters for ``device``, in GB (host-side, no sync):
    allocated now, the peak allocated since start-up, and reserved."""
    return {
        "gpu/memory_gb": torch.cuda.memory_allocated(device) / GB,
        "gpu/peak_memory_gb": torch.cuda.max_memory_allocated(device) / GB,
        "gpu/reserved_gb": torch.cuda.memory_reserved(device) / GB,
    }


class DeviceMonitor:
    """Utilisation and memory of the training device.

    Args:
        device: the training device; nothing is measured unless it is CUDA.
        interval: seconds between utilisation samples.
        utilization: ``() -> percent``; default ``torch.cuda.utilization(device)``.
            Where it raises at the first call (no ``nvidia-ml-py``, no NVML), only
            memory is reported, and :attr:`note` says why.
        memory: ``() -> {name: GB}``; default :func:`cuda_memory`.
    """

    def __init__(
        self,
        device: torch.device,
        interval: float = 0.5,
        utilization: Callable[[], float] | None = None,
        memory: Callable[[], dict[str, float]] | None = None,
    ):
        device = torch.device(device)
        self.active = device.type == "cuda"
        if self.active and device.index is None and utilization is None:
            # The sampler thread has its own current device: fix the index here.
            device = torch.device("cuda", torch.cuda.current_device())
        self.note: str | None = None
        self._memory = memory or (lambda: cuda_memory(device))
        self._utilization = utilization or (lambda: torch.cuda.utilization(device))
        self._sum, self._n = 0.0, 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not self.active:
            return
        try:
            self._sample()
        except Exception as err:  # noqa: BLE001 - NVML missing or unusable: memory only
            self.note = f"GPU utilisation not measured ({type(err).__name__}: {err})"
            if isinstance(err, ModuleNotFoundError):
                self.note += "; pip install nvidia-ml-py (the gpu extra) for it"
            return
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        value = float(self._utilization())
        with self._lock:
            self._sum += value
            self._n += 1

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._sample()
            except Exception:  # noqa: BLE001 - a failed sample is skipped, not fatal
                continue

    def read(self) -> dict[str, float]:
        """``gpu/util_percent`` (mean of the samples since the last read, when any) and
        the memory counters in GB; ``{}`` off CUDA."""
        if not self.active:
            return {}
        out = dict(self._memory())
        with self._lock:
            if self._n:
                out["gpu/util_percent"] = self._sum / self._n
            self._sum, self._n = 0.0, 0
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
