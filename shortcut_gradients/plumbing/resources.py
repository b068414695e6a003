"""What a run will need, checked before it starts: integer ranges, empty batches, values the dtype can hold, memory.

A run that cannot fit is refused with one line saying what it would need and what the machine
has, instead of ending in an allocator's traceback or the kernel's OOM killer.
"""

import itertools
import os

import numpy as np

from shortcut_gradients.plumbing.config import InputError

MAX_WIDTH = 2**31 - 1  # a layer size beyond this is no network any framework here will index
SEED_RANGE = (0, 2**64 - 1)  # torch.manual_seed takes a 64-bit seed
# Arrays of (rows, width) alive at a time per layer in one implementation's step, counted from
# the NumPy reference (x, z, the activation, dz, dy, dx): torch's autograd graph and JAX's
# residuals keep about as many. Weights count four times (weights, gradient, one framework
# copy each).
ACTIVATION_ARRAYS = 6
WEIGHT_COPIES = 4
# The run holds every implementation's result at once, plus the float64 NumPy runs that
# measure each element's magnitude: room for this many steps' worth of memory.
STEPS_ALIVE = 4
USABLE_FRACTION = 0.8  # of the memory available now: the rest is the interpreter, the frameworks and the OS


# impl_jax scans a run of equal layers as one compiled layer; the others jit unrolls, and XLA's
# compile time grows faster than linearly with them: 128 such layers (widths 2, 3, 2, ...) took
# 3.7 s to compile here, 256 took 8.8 s and 645 MB, 384 took 16.5 s.
MAX_UNSCANNED_LAYERS = 256


def check_jax_layers(layer_sizes, scan_min_layers: int) -> None:
    """Refuse a network JAX would take minutes to compile: more than MAX_UNSCANNED_LAYERS layers
    outside runs of at least scan_min_layers consecutive layers of one shape."""
    shapes = zip(layer_sizes[:-1], layer_sizes[1:])
    runs = [len(list(run)) for _, run in itertools.groupby(shapes)]
    unscanned = sum(count for count in runs if count < scan_min_layers)
    if unscanned > MAX_UNSCANNED_LAYERS:
        raise InputError(
            f"jax: {unscanned} layers are not in runs of {scan_min_layers} or more equal layers, so XLA would compile"
            f" each one (over {MAX_UNSCANNED_LAYERS}, tens of seconds to minutes); make runs of equal widths, or leave jax out"
            " of --frameworks"
        )


def check_seed(seed: int) -> None:
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise InputError(f"--seed must be between {SEED_RANGE[0]} and 2**64 - 1; got {seed}")


def check_sizes(layer_sizes) -> None:
    too_big = [s for s in layer_sizes if s > MAX_WIDTH]
    if too_big:
        raise InputError(f"--layer-sizes: {too_big[0]} is larger than the largest layer size supported, {MAX_WIDTH:,}")


def check_values(name: str, array: np.ndarray, dtype: str) -> None:
    """The array is non-empty and every value is finite once cast to dtype."""
    if array.size == 0:
        raise InputError(f"{name} has shape {tuple(array.shape)}: an empty batch; give at least one row")
    limit = float(np.finfo(dtype).max)
    biggest = float(np.max(np.abs(array.astype(np.float64))))
    if not np.isfinite(biggest) or biggest > limit:
        raise InputError(f"{name} holds {biggest:.3g}, beyond {dtype}'s largest value {limit:.3g}: use --dtype float64")


def bytes_needed(layer_sizes, rows: int, itemsize: int) -> int:
    """A run's peak memory estimate in bytes: activations and weights of STEPS_ALIVE steps (module docstring)."""
    weights = sum(a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    activations = rows * sum(layer_sizes)
    per_step = (ACTIVATION_ARRAYS * activations + WEIGHT_COPIES * weights) * max(itemsize, 8)  # float64 magnitudes
    return STEPS_ALIVE * per_step


def available_bytes() -> int:
    """Memory available to a new allocation now (MemAvailable), or the machine's total where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(layer_sizes, rows: int, dtype: str) -> None:
    need, have = bytes_needed(layer_sizes, rows, np.dtype(dtype).itemsize), available_bytes()
    if need > USABLE_FRACTION * have:
        raise InputError(
            f"this run would need about {need / 2**30:.3g} GiB ({rows:,} rows through layer sizes up to "
            f"{max(layer_sizes):,}), and the machine has {have / 2**30:.3g} GiB available: use a smaller network or batch"
        )
