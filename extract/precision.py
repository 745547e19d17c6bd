"""Which arithmetic the backbone runs in: `--precision auto` decided once per store.

A store's rows are computed in one precision, recorded in its identity (`precision`):

* `mixed_float16` on NVIDIA GPUs of compute capability 7.0 and up (Volta and later: the
  first with float16 tensor cores; NVIDIA's mixed-precision training guide and
  TensorFlow's mixed-precision guide name 7.0 as where float16 pays);
* `mixed_bfloat16` on x86 CPUs with bfloat16 units, AMX-BF16 (Intel Sapphire Rapids and
  later) or AVX512-BF16 (Intel Cooper Lake, AMD Zen 4 and later), where oneDNN runs
  TensorFlow's bfloat16 convolutions and matrix products natively;
* `float32` everywhere else: AVX2-only CPUs (bfloat16 would be emulated, slower than
  float32), other architectures, TensorFlow with oneDNN turned off, older GPUs.

The decision reads the CPU's flags (`/proc/cpuinfo`) and the visible GPUs' compute
capabilities; `choose` is a pure function of them, so tests give it any hardware.
Measured speed-ups and row differences are in the README (Performance). The first run
on a store decides; every later run (resume, append, shards on other machines, Ray
actors) follows the store's record (`follow`), so a store never mixes precisions.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass

AUTO = "auto"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
CHOICES = (AUTO, *PRECISIONS)

# /proc/cpuinfo flag -> the name Intel and AMD give the unit.
BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}
FLOAT16_MIN_CAPABILITY = (7, 0)


@dataclass(frozen=True)
class Gpu:
    """One visible GPU: its name and CUDA compute capability (None when unknown)."""

    name: str
    compute_capability: tuple[int, int] | None


@dataclass(frozen=True)
class Hardware:
    """What the decision depends on.

    cpu_flags: the `flags` of /proc/cpuinfo (empty where unknown); machine: platform.machine()
    ("x86_64", "aarch64", ...); gpus: the GPUs TensorFlow sees; onednn: False when
    TF_ENABLE_ONEDNN_OPTS=0 turned oneDNN (and so native bfloat16) off.
    """

    cpu_flags: frozenset[str]
    machine: str = "x86_64"
    gpus: tuple[Gpu, ...] = ()
    onednn: bool = True


@dataclass(frozen=True)
class Decision:
    """A precision and why, in words a user can act on."""

    precision: str
    reason: str

    def line(self) -> str:
        """The one line a run prints, e.g. "precision: mixed_bfloat16 (this CPU has ...)"."""
        other = ("; --precision float32 for float32 rows" if self.precision != "float32"
                 else "")
        return f"precision: {self.precision} ({self.reason}){other}"


def choose(hardware: Hardware) -> Decision:
    """The fastest safe precision for `hardware` (rules in the module docstring)."""
    if hardware.gpus:
        old = [g for g in hardware.gpus if (g.compute_capability or (0, 0))
               < FLOAT16_MIN_CAPABILITY]
        if not old:
            gpu = hardware.gpus[0]
            major, minor = gpu.compute_capability
            return Decision("mixed_float16", f"{gpu.name} has compute capability "
                                             f"{major}.{minor}, float16 tensor cores")
        capability = old[0].compute_capability
        said = "unknown" if capability is None else f"{capability[0]}.{capability[1]}"
        return Decision("float32", f"{old[0].name} has compute capability {said}, below 7.0: "
                                   "no float16 tensor cores")
    units = [name for flag, name in BF16_FLAGS.items() if flag in hardware.cpu_flags]
    if hardware.machine not in ("x86_64", "AMD64", "amd64"):
        return Decision("float32", f"bfloat16 is not chosen on {hardware.machine or 'this'} "
                                   "CPUs; --precision mixed_bfloat16 to try it")
    if units and not hardware.onednn:
        return Decision("float32", f"this CPU has {units[0]}, but TF_ENABLE_ONEDNN_OPTS=0 "
                                   "turned off the oneDNN kernels that use it")
    if units:
        return Decision("mixed_bfloat16", f"this CPU has {' and '.join(units)}")
    if not hardware.cpu_flags:
        return Decision("float32", "this CPU's flags are unknown")
    return Decision("float32", "this CPU has no bfloat16 units (AMX-BF16 or AVX512-BF16), "
                               "so bfloat16 would be emulated and slower")


def follow(recorded: str, where: str) -> Decision:
    """The decision of a store that already has rows (or a shard plan): its own precision."""
    return Decision(recorded, f"recorded in '{where}'")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's `flags` line of /proc/cpuinfo; empty where there is none."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def visible_gpus() -> tuple[Gpu, ...]:
    """The GPUs TensorFlow sees (CUDA_VISIBLE_DEVICES applies), with compute capabilities.

    On Linux without a loaded NVIDIA or ROCm driver there can be none, and TensorFlow (9 s
    to import on 2 cores) is not imported to learn that.
    """
    if platform.system() == "Linux" and not any(
            os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/kfd")):
        return ()
    from headstart.tf_quiet import import_keras

    import_keras()
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        found.append(Gpu(details.get("device_name", device.name),
                         tuple(capability) if capability else None))
    return tuple(found)


def this_machine(environ: Mapping[str, str] = os.environ) -> Hardware:
    """The Hardware of this process (imports TensorFlow to list the GPUs)."""
    return Hardware(cpu_flags(), platform.machine(), visible_gpus(),
                    environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip() != "0")
