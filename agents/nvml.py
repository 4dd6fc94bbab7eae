"""The GPUs of this node through NVML (nvidia-ml-py's `pynvml`, imported when a reader is made:
importing `agents` never needs it or a driver).

Per GPU and poll: utilization (GPU, memory), memory used/total (nvmlMemory_v2: "used"
excludes what the driver reserves), power (NVML's mW as W), the total-energy counter (mJ
since the driver loaded), temperature, volatile ECC totals (corrected, uncorrected), the Xid
events since the previous poll, and the running compute processes with their GPU memory.
uuid and name are read once, at start.

Absent, never 0: a field the GPU does not support (NVML: NOT_SUPPORTED, or a function this
driver lacks) is None; any other NVML error leaves it None too and puts NVML's message in the
sample's `errors` under the field's name, every poll it persists. A value NVML returns out of
the schema's range is treated the same way (its own message), so one odd reading never sinks
the whole report.

MIG: a GPU in MIG mode is reported with its own fields (NVML does not give utilization for
it) and no processes; each of its MIG devices follows as a sample of its own (index = the
parent's, `mig_parent_uuid` set) with its memory and its processes, MIG devices being what
jobs get. MIG devices are listed again on every poll (they can be made and destroyed
without a reset).

Xid: one NVML event set, registered at start for critical Xid errors on every GPU, drained
at each poll without waiting (nvmlEventSetWait with timeout 0 until it times out). A GPU
that cannot be registered (for a reason other than not supporting it) carries the reason in
`errors["xids"]` on every poll, so "no Xid" is never silently "not watched".
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Any, TypeVar

from agents.reader import ReaderKind, ReaderUnavailable
from agents.schema import (
    MAX_COUNTER,
    MAX_MEMORY_BYTES,
    MAX_POWER_W,
    MAX_PROCESSES_PER_GPU,
    MAX_TEMP_C,
    MAX_XID,
    MIN_TEMP_C,
    GpuProcess,
    GpuSample,
    XidEvent,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
SIMULATED_HINT = "or run the agent with --simulated-gpus N to try it on a machine without GPUs"
MAX_XIDS_PER_POLL = 1_000  # what one sample can carry; an Xid storm beyond it waits a poll


@dataclass
class PhysicalGpu:
    index: int
    handle: Any  # pynvml's nvmlDevice_t, or None while NVML refuses to give it
    uuid: str
    name: str
    address: int | None  # the handle's value, to match Xid events to their GPU
    mig_capable: bool = False
    setup_errors: dict[str, str] = field(default_factory=dict)  # reported on every poll


class NvmlReader:
    """Reads every GPU of the node through NVML. Raises ReaderUnavailable when NVML cannot be
    used at all (no library, no driver), with what to do about it."""

    kind: ReaderKind = "nvml"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._nvml = load_nvml()
        nvml = self._nvml
        self._unsupported = (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound)
        # Newer calls first; a driver that lacks one makes us use the older one for good.
        self._memory_v2 = True
        self._temperature_v = True
        self._event_set: Any = None
        self._event_error = ""  # why no Xid can be read at all, if so
        try:
            self._driver = str(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError as error:
            log.warning("NVML cannot tell the driver's version: %s", error)
            self._driver = ""
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as error:
            self.close()
            raise ReaderUnavailable(
                f"NVML started but cannot count the GPUs ({error}): check the NVIDIA driver "
                f"(nvidia-smi should list the GPUs), {SIMULATED_HINT}"
            ) from error
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as error:
            self._event_error = f"cannot watch Xid events: {error}"
            log.error("NVML: %s", self._event_error)
        self._gpus = [self._open_gpu(index) for index in range(count)]
        if not self._gpus:
            log.warning("NVML sees no GPU on this node")

    # --- GpuReader ---------------------------------------------------------------------

    def driver_version(self) -> str:
        return self._driver

    def read(self) -> list[GpuSample]:
        xids = self._drain_xids()
        samples: list[GpuSample] = []
        for gpu in self._gpus:
            if gpu.handle is None:
                self._retry_handle(gpu)
            if gpu.handle is None:
                errors = dict(gpu.setup_errors)
                samples.append(GpuSample(index=gpu.index, uuid=gpu.uuid, errors=errors))
                continue
            migs = self._mig_devices(gpu)
            in_mig_mode = migs is not None
            samples.append(
                self._sample(
                    gpu.index,
                    gpu.handle,
                    uuid=gpu.uuid,
                    name=gpu.name,
                    errors=dict(gpu.setup_errors),
                    xids=xids.get(gpu.index, []),
                    processes=not in_mig_mode,
                )
            )
            samples.extend(migs or [])
        return samples

    def close(self) -> None:
        nvml = self._nvml
        if self._event_set is not None:
            try:
                nvml.nvmlEventSetFree(self._event_set)
            except nvml.NVMLError as error:
                log.warning("NVML could not free its event set: %s", error)
            self._event_set = None
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as error:
            log.warning("NVML did not shut down cleanly: %s", error)

    # --- start ---------------------------------------------------------------------------

    def _open_gpu(self, index: int) -> PhysicalGpu:
        gpu = PhysicalGpu(index, None, uuid=f"unknown-gpu-{index}", name="", address=None)
        self._retry_handle(gpu)
        return gpu

    def _retry_handle(self, gpu: PhysicalGpu) -> None:
        """Get the GPU's handle, uuid and name; on failure, say so in the GPU's errors."""
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(gpu.index)
        except nvml.NVMLError as error:
            gpu.setup_errors["handle"] = str(error)
            return
        gpu.setup_errors.pop("handle", None)
        gpu.handle = handle
        gpu.address = ctypes.cast(handle, ctypes.c_void_p).value
        errors: dict[str, str] = {}
        uuid = self._field(errors, "uuid", partial(text_of, nvml.nvmlDeviceGetUUID, handle))
        gpu.uuid = uuid or gpu.uuid
        gpu.name = (
            self._field(errors, "name", partial(text_of, nvml.nvmlDeviceGetName, handle)) or ""
        )
        gpu.setup_errors.update(errors)
        try:
            nvml.nvmlDeviceGetMigMode(handle)
            gpu.mig_capable = True
        except self._unsupported:
            gpu.mig_capable = False
        except nvml.NVMLError as error:
            gpu.mig_capable = True  # asked again at every poll, where the error shows
            log.warning("GPU %d: NVML cannot tell its MIG mode: %s", gpu.index, error)
        self._watch_xids(gpu)

    def _watch_xids(self, gpu: PhysicalGpu) -> None:
        """Register the GPU for critical Xid events."""
        nvml = self._nvml
        if self._event_set is None:
            return
        try:
            nvml.nvmlDeviceRegisterEvents(
                gpu.handle, nvml.nvmlEventTypeXidCriticalError, self._event_set
            )
        except self._unsupported:
            log.warning("GPU %d (%s): NVML gives no Xid events for it", gpu.index, gpu.uuid)
        except nvml.NVMLError as error:
            gpu.setup_errors["xids"] = f"cannot watch Xid events: {error}"
            log.error("GPU %d (%s): cannot watch Xid events: %s", gpu.index, gpu.uuid, error)

    # --- one poll ------------------------------------------------------------------------

    def _drain_xids(self) -> dict[int, list[XidEvent]]:
        """The Xid events waiting in the event set, by GPU index."""
        nvml = self._nvml
        found: dict[int, list[XidEvent]] = {}
        if self._event_set is None:
            return found
        by_address = {gpu.address: gpu.index for gpu in self._gpus if gpu.address is not None}
        for _ in range(MAX_XIDS_PER_POLL):
            try:
                data = nvml.nvmlEventSetWait_v2(self._event_set, 0)
            except nvml.NVMLError_Timeout:
                break
            except nvml.NVMLError as error:
                self._event_error = f"reading Xid events failed: {error}"
                break
            self._event_error = ""
            if not int(data.eventType) & int(nvml.nvmlEventTypeXidCriticalError):
                continue
            address = ctypes.cast(data.device, ctypes.c_void_p).value
            index = None if address is None else by_address.get(address)
            if index is None:
                log.warning("Xid %d from a GPU this agent does not know", int(data.eventData))
                continue
            xid = int(data.eventData)
            if not 0 <= xid <= MAX_XID:
                log.warning("NVML reported Xid %d, outside 0..%d: not a known Xid", xid, MAX_XID)
                continue
            found.setdefault(index, []).append(XidEvent(xid=xid, at=self._clock()))
        return found

    def _mig_devices(self, gpu: PhysicalGpu) -> list[GpuSample] | None:
        """The GPU's MIG devices when it is in MIG mode; None when it is not."""
        nvml = self._nvml
        if not gpu.mig_capable:
            return None
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(gpu.handle)
        except nvml.NVMLError as error:
            gpu.setup_errors["mig_mode"] = str(error)
            return None
        gpu.setup_errors.pop("mig_mode", None)
        if int(current) != int(nvml.NVML_DEVICE_MIG_ENABLE):
            return None
        samples: list[GpuSample] = []
        try:
            slots = int(nvml.nvmlDeviceGetMaxMigDeviceCount(gpu.handle))
        except nvml.NVMLError as error:
            gpu.setup_errors["mig_devices"] = str(error)
            return samples
        gpu.setup_errors.pop("mig_devices", None)
        for slot in range(slots):
            try:
                handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, slot)
            except nvml.NVMLError_NotFound:
                continue  # an empty slot
            except nvml.NVMLError as error:
                gpu.setup_errors[f"mig_device_{slot}"] = str(error)
                continue
            gpu.setup_errors.pop(f"mig_device_{slot}", None)
            errors: dict[str, str] = {}
            uuid = self._field(errors, "uuid", partial(text_of, nvml.nvmlDeviceGetUUID, handle))
            name = self._field(errors, "name", partial(text_of, nvml.nvmlDeviceGetName, handle))
            samples.append(
                self._sample(
                    gpu.index,
                    handle,
                    uuid=uuid or f"unknown-mig-{gpu.index}-{slot}",
                    name=name or "",
                    errors=errors,
                    parent_uuid=gpu.uuid,
                )
            )
        return samples

    def _sample(
        self,
        index: int,
        handle: Any,
        *,
        uuid: str,
        name: str,
        errors: dict[str, str],
        xids: list[XidEvent] | None = None,
        parent_uuid: str | None = None,
        processes: bool = True,
    ) -> GpuSample:
        nvml = self._nvml
        if self._event_error and parent_uuid is None:
            errors["xids"] = self._event_error
        util = self._field(
            errors, "util_gpu_pct", lambda: nvml.nvmlDeviceGetUtilizationRates(handle)
        )
        if util is None and "util_gpu_pct" in errors:
            errors["util_mem_pct"] = errors["util_gpu_pct"]
        memory = self._field(errors, "mem_used_bytes", lambda: self._memory(handle))
        if memory is None and "mem_used_bytes" in errors:
            errors["mem_total_bytes"] = errors["mem_used_bytes"]
        power_mw = self._field(errors, "power_w", lambda: int(nvml.nvmlDeviceGetPowerUsage(handle)))
        energy = self._field(
            errors, "energy_mj", lambda: int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        )
        temperature = self._field(errors, "temp_c", lambda: self._temperature(handle))
        corrected = self._field(errors, "ecc_corrected", lambda: self._ecc(handle, corrected=True))
        uncorrected = self._field(
            errors, "ecc_uncorrected", lambda: self._ecc(handle, corrected=False)
        )
        running = []
        if processes:
            running = self._field(errors, "processes", lambda: self._processes(handle)) or []
        if len(running) > MAX_PROCESSES_PER_GPU:
            errors["processes"] = (
                f"{len(running)} processes; the first {MAX_PROCESSES_PER_GPU} kept"
            )
            running = running[:MAX_PROCESSES_PER_GPU]
        return GpuSample(
            index=index,
            uuid=uuid,
            name=name,
            mig_parent_uuid=parent_uuid,
            util_gpu_pct=None
            if util is None
            else in_range(errors, "util_gpu_pct", util.gpu, 0, 100),
            util_mem_pct=None
            if util is None
            else in_range(errors, "util_mem_pct", util.memory, 0, 100),
            mem_used_bytes=None
            if memory is None
            else counted(errors, "mem_used_bytes", memory[0], MAX_MEMORY_BYTES),
            mem_total_bytes=None
            if memory is None
            else counted(errors, "mem_total_bytes", memory[1], MAX_MEMORY_BYTES),
            power_w=None
            if power_mw is None
            else in_range(errors, "power_w", power_mw / 1000.0, 0, MAX_POWER_W),
            energy_mj=None if energy is None else counted(errors, "energy_mj", energy, MAX_COUNTER),
            temp_c=None
            if temperature is None
            else in_range(errors, "temp_c", temperature, MIN_TEMP_C, MAX_TEMP_C),
            ecc_corrected=None
            if corrected is None
            else counted(errors, "ecc_corrected", corrected, MAX_COUNTER),
            ecc_uncorrected=None
            if uncorrected is None
            else counted(errors, "ecc_uncorrected", uncorrected, MAX_COUNTER),
            xids=xids or [],
            processes=running,
            errors=errors,
        )

    def _field(self, errors: dict[str, str], name: str, read: Callable[[], T]) -> T | None:
        """read(), or None: silently when NVML does not support it here, with NVML's message
        in errors[name] for any other NVML error."""
        try:
            return read()
        except self._unsupported:
            return None
        except self._nvml.NVMLError as error:
            errors[name] = str(error)
            return None

    def _memory(self, handle: Any) -> tuple[int, int]:
        """(used, total) bytes."""
        nvml = self._nvml
        if self._memory_v2:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
                return int(memory.used), int(memory.total)
            except (nvml.NVMLError_FunctionNotFound, nvml.NVMLError_ArgumentVersionMismatch):
                self._memory_v2 = False  # an older driver: the first version from now on
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return int(memory.used), int(memory.total)

    def _temperature(self, handle: Any) -> int:
        nvml = self._nvml
        if self._temperature_v:
            try:
                return int(nvml.nvmlDeviceGetTemperatureV(handle, nvml.NVML_TEMPERATURE_GPU))
            except (nvml.NVMLError_FunctionNotFound, nvml.NVMLError_ArgumentVersionMismatch):
                self._temperature_v = False  # an older driver
        return int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))

    def _ecc(self, handle: Any, corrected: bool) -> int:
        nvml = self._nvml
        kind = (
            nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
            if corrected
            else nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        )
        return int(nvml.nvmlDeviceGetTotalEccErrors(handle, kind, nvml.NVML_VOLATILE_ECC))

    def _processes(self, handle: Any) -> list[GpuProcess]:
        found = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        return [
            GpuProcess(
                pid=int(process.pid),
                used_memory_bytes=None
                if process.usedGpuMemory is None
                or not 0 <= int(process.usedGpuMemory) <= MAX_MEMORY_BYTES  # unknown, then
                else int(process.usedGpuMemory),
            )
            for process in found
        ]


def in_range(
    errors: dict[str, str], name: str, value: float, low: float, high: float
) -> float | None:
    """value, or None with a note in errors when NVML returned something impossible."""
    if low <= value <= high:
        return float(value)
    errors[name] = f"NVML returned {value}, outside {low}..{high}"
    return None


def counted(errors: dict[str, str], name: str, value: int, high: int) -> int | None:
    """value, or None with a note in errors when NVML returned more than the schema allows."""
    if 0 <= value <= high:
        return value
    errors[name] = f"NVML returned {value}, outside 0..{high}"
    return None


def text_of(read: Callable[[Any], Any], handle: Any) -> str:
    return str(read(handle))


def load_nvml() -> ModuleType:
    """pynvml, initialized; ReaderUnavailable (saying what to do) when NVML is not there."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError as error:
        raise ReaderUnavailable(
            f"nvidia-ml-py is not installed ({error}): install gpupool with its dependencies, "
            f"{SIMULATED_HINT}"
        ) from error
    try:
        nvml.nvmlInit()
    except nvml.NVMLError_LibraryNotFound as error:
        raise ReaderUnavailable(
            "NVML (libnvidia-ml.so.1) was not found: install the NVIDIA driver on this node "
            f"(nvidia-smi should work), {SIMULATED_HINT}"
        ) from error
    except nvml.NVMLError as error:
        raise ReaderUnavailable(
            f"NVML did not start ({error}): check the NVIDIA driver (nvidia-smi should work), "
            f"{SIMULATED_HINT}"
        ) from error
    return nvml
