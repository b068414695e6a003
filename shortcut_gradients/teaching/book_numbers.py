""" "My numbers differ from the book": which configuration printed a pasted print_gradients table.

A reader pastes the five lines the book's print_gradients prints (`layers.{i}.0.weight has
gradient mean of ...`, any of the usual formats, or the numbers alone). This module searches
the configurations that change those numbers and names the one that explains them:

- the GELU form: the book's class is the tanh form; torch.nn.GELU() is the exact (erf) form,
  and a notebook can define the tanh class yet build its layers with nn.GELU();
- the shortcut, on or off;
- the seed: torch.manual_seed(123), the book's, then 0 to 1000 and a few seeds people type;
- whether the network was drawn right after another one without calling manual_seed again
  ("reseeded": false), which draws different weights from the same stream;
- the tanh form's cubic coefficient: 0.044715, then its one-keystroke typos (0.004715, ...);
- the dtype the network was computed in, float32 (the book's) or float64 (`model.double()`).

How close is said in float32 roundings (the float32 machine epsilon, 2^-23, relative): a
table from another platform, BLAS or device lands a few roundings away, which is rounding,
not a different computation. The bound is the project's BOOK_RTOL, the one compare.py holds
the frameworks to against the book's table.

The search is ordered so that the common explanations come first and end it: seed 123 in
both GELU forms, both shortcut settings, reseeded or not, in the paste's dtype; then the
other dtype; then the coefficient typos; then the other seeds.

Where the numbers come from. Every candidate is computed by impl_torch's own network
(ExampleDeepNeuralNetwork, its gelu, its mse_loss): the search evaluates thousands of weight
draws at once by running that module under torch.func.vmap(grad(...)), the batched form of
the loss.backward() impl_torch.loss_and_grads runs. Batching reorders float32 sums, so the
winner (and every candidate reported) is then recomputed with impl_torch.loss_and_grads
itself, unbatched, and that is the figure reported. The weights are drawn as the book draws
them, with torch.manual_seed and nn.Linear (the first network's draws are
weights.seeded_params's, tested so). A typo'd coefficient is evaluated by patching
impl_torch.model.GELU_CUBIC, in tanh_cubic() below and nowhere else.
"""

import re
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from unittest import mock

import numpy as np

from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_RTOL, BOOK_SEED, InputError

N_LAYERS = len(BOOK_LAYER_SIZES) - 1  # print_gradients prints one line per layer's weight
BOOK_CUBIC = 0.044715  # the book's coefficient, as its GELU class writes it
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # one float32 rounding, relative: the unit "how close" is said in
# Within rounding: compare.py's bound for the frameworks against the book's table. It passes float32
# summation-order noise and fails the exact-vs-tanh GELU mix-up (config.py, tests/test_book.py).
ROUNDING_RTOL = BOOK_RTOL
# Seeds people type, beyond 0..1000: the search is cheap, and these are the ones found in notebooks.
POPULAR_SEEDS = (1234, 2023, 2024, 2025, 3407, 12345, 123456)
OTHER_SEEDS = tuple(s for s in range(1001) if s != BOOK_SEED) + POPULAR_SEEDS
N_CLOSEST = 3  # candidates reported when nothing explains the numbers
FULL_DIGITS = 9  # a number printed with this many significant digits or more says its dtype (see paste_dtype)


def cubic_typos(text: str = "0.044715") -> tuple[float, ...]:
    """The coefficients one slip of the keyboard away from `text`, most plausible first: a dropped
    or doubled digit, a stray 0, two neighbours swapped, a digit typed as 0."""
    head, digits = text.split(".")
    edits = [digits[0] + "0" + digits[2:]]  # 0.004715: the slip found in a reader's notebook
    edits += [digits[:i] + digits[i + 1 :] for i in range(len(digits))]  # dropped
    edits += [digits[:i] + digits[i] + digits[i:] for i in range(len(digits))]  # doubled
    edits += [digits[:i] + "0" + digits[i:] for i in range(len(digits) + 1)]  # a stray 0
    edits += [digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :] for i in range(len(digits) - 1)]  # swapped
    edits += [digits[:i] + "0" + digits[i + 1 :] for i in range(len(digits))]  # a digit typed as 0
    values = dict.fromkeys(float(f"{head}.{e}") for e in edits if e)  # ordered, without repeats
    return tuple(v for v in values if 0 < v < 1 and v != float(text))


TYPOS = cubic_typos()


@dataclass(frozen=True)
class Config:
    """One way to print the book's table; the book's own is tanh, 0.044715, seed 123, reseeded, float32."""

    gelu: str  # "tanh" (the book's class) or "exact" (torch.nn.GELU())
    use_shortcut: bool
    seed: int  # torch.manual_seed(seed)
    reseeded: bool  # False: drawn right after another network of the same sizes, with no manual_seed between
    gelu_cubic: float | None  # the tanh form's cubic coefficient; None for the exact form
    dtype: str  # "float32" or "float64": what the network computed in (weights drawn in float32 either way)


@dataclass(frozen=True)
class Match:
    """A configuration and its table, computed by impl_torch.loss_and_grads, beside the paste."""

    config: Config
    means: tuple[float, ...]  # mean |dL/dW| per layer, as print_gradients computes it
    rel_diffs: tuple[float, ...]  # per layer, |pasted - means| beyond the paste's printed digits, over |means|
    max_rel_diff: float


@dataclass(frozen=True)
class Paste:
    """The numbers read from a paste."""

    values: tuple[float, ...]  # (N_LAYERS,)
    half_units: tuple[float, ...]  # half a unit in each number's last printed digit: what printing rounded away
    dtype: str | None  # "float32" or "float64" when the digits tell, else None


@dataclass(frozen=True)
class Diagnosis:
    """The answer: the configuration that explains the paste, or the closest ones."""

    explained: bool
    paste: Paste
    best: Match | None  # the explaining configuration (None when nothing explains the paste)
    candidates: tuple[Match, ...]  # the closest configurations, best first (the best among them when explained)
    also_fit: int  # other configurations within rounding of a coarsely printed paste
    searched: int  # configurations compared
    notes: tuple[str, ...]


# ---- reading the paste ------------------------------------------------------------------------------

NOISE = re.compile(r"device='[^']*'|grad_fn=<[^>]*>|requires_grad=\w+|(?:In|Out)\s*\[\s*\d*\s*\]:?")
DTYPE_WORD = re.compile(r"dtype=torch\.(float32|float64|double|float)\b")
# A number, or a name (which may carry digits: layers.0.0.weight, fc1, layers[2]); names are skipped.
TOKEN = re.compile(r"(?P<num>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][\w.]*(?:\[\d+\][\w.]*)*)")
LAYER_NAME = re.compile(r"layers\.(\d+)\.0\.weight")
NON_FINITE = re.compile(r"\b(?:nan|inf|infinity)\b", re.IGNORECASE)
FILE_LIKE = re.compile(r"[^\s,]*\.[A-Za-z]\w*")  # table.txt, out/grads.log: a name, not numbers


def read_text(arg: str) -> str:
    """The paste behind --diagnose-numbers ARG: '-' reads stdin, an existing file is read, anything else is the text."""
    if arg == "-":
        return sys.stdin.read()
    path = Path(arg)
    if "\n" not in arg and len(arg) < 4096 and path.exists():
        if not path.is_file():
            raise InputError(f"--diagnose-numbers: {arg} is not a file; pass a file, '-' for stdin, or the numbers")
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--diagnose-numbers: cannot read {arg} as text ({err})") from None
    if FILE_LIKE.fullmatch(arg.strip()):
        raise InputError(f"--diagnose-numbers: file {arg} not found; pass a file, '-' for stdin, or the numbers")
    return arg


def half_unit(token: str) -> float:
    """Half a unit in the last digit printed: '0.0002' -> 5e-05, '2.0174e-04' -> 5e-09."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def significant_digits(token: str) -> int:
    return len(token.lower().partition("e")[0].lstrip("+-").replace(".", "").lstrip("0"))


def paste_dtype(text: str, tokens: list[str]) -> str | None:
    """float32 or float64 when the paste says: a dtype= word, or full-precision digits. float32's .item() is
    a float32 value, so every full-precision number round-trips through float32; a float64 result almost never does."""
    if word := DTYPE_WORD.search(text):
        return "float64" if word[1] in ("float64", "double") else "float32"
    full = [float(t) for t in tokens if significant_digits(t) >= FULL_DIGITS]
    if not full:
        return None
    return "float32" if all(float(np.float32(v)) == v for v in full) else "float64"


def parse_paste(text: str) -> Paste:
    """The five mean |dL/dW| of a pasted print_gradients table, or InputError in one line."""
    if NON_FINITE.search(text):
        raise InputError(
            "the paste holds nan or inf: those gradients overflowed, and no seed or GELU form explains that"
        )
    cleaned = NOISE.sub(" ", text)
    tokens = [m["num"] for m in TOKEN.finditer(cleaned) if m["num"]]
    # Bare integers are prompts, counters and indices ("Layer 0:", "In [13]:"); a mean |gradient| has a point.
    if any(("." in t or "e" in t.lower()) for t in tokens):
        tokens = [t for t in tokens if "." in t or "e" in t.lower()]
    names = [int(i) for i in LAYER_NAME.findall(cleaned)]
    if not tokens:
        raise InputError(
            f"no numbers in the paste; give the {N_LAYERS} lines print_gradients prints, or {N_LAYERS} numbers"
        )
    if len(tokens) != N_LAYERS:
        hint = "; two tables? paste one at a time" if len(tokens) == 2 * N_LAYERS else ""
        raise InputError(
            f"found {len(tokens)} numbers in the paste, expected {N_LAYERS} "
            f"(mean |gradient| of layers.0 to layers.{N_LAYERS - 1}, as print_gradients prints them){hint}"
        )
    if names and names != list(range(N_LAYERS)):
        raise InputError(
            f"the paste names layers {names}; expected layers.0 to layers.{N_LAYERS - 1}, once each, in order"
        )
    values = tuple(float(t) for t in tokens)
    if any(v < 0 for v in values):
        raise InputError(f"the paste has a negative number, {min(values)}; a mean |gradient| is never negative")
    return Paste(values, tuple(half_unit(t) for t in tokens), paste_dtype(text, tokens))


def rel_diffs(paste: Paste, means: np.ndarray) -> np.ndarray:
    """(..., N_LAYERS): |pasted - means| beyond what printing rounded away, relative to |means|."""
    gap = np.maximum(np.abs(means - np.array(paste.values)) - np.array(paste.half_units), 0.0)
    return gap / np.maximum(np.abs(means), np.finfo(np.float64).tiny)


# ---- computing candidates with impl_torch ------------------------------------------------------------


@contextmanager
def tanh_cubic(value: float | None):
    """impl_torch's tanh GELU with its cubic coefficient set to `value` for the block (None: left alone).

    The one place this module changes another module's global: impl_torch.model.gelu reads
    GELU_CUBIC when called, so the network computes 0.5 x (1 + tanh(k (x + value x^3)))."""
    from impl_torch import model

    if value is None:
        yield
        return
    with mock.patch.object(model, "GELU_CUBIC", value):
        yield


@lru_cache(maxsize=16)
def drawn_weights(seeds: tuple[int, ...]) -> dict:
    """The book's draws for each seed: {reseeded: {name: (S, ...) float32 tensor}} with the book's names.

    torch.manual_seed(seed), then the book's nn.Linear layers twice over: the first five are the
    network drawn right after the seed (reseeded True, weights.seeded_params's), the next five
    the one drawn after it from the same stream (reseeded False). The caller's RNG is put back."""
    import torch

    sizes = list(zip(BOOK_LAYER_SIZES[:-1], BOOK_LAYER_SIZES[1:]))
    draws = {True: [], False: []}
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            torch.manual_seed(seed)
            for reseeded in (True, False):
                layers = [torch.nn.Linear(d_in, d_out) for d_in, d_out in sizes]
                draws[reseeded].append(
                    {
                        f"layers.{i}.0.{k}": p.detach()
                        for i, lin in enumerate(layers)
                        for k, p in (("weight", lin.weight), ("bias", lin.bias))
                    }
                )
    return {r: {name: torch.stack([d[name] for d in ds]) for name in ds[0]} for r, ds in draws.items()}


def params_at(stack: dict, index: int) -> list:
    """[(W (d_out, d_in), b (d_out,)), ...] NumPy float32, one draw of a stack: loss_and_grads' params."""
    return [
        (stack[f"layers.{i}.0.weight"][index].numpy(), stack[f"layers.{i}.0.bias"][index].numpy())
        for i in range(N_LAYERS)
    ]


def batched_means(stack: dict, *, use_shortcut: bool, gelu: str, cubic: float | None, dtype: str) -> np.ndarray:
    """(S, N_LAYERS) mean |dL/dW| for S stacked draws, from impl_torch's network under vmap(grad(loss))."""
    import torch
    from torch.func import functional_call, grad, vmap

    from impl_torch import model

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    with torch.device("meta"):  # no storage and no draws: the stacked weights stand in for its parameters
        network = model.ExampleDeepNeuralNetwork(list(BOOK_LAYER_SIZES), use_shortcut, gelu)
    x = torch.tensor(weights.default_input(BOOK_LAYER_SIZES[0]), dtype=torch_dtype)  # (1, 3)
    target = torch.tensor(weights.default_target(BOOK_LAYER_SIZES[-1]), dtype=torch_dtype)  # (1, 1)

    def loss(params):
        return model.mse_loss(functional_call(network, params, (x,)), target)

    with tanh_cubic(cubic), model.full_float32_matmuls():
        grads = vmap(grad(loss))({name: t.to(torch_dtype) for name, t in stack.items()})
    means = [grads[f"layers.{i}.0.weight"].abs().mean(dim=(-2, -1)) for i in range(N_LAYERS)]  # (S,) each
    return torch.stack(means, dim=1).double().numpy()  # (S, N_LAYERS)


def printed_means(config: Config) -> tuple[float, ...]:
    """The table print_gradients prints for `config`, from impl_torch.loss_and_grads (unbatched), the mean
    taken as print_gradients takes it: param.grad.abs().mean() in the network's dtype."""
    import torch

    from impl_torch import model

    stack = drawn_weights((config.seed,))[config.reseeded]
    x, target = weights.default_input(BOOK_LAYER_SIZES[0]), weights.default_target(BOOK_LAYER_SIZES[-1])
    with tanh_cubic(config.gelu_cubic):
        result = model.loss_and_grads(
            params_at(stack, 0), x, target, use_shortcut=config.use_shortcut, gelu_form=config.gelu, dtype=config.dtype
        )
    return tuple(torch.from_numpy(dW).abs().mean().item() for dW in result["dW"])


def confirm(paste: Paste, config: Config) -> Match:
    means = printed_means(config)
    diffs = rel_diffs(paste, np.array(means))
    return Match(config, means, tuple(float(d) for d in diffs), float(diffs.max()))


# ---- the search ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A block of the search: every combination of these, over the seeds."""

    seeds: tuple[int, ...]
    reseeded: tuple[bool, ...]
    forms: tuple[tuple[str, float | None], ...]  # (gelu, cubic)
    dtypes: tuple[str, ...]


BOOK_FORMS = (("tanh", BOOK_CUBIC), ("exact", None))
TYPO_FORMS = tuple(("tanh", c) for c in TYPOS)


def stages(first_dtype: str) -> list[Stage]:
    """The search, common explanations first."""
    other_dtype = "float64" if first_dtype == "float32" else "float32"
    both = (first_dtype, other_dtype)
    book = (BOOK_SEED,)
    return [
        Stage(book, (True,), BOOK_FORMS, (first_dtype,)),  # the book's draw: only the GELU form or shortcut differ
        Stage(book, (False,), BOOK_FORMS, (first_dtype,)),  # drawn after another network without re-seeding
        Stage(book, (True, False), BOOK_FORMS, (other_dtype,)),
        Stage(book, (True, False), TYPO_FORMS, both),  # a typo in the GELU class's coefficient
        Stage(OTHER_SEEDS, (True, False), BOOK_FORMS, both),  # another seed
        Stage(OTHER_SEEDS, (True, False), TYPO_FORMS, both),
    ]


def search_stage(paste: Paste, stage: Stage) -> tuple[np.ndarray, list, list]:
    """Every configuration of the stage, batched: (worst (P * D,), passes (P,), draws (D,)), where entry
    p * D + d is the max relative difference of pass p = (gelu, cubic, dtype, use_shortcut) on draw d = (seed,
    reseeded); the entries are in search order."""
    import torch

    draws = [(seed, reseeded) for reseeded in stage.reseeded for seed in stage.seeds]
    stacks = [drawn_weights(stage.seeds)[reseeded] for reseeded in stage.reseeded]
    stack = {name: torch.cat([s[name] for s in stacks]) for name in stacks[0]}  # (D, ...) each
    passes = [
        (gelu, cubic, dtype, use_shortcut)
        for gelu, cubic in stage.forms
        for dtype in stage.dtypes
        for use_shortcut in (False, True)
    ]
    from shortcut_gradients.teaching.depth import one_torch_thread  # depth imports torch at its top

    with one_torch_thread():
        worst = [
            rel_diffs(paste, batched_means(stack, use_shortcut=s, gelu=g, cubic=c, dtype=t)).max(axis=1)  # (D,)
            for g, c, t, s in passes
        ]
    return np.concatenate(worst), passes, draws


def diagnose(paste: Paste) -> Diagnosis:
    """Search stage by stage; the first stage with a configuration within rounding (confirmed unbatched) ends it."""
    closest: list[tuple[float, Config]] = []
    searched = 0
    for stage in stages(paste.dtype or "float32"):
        worst, passes, draws = search_stage(paste, stage)
        searched += worst.size

        # Stable: equal distances (a coarsely printed paste) keep the search's order, the common first.
        order = np.argsort(worst, kind="stable")
        fitting = order[: int(np.count_nonzero(worst <= ROUNDING_RTOL))]
        for k in fitting:
            match = confirm(paste, config_at(int(k), passes, draws))
            if match.max_rel_diff <= ROUNDING_RTOL:
                notes = notes_for(paste, match)
                return Diagnosis(True, paste, match, (match,), len(fitting) - 1, searched, notes)
        for k in order[: N_CLOSEST * 4]:  # a few more than shown: the float32 and float64 twins count once
            config = config_at(int(k), passes, draws)
            if all(replace(config, dtype=c.dtype) != c for _, c in closest):
                closest.append((float(worst[k]), config))
        closest = sorted(closest, key=first)[:N_CLOSEST]
    candidates = tuple(sorted((confirm(paste, c) for _, c in closest), key=lambda m: m.max_rel_diff))
    return Diagnosis(False, paste, None, candidates, 0, searched, unexplained_notes(candidates))


def config_at(k: int, passes: list, draws: list) -> Config:
    """The configuration of entry k of search_stage's worst."""
    (gelu, cubic, dtype, use_shortcut), (seed, reseeded) = passes[k // len(draws)], draws[k % len(draws)]
    return Config(gelu, use_shortcut, seed, reseeded, cubic, dtype)


def first(item: tuple) -> float:
    return item[0]


def explain(text: str) -> Diagnosis:
    """The configuration that explains a pasted print_gradients table (see the module docstring); InputError
    for a paste that is not one."""
    paste = parse_paste(text)
    try:
        import torch  # noqa: F401  (the book's draws need torch.manual_seed)
    except ImportError:
        raise InputError("--diagnose-numbers draws the book's weights with torch: pip install torch") from None
    return diagnose(paste)


# ---- what it means ------------------------------------------------------------------------------------


def describe(config: Config) -> str:
    form = "exact GELU (torch.nn.GELU())" if config.gelu == "exact" else f"tanh GELU (cubic {config.gelu_cubic:g})"
    drawn = "drawn right after torch.manual_seed" if config.reseeded else "drawn after another network, not re-seeded"
    shortcut = "with shortcut" if config.use_shortcut else "without shortcut"
    return f"{form}, {shortcut}, seed {config.seed} {drawn}, {config.dtype}"


def roundings(rel: float) -> str:
    return f"{rel / FLOAT32_EPS:.1f} float32 roundings"


def notes_for(paste: Paste, match: Match) -> tuple[str, ...]:
    """What each way the configuration departs from the book's means, and what to change."""
    c, notes = match.config, []
    if match.max_rel_diff == 0:
        notes.append("bit for bit the numbers this configuration prints")
    else:
        notes.append(
            f"within rounding: {roundings(match.max_rel_diff)} at most (relative {match.max_rel_diff:.1e}); "
            "another platform, BLAS or device rounds differently, and that is all this difference is"
        )
    if c.gelu == "exact":
        notes.append(
            "exact GELU: these are torch.nn.GELU()'s numbers, 0.5 x (1 + erf(x / sqrt(2))), not the book's GELU class "
            "(the tanh form); check that each layer uses your GELU class: a notebook can define it and still build "
            "its layers with nn.GELU()"
        )
    if c.gelu_cubic is not None and c.gelu_cubic != BOOK_CUBIC:
        notes.append(f"typo: the GELU's cubic coefficient is {c.gelu_cubic:g}, not 0.044715")
    if not c.reseeded:
        notes.append(
            "not re-seeded: this network was drawn from the random stream the network before it left, so its "
            "weights are not the book's; call torch.manual_seed(123) right before building each model "
            "(a shortcut network drawn this way can show far smaller gradients: that is the draw, not the shortcut)"
        )
    if c.seed != BOOK_SEED:
        notes.append(f"seed {c.seed}: the book draws its weights after torch.manual_seed(123)")
    if c.dtype == "float64":
        notes.append("float64: the network computed in double (e.g. model.double()); the book's numbers are float32")
    if c == Config(c.gelu, c.use_shortcut, BOOK_SEED, True, c.gelu_cubic, "float32") and c.gelu_cubic in (
        None,
        BOOK_CUBIC,
    ):
        notes.append(
            "the book's network and seed: "
            + ("the book's own table" if c.gelu == "tanh" else "only the GELU form differs")
        )
    if max(h / max(v, np.finfo(float).tiny) for h, v in zip(paste.half_units, paste.values)) > ROUNDING_RTOL:
        notes.append(
            "printed with few digits, so several configurations can fit; print param.grad.abs().mean().item() "
            "for every digit"
        )
    return tuple(notes)


def unexplained_notes(candidates: tuple[Match, ...]) -> tuple[str, ...]:
    notes = [
        f"no configuration searched prints these numbers within rounding ({ROUNDING_RTOL:g} relative, "
        f"{roundings(ROUNDING_RTOL)}): the difference is in the code, the input or the target, not the seed, "
        "the GELU form or the platform"
    ]
    if candidates:
        best = candidates[0]
        agree = [i for i, d in enumerate(best.rel_diffs) if d <= ROUNDING_RTOL]
        if agree:
            first_off = min(i for i, d in enumerate(best.rel_diffs) if d > ROUNDING_RTOL)
            notes.append(
                f"the closest ({describe(best.config)}) agrees on layers {agree} and not on layers.{first_off}: "
                "look there, and at everything downstream of it in the forward pass"
            )
        notes.append(
            "check: input [[1., 0., -1.]], target [[0.]], nn.MSELoss(), layer sizes [3, 3, 3, 3, 3, 1], "
            "x = x + layer_output only where the shapes match, and a fresh model (gradients accumulate over backward calls)"
        )
    return tuple(notes)


def format_explanation(record: Diagnosis) -> str:
    """The diagnosis as text for a terminal."""
    lines = []
    if record.explained:
        m = record.best
        lines.append(f"Explained ({roundings(m.max_rel_diff)}, relative {m.max_rel_diff:.1e}): {describe(m.config)}")
        shown = [m]
        if record.also_fit:
            lines.append(f"({record.also_fit} more configurations fit these digits; this is the first in search order)")
    else:
        lines.append(
            f"Not explained: none of the {record.searched} configurations searched is within rounding "
            f"({ROUNDING_RTOL:g} relative). Closest:"
        )
        shown = list(record.candidates)
        for rank, m in enumerate(shown, 1):
            lines.append(f"  {rank}. {describe(m.config)}: relative {m.max_rel_diff:.2g}")
    for rank, m in enumerate(shown[:1], 1):
        label = "this configuration" if record.explained else f"closest {rank}"
        lines.append(f"  {'layer':<18} {'yours':<24} {label:<24} float32 roundings")
        for i, (yours, theirs, d) in enumerate(zip(record.paste.values, m.means, m.rel_diffs)):
            lines.append(f"  layers.{i}.0.weight  {yours!r:<24} {theirs!r:<24} {d / FLOAT32_EPS:.3g}")
    lines.append(f"Searched {record.searched} configurations.")
    lines += [f"- {note}" for note in record.notes]
    return "\n".join(lines)


def config_to_json(config: Config) -> dict:
    return asdict(config)


def record_to_json(record: Diagnosis) -> dict:
    """{"explained", "config" (None when nothing explains), "max_rel_diff", "float32_roundings", "notes",
    "numbers", "predicted", "candidates", "searched"}: plain JSON types."""
    best = record.best
    return {
        "explained": record.explained,
        "config": config_to_json(best.config) if best else None,
        "max_rel_diff": best.max_rel_diff if best else None,
        "float32_roundings": best.max_rel_diff / FLOAT32_EPS if best else None,
        "notes": list(record.notes),
        "numbers": list(record.paste.values),
        "predicted": list(best.means) if best else None,
        "candidates": [
            {"config": config_to_json(m.config), "means": list(m.means), "max_rel_diff": m.max_rel_diff}
            for m in record.candidates
        ],
        "searched": record.searched,
    }
