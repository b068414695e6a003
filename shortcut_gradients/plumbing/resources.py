"""What a run will need, checked before it starts: integer ranges, empty batches, values the dtype can hold, memory.

A run that cannot fit is refused with one line saying what it would need and what the machine
has, instead of ending in an allocator's traceback or the kernel's OOM killer.
"""

import functools
import itertools
import os

import numpy as np

from shortcut_gradients.plumbing.config import InputError

MAX_WIDTH = 2**31 - 1  # a layer size beyond this is no network any framework here will index
SEED_RANGE = (0, 2**64 - 1)  # torch.manual_seed takes a 64-bit seed
# Arrays of (rows, width) alive at a time per layer in one implementation's step, counted from
# the NumPy reference (x, z, the activation, dz, dy, dx): torch's autograd graph and JAX's
# residuals keep about as many. Weights count five times: weights, gradient, one framework
# copy each, and a fifth, as the peak of a run of one wide layer is above four.
ACTIVATION_ARRAYS = 6
WEIGHT_COPIES = 5
# The run holds every implementation's result at once, plus the float64 NumPy runs that
# measure each element's magnitude: room for this many steps' worth of memory.
STEPS_ALIVE = 4
USABLE_FRACTION = 0.8  # of the memory available now: the rest is the page cache and the OS
BASE_BYTES = 600 * 2**20  # resident: the interpreter, torch, JAX and NumPy imported and run on the book's network
# Address space mapped (VmSize, what `ulimit -v` limits) by importing and running each framework, beyond the
# interpreter: far above what is resident, as XLA reserves arenas and thread stacks per CPU (docs/limits.md).
FRAMEWORK_MODULES = {"torch": "torch", "jax": "jax", "numpy": "numpy", "numpy-fast": "numpy", "numerical": "numpy"}
FRAMEWORK_ADDRESS_SPACE = {"torch": 600 * 2**20, "jax": 1200 * 2**20, "numpy": 100 * 2**20}
FRAMEWORK_ADDRESS_SPACE_PER_CPU = {"jax": 250 * 2**20}
# The time model (seconds_needed), fitted to compare.py runs on this 2-core machine and rounded up by
# 1.6, so that no run fitted took longer than its estimate (docs/limits.md sets the runs beside it).
# Per shortcut setting, each implementation makes one step and the rounding bound about BOUND_STEPS
# steps of the NumPy implementation; a step costs per element of every layer's input and
# output, per multiply-add and per layer; each implementation's result costs per weight to check.
STARTUP_SECONDS = 3.0  # importing the frameworks and compiling the book's network
BOUND_STEPS = 8  # the bound's steps, in framework steps' worth (fitted when all were float64: conservative since)
SECONDS_PER_ACTIVATION = 8e-8  # per element of every layer's input and output, per step
SECONDS_PER_MAC = 1.9e-10  # per multiply-add of a layer's matmul, per step
SECONDS_PER_LAYER = 2.7e-4  # per layer, per step
SECONDS_PER_WEIGHT = 4.8e-7  # per weight or bias element, per implementation and setting: its result checked
# With norm "pre" the bound is measured with the readable reference impl_numpy.model, not fast.py:
# its float64 step costs up to this many of fast.py's (x**3 and two tanh per layer, an element-by-element
# erf in the exact form; measured at 128 x 3 on 4096 rows: 15.8 s tanh, 17.9 s exact, against 6.7 s).
REFERENCE_STEP_COST = 6
LONG_SECONDS = 120  # work estimated past this is refused unless asked for (--allow-long)


# impl_jax scans a run of equal layers as one compiled layer; the others jit unrolls, and XLA's
# compile time grows faster than linearly with them (docs/limits.md measures it): past this many,
# a run would spend tens of seconds to minutes compiling.
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


def bytes_needed(layer_sizes, rows: int, itemsize: int, *, file_bytes: int = 0) -> int:
    """A run's peak memory estimate in bytes: activations and weights of STEPS_ALIVE steps (module docstring),
    plus a weights file's tensors as read (file_bytes) and the interpreter with its frameworks (BASE_BYTES)."""
    weights = sum(a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    activations = rows * sum(layer_sizes)
    per_step = (ACTIVATION_ARRAYS * activations + WEIGHT_COPIES * weights) * max(itemsize, 8)  # float64 magnitudes
    return BASE_BYTES + file_bytes + STEPS_ALIVE * per_step


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


def address_space_used() -> int:
    """This process's mapped address space now (VmSize), 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def address_space_limit() -> int | None:
    """The process's address-space limit (RLIMIT_AS, `ulimit -v`) in bytes, None when unlimited."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def address_space_needed(frameworks) -> int:
    """The address space the named built-in frameworks map once imported and run, beyond what is mapped now.

    A framework already imported costs nothing more; a name that is not built in runs in its own process."""
    import sys

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    need = 0
    for name in set(frameworks):
        module = FRAMEWORK_MODULES.get(name)
        if module is not None and module not in sys.modules:
            need += FRAMEWORK_ADDRESS_SPACE[module] + FRAMEWORK_ADDRESS_SPACE_PER_CPU.get(module, 0) * cpus
    return need


def check_memory(layer_sizes, rows: int, dtype: str, *, frameworks=(), file_bytes: int = 0) -> None:
    """Refuse a run that would not fit: in the memory available now, or in the address-space limit.

    frameworks: the column names asked for (their imports map address space; see address_space_needed);
    file_bytes: a weights file's tensors, read after this check."""
    need = bytes_needed(layer_sizes, rows, np.dtype(dtype).itemsize, file_bytes=file_bytes)
    where = f"{rows:,} row{'s' * (rows != 1)} through layer sizes up to {max(layer_sizes):,}"
    have = available_bytes()
    if need > USABLE_FRACTION * have:
        raise InputError(
            f"this run would need about {gib(need)} GiB ({where}), and the machine has {gib(have)} GiB available:"
            " use a smaller network or batch"
        )
    limit = address_space_limit()
    if limit is not None:
        mapped = address_space_used() + address_space_needed(frameworks) + need - BASE_BYTES
        if mapped > limit:
            raise InputError(
                f"this run would map about {gib(mapped)} GiB of address space ({where}, and the frameworks),"
                f" over this process's limit of {gib(limit)} GiB (ulimit -v): raise the limit, or use a smaller"
                " network or fewer frameworks"
            )


def gib(n: int) -> str:
    return f"{n / 2**30:.3g}"


def seconds_needed(layer_sizes, rows: int, *, frameworks: int, settings: int, norm: str = "none") -> float:
    """A run's time estimate in seconds, from the sizes alone: for each of `settings` shortcut settings,
    `frameworks` implementations' steps and the bound's BOUND_STEPS (REFERENCE_STEP_COST times as
    dear with norm "pre"), each costing per activation element, per multiply-add of the matmuls and
    per layer, and each implementation's result per weight and bias element (the constants above)."""
    weights = sum(a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    per_step = (
        SECONDS_PER_ACTIVATION * rows * sum(layer_sizes)
        + SECONDS_PER_MAC * rows * weights
        + SECONDS_PER_LAYER * len(layer_sizes)
    )
    bound_steps = BOUND_STEPS * (REFERENCE_STEP_COST if norm == "pre" else 1)
    per_setting = (frameworks + bound_steps) * per_step + frameworks * SECONDS_PER_WEIGHT * weights
    return STARTUP_SECONDS + settings * per_setting


def check_time(seconds: float, allow_long: bool) -> None:
    """Refuse work estimated past LONG_SECONDS unless the user asked for it with --allow-long."""
    if seconds > LONG_SECONDS and not allow_long:
        raise InputError(
            f"this would take about {minutes(seconds)} (an estimate from the sizes), over {minutes(LONG_SECONDS)}:"
            " pass --allow-long to run it anyway (it shows progress), or ask for less"
        )


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def give_back_freed_memory() -> None:
    """Hand the heap pages freed so far back to the system (glibc's malloc_trim; elsewhere nothing).

    A run frees each stage's arrays, but glibc keeps freed pages of the heap for reuse, so the
    frameworks' steps would stay in the resident set through the bound's measurement after them."""
    if libc := glibc():
        libc.malloc_trim(0)


def keep_freed_memory() -> None:
    """Keep freed arrays' pages in the process for the next arrays, until give_back_freed_memory
    (glibc: big blocks come from the heap, not mmap, and a free never trims; elsewhere nothing).

    The bound's measurement makes and frees arrays as large as the batch, run after run. Left to
    glibc, each one is a fresh mmap and each free hands its pages back, so every run pays the page
    faults again: on a virtual machine whose host takes freed pages back, several seconds a GiB
    (docs/performance.md). Set once, for the whole process: the command's own, never a library's."""
    if libc := glibc():
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # an int: the most it takes


def plain_pages() -> None:
    """Stop NumPy asking the kernel for transparent huge pages for its arrays (elsewhere nothing).

    NumPy advises huge pages (madvise MADV_HUGEPAGE) for every array of 4 MiB or more. Where the
    kernel grants them only when asked, and compacts memory to find one on the fault itself (Linux's
    "madvise" setting of both, as on this project's machine), every fresh batch-sized array waits
    on that compaction, and give_back_freed_memory splits the pages again: docs/performance.md
    measures the cost. Set once, for the whole process: the command's own, never a library's."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # a NumPy without the switch
        return
    _set_madvise_hugepage(False)


@functools.cache
def glibc():
    """glibc, for its malloc_trim and mallopt, or None where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (both, or neither)
        return libc
    except (OSError, AttributeError):
        return None
