"""A fake of the ``pynvml`` module that behaves like the real one on awkward hardware."""
from __future__ import annotations

from types import SimpleNamespace

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1


class NVMLError(Exception):
    def __init__(self, value):
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeDevice:
    def __init__(self, name, util=50, used_mb=1000, total_mb=24000, power_mw=200_000, temp=60,
                 sm_clock=1800, unsupported=(), lost=False):
        self.name, self.util, self.used_mb, self.total_mb = name, util, used_mb, total_mb
        self.power_mw, self.temp, self.sm_clock = power_mw, temp, sm_clock
        self.unsupported = set(unsupported)
        self.lost = lost


class FakeNvml:
    """Module-like: ``Nvml(FakeNvml([...]))``. `missing_library` mimics a machine without NVML."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM

    def __init__(self, devices=(), missing_library=False):
        self.devices = list(devices)
        self.missing_library = missing_library

    def nvmlInit(self):
        if self.missing_library:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.devices[index]

    def _check(self, device, field):
        if device.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if field in device.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetName(self, device):
        return device.name.encode()  # older bindings return bytes

    def nvmlDeviceGetUtilizationRates(self, device):
        self._check(device, "utilization")
        return SimpleNamespace(gpu=device.util, memory=10)

    def nvmlDeviceGetMemoryInfo(self, device):
        self._check(device, "memory")
        mb = 1024 * 1024
        return SimpleNamespace(used=device.used_mb * mb, total=device.total_mb * mb,
                               free=(device.total_mb - device.used_mb) * mb)

    def nvmlDeviceGetPowerUsage(self, device):
        self._check(device, "power")
        return device.power_mw

    def nvmlDeviceGetTemperature(self, device, sensor):
        self._check(device, "temperature")
        return device.temp

    def nvmlDeviceGetClockInfo(self, device, clock):
        self._check(device, "sm_clock")
        return device.sm_clock
