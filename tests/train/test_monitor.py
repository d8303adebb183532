"""GPU utilisation and memory reporting (wmblocks.train.monitor), with the CUDA queries
replaced by fakes: this CPU has no GPU. The loop writes what the monitor reads into
metrics.jsonl and the progress line."""

import time

import torch

import wmblocks.train.loop as loop_module
from tests.recipes.common import TINY
from tests.train.test_loop import counting_build
from wmblocks.train.config import parse_config
from wmblocks.train.logging import read_metrics
from wmblocks.train.loop import Trainer
from wmblocks.train.monitor import DeviceMonitor

CUDA = torch.device("cuda")
MEMORY = {"gpu/memory_gb": 1.5, "gpu/peak_memory_gb": 2.0, "gpu/reserved_gb": 3.0}


def test_off_cuda_nothing_is_measured():
    monitor = DeviceMonitor(torch.device("cpu"), utilization=lambda: 1 / 0)
    assert not monitor.active and monitor.read() == {} and monitor.note is None
    monitor.close()


def test_utilisation_is_the_mean_of_the_samples_since_the_last_read():
    values = iter([10.0, 20.0, 30.0, 40.0])
    monitor = DeviceMonitor(  # the first sample is taken at start-up (10)
        CUDA, interval=3600.0, utilization=lambda: next(values), memory=lambda: MEMORY
    )
    monitor._sample()
    monitor._sample()
    first = monitor.read()
    assert first == {**MEMORY, "gpu/util_percent": 20.0}
    assert monitor.read() == MEMORY  # no sample since: memory only
    monitor._sample()
    assert monitor.read()["gpu/util_percent"] == 40.0
    monitor.close()


def test_the_sampler_thread_samples_until_closed():
    monitor = DeviceMonitor(CUDA, interval=0.01, utilization=lambda: 5.0, memory=lambda: MEMORY)
    deadline = time.time() + 5.0
    while monitor._n < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert monitor.read()["gpu/util_percent"] == 5.0
    monitor.close()
    monitor.read()  # drains a sample taken between the read and the close
    assert monitor._thread is None and monitor.read() == MEMORY


def test_without_nvml_only_memory_is_reported_and_the_note_says_why():
    def missing():
        raise ModuleNotFoundError("No module named 'pynvml'")

    monitor = DeviceMonitor(CUDA, utilization=missing, memory=lambda: MEMORY)
    assert monitor.read() == MEMORY
    assert "nvidia-ml-py" in monitor.note and "pynvml" in monitor.note
    assert monitor._thread is None
    monitor.close()

    def unsupported():
        raise RuntimeError("NVML: Not Supported")

    mig = DeviceMonitor(CUDA, utilization=unsupported, memory=lambda: MEMORY)
    assert "Not Supported" in mig.note and "pip" not in mig.note


def test_the_loop_logs_what_the_monitor_reads(tmp_path, monkeypatch):
    reads = []

    class FakeMonitor(DeviceMonitor):
        def __init__(self, device):
            super().__init__(CUDA, interval=60.0, utilization=lambda: 87.0, memory=self.mem)

        def mem(self):
            reads.append(1)
            return MEMORY

    monkeypatch.setattr(loop_module, "DeviceMonitor", FakeMonitor)
    config_cls, build, _ = counting_build("dreamer_v1")
    args = [*TINY["dreamer_v1"], "--batch", "4", "--length", "16", "--steps", "120"]
    args += ["--train-ratio", "32", "--prefill", "20", "--eval-every", "0", "--log-every", "50"]
    args += ["--eval-episodes", "1", "--logdir", str(tmp_path / "run")]
    trainer = Trainer(config_cls, parse_config(config_cls, args), build)
    trainer.train()
    trainer.close()
    rows = [r for r in read_metrics(str(tmp_path / "run" / "metrics.jsonl")) if "updates" in r]
    assert rows and reads
    assert rows[0]["gpu/util_percent"] == 87.0  # the sample taken at start-up
    assert all(r["gpu/peak_memory_gb"] == 2.0 for r in rows)
