"""--diagnose-numbers (shortcut_gradients/teaching/book_numbers.py): readers' printed tables, each explained."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from impl_torch import model as torch_model
from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, BOOK_WEIGHT_GRAD_MEANS, InputError
from shortcut_gradients.teaching import book_numbers as bn

# The printed tables of three readers' notebooks (the project's source documents), copied line for line
# from the notebooks' outputs: a test must not depend on files outside the repository.
TABLES = Path(__file__).resolve().parent / "data"
TABLE_LINE = re.compile(r"layers\.(\d)\.0\.weight\D*?([0-9][0-9.eE+-]*)")
# The tables each source prints, in order: (gelu, use_shortcut). 004 shows its own run, then the book's
# printed output under "The output looks like this", for each network; 000 and 002 print no table.
SEED_TABLES = {
    "reader_tables_001.txt": [("exact", False), ("exact", True)],  # defines the tanh class, builds nn.GELU()
    "reader_tables_003.txt": [("tanh", False), ("tanh", True)],
    "reader_tables_004.txt": [("exact", False), ("tanh", False), ("exact", True), ("tanh", True)],
}


def seed_tables(name: str) -> list[str]:
    """The printed tables of one source, as pasted text (five lines each)."""
    lines = [line for line in (TABLES / name).read_text(encoding="utf-8").splitlines() if TABLE_LINE.search(line)]
    assert len(lines) % 5 == 0, name
    return ["\n".join(lines[i : i + 5]) for i in range(0, len(lines), 5)]


SEED_CASES = [(name, i, form) for name, forms in SEED_TABLES.items() for i, form in enumerate(forms)]


@pytest.mark.parametrize("name, index, form", SEED_CASES, ids=[f"{n[-7:-4]}-{i}" for n, i, _ in SEED_CASES])
def test_each_seed_table_is_explained(name, index, form):
    """Every printed table in the readers' notebooks: seed 123, re-seeded, float32, the form they ran."""
    tables = seed_tables(name)
    assert len(tables) == len(SEED_TABLES[name])
    record = bn.explain(tables[index])
    gelu, use_shortcut = form
    assert record.explained
    assert record.best.config == bn.Config(
        gelu, use_shortcut, BOOK_SEED, True, None if gelu == "exact" else 0.044715, "float32"
    )


@pytest.mark.parametrize("key", list(BOOK_WEIGHT_GRAD_MEANS), ids=[f"{g}-{s}" for g, s in BOOK_WEIGHT_GRAD_MEANS])
def test_the_books_own_tables(key):
    gelu, use_shortcut = key
    text = "\n".join(
        f"layers.{i}.0.weight has gradient mean of {v!r}" for i, v in enumerate(BOOK_WEIGHT_GRAD_MEANS[key])
    )
    record = bn.explain(text)
    assert record.explained and (record.best.config.gelu, record.best.config.use_shortcut) == key
    assert (record.best.config.seed, record.best.config.reseeded, record.best.config.dtype) == (123, True, "float32")
    # The book's table was printed by another torch build: a few roundings off, never bit for bit here.
    assert record.best.max_rel_diff <= bn.ROUNDING_RTOL
    if gelu == "exact":
        assert any("nn.GELU()" in note for note in record.notes)


def book_table(use_shortcut, gelu_form, dtype="float32", seed=123, cubic=0.044715, reseeded=True) -> list[float]:
    """What a reader's own torch code prints: manual_seed, the book's model, print_gradients' means."""

    class GELU(nn.Module):  # the book's class, with the reader's coefficient
        def forward(self, x):
            return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + cubic * torch.pow(x, 3))))

    def build():
        act = GELU if gelu_form == "tanh" else nn.GELU
        sizes = list(zip(BOOK_LAYER_SIZES[:-1], BOOK_LAYER_SIZES[1:]))
        return nn.ModuleList(nn.Sequential(nn.Linear(a, b), act()) for a, b in sizes)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = build()
        if not reseeded:  # built the other model first, then this one, without manual_seed between
            layers = build()
    if dtype == "float64":
        layers = layers.double()
    x = torch.tensor([[1.0, 0.0, -1.0]], dtype=layers[0][0].weight.dtype)
    for layer in layers:
        out = layer(x)
        x = x + out if use_shortcut and out.shape == x.shape else out
    nn.MSELoss()(x, torch.zeros_like(x)).backward()
    return [layer[0].weight.grad.abs().mean().item() for layer in layers]


def test_drawn_after_another_network_without_reseeding():
    """The reader who seeds once and builds both models: the shortcut model's numbers are another draw's."""
    plain = book_table(True, "tanh")
    second = book_table(True, "tanh", reseeded=False)
    assert plain[0] > 10 * second[0]  # why a reader concludes that shortcuts do not help
    record = bn.explain(", ".join(map(repr, second)))
    assert record.explained
    assert record.best.config == bn.Config("tanh", True, 123, False, 0.044715, "float32")
    assert any("not re-seeded" in note for note in record.notes)


def test_coefficient_typo():
    record = bn.explain(" ".join(map(repr, book_table(False, "tanh", cubic=0.004715))))
    assert record.explained and record.best.config == bn.Config("tanh", False, 123, True, 0.004715, "float32")


def test_float64_reader():
    """model.double(): seventeen digits that are not float32 values say float64."""
    record = bn.explain(" ".join(map(repr, book_table(True, "exact", dtype="float64"))))
    assert record.explained and record.best.config == bn.Config("exact", True, 123, True, None, "float64")
    assert record.best.max_rel_diff < 1e-12  # float64 against float64: no float32 rounding in between


def test_another_seed():
    record = bn.explain(" ".join(map(repr, book_table(True, "tanh", seed=42))))
    assert record.explained and record.best.config == bn.Config("tanh", True, 42, True, 0.044715, "float32")


def test_a_few_float32_ulps_is_within_rounding():
    """Another platform's table: each number 3 float32 steps off the book's is still the book's configuration."""
    values = np.array(BOOK_WEIGHT_GRAD_MEANS[("tanh", True)], np.float32)
    for _ in range(3):
        values = np.nextafter(values, np.float32(np.inf))
    record = bn.explain(" ".join(repr(float(v)) for v in values))
    assert record.explained and record.best.config == bn.Config("tanh", True, 123, True, 0.044715, "float32")
    assert 0 < record.best.max_rel_diff <= bn.ROUNDING_RTOL
    assert "within rounding" in record.notes[0]


def test_random_numbers_are_not_explained():
    values = np.random.default_rng(0).uniform(1e-4, 1.0, 5)
    record = bn.explain(" ".join(repr(float(v)) for v in values))
    assert not record.explained and record.best is None
    assert 1 <= len(record.candidates) <= bn.N_CLOSEST
    assert all(m.max_rel_diff > bn.ROUNDING_RTOL for m in record.candidates)
    as_json = bn.record_to_json(record)
    assert as_json["explained"] is False and as_json["config"] is None and as_json["candidates"]
    json.dumps(as_json, allow_nan=False)
    assert "Not explained" in bn.format_explanation(record)


def test_json_record_of_an_explained_paste():
    record = bn.explain(" ".join(map(repr, BOOK_WEIGHT_GRAD_MEANS[("tanh", False)])))
    as_json = json.loads(json.dumps(bn.record_to_json(record), allow_nan=False))
    assert as_json["explained"] is True
    assert as_json["config"] == {
        "gelu": "tanh",
        "use_shortcut": False,
        "seed": 123,
        "reseeded": True,
        "gelu_cubic": 0.044715,
        "dtype": "float32",
    }
    assert 0 <= as_json["max_rel_diff"] <= bn.ROUNDING_RTOL and as_json["notes"]


BOOK = BOOK_WEIGHT_GRAD_MEANS[("tanh", True)]
FORMATS = {
    "book": "\n".join(f"layers.{i}.0.weight has gradient mean of {v!r}" for i, v in enumerate(BOOK)),
    "tensor-mps": "\n".join(
        f"layers.{i}.0.weight has gradient mean of tensor({v!r}, device='mps:0')" for i, v in enumerate(BOOK)
    ),
    "port": "\n".join(f"Layer {i}: {v!r}" for i, v in enumerate(BOOK)),
    "commas": ", ".join(map(repr, BOOK)),
    "markdown": "\n".join(f"layers.{i}.0.weight has gradient mean of {v!r} \\" for i, v in enumerate(BOOK)),
    "scientific": " ".join(f"{v:.8e}" for v in BOOK),
}


@pytest.mark.parametrize("text", FORMATS.values(), ids=FORMATS.keys())
def test_usual_formats_read_the_same_numbers(text):
    paste = bn.parse_paste(text)
    np.testing.assert_allclose(paste.values, BOOK, rtol=1e-8)  # 1e-8: the 9 digits of the scientific form


def test_coarse_print_says_so():
    """torch's tensor(0.2217) prints 4 decimals: it fits, and several configurations may fit it."""
    record = bn.explain(" ".join(f"tensor({v:.4f})" for v in BOOK))
    assert record.explained and record.best.config.use_shortcut
    assert any("few digits" in note for note in record.notes)


MALFORMED = {
    "empty": "",
    "words": "my numbers differ from the book",
    "too-few": "0.1, 0.2, 0.3",
    "two-tables": " ".join(["0.1"] * 10),
    "nan": "0.1 0.2 nan 0.4 0.5",
    "negative": "0.1 0.2 -0.3 0.4 0.5",
    "wrong-layers": "\n".join(f"layers.{i}.0.weight has gradient mean of 0.1" for i in (0, 1, 2, 4, 3)),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_paste_is_one_line(text):
    with pytest.raises(InputError) as err:
        bn.explain(text)
    assert "\n" not in str(err.value) and str(err.value)


def test_read_text_stdin_file_and_literal(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("0.1 0.2"))
    assert bn.read_text("-") == "0.1 0.2"
    path = tmp_path / "table.txt"
    path.write_text(FORMATS["book"], encoding="utf-8")
    assert bn.read_text(str(path)) == FORMATS["book"]
    assert bn.read_text("0.1, 0.2") == "0.1, 0.2"
    for bad in (str(tmp_path / "missing.txt"), str(tmp_path)):
        with pytest.raises(InputError, match="not"):
            bn.read_text(bad)
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="cannot read"):
        bn.read_text(str(tmp_path / "binary.txt"))


@pytest.mark.parametrize("seed", [BOOK_SEED, 7])
def test_draws_are_the_books(seed):
    """The first network of each seed is weights.seeded_params's; the caller's random stream is left alone."""
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    stack = bn.drawn_weights((seed,))[True]
    assert torch.rand(1) == before
    for (W, b), (W0, b0) in zip(bn.params_at(stack, 0), weights.seeded_params(BOOK_LAYER_SIZES, seed)):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


def test_batched_search_agrees_with_loss_and_grads():
    """The vmap'd search and impl_torch.loss_and_grads compute the same table, to float32 rounding;
    and the coefficient patch is undone."""
    stack = bn.drawn_weights((BOOK_SEED,))[True]
    for cubic in (0.044715, 0.004715):
        batched = bn.batched_means(stack, use_shortcut=True, gelu="tanh", cubic=cubic, dtype="float32")[0]
        config = bn.Config("tanh", True, BOOK_SEED, True, cubic, "float32")
        # 1e-6: a summation-order difference (a few float32 roundings) passes; the typo moves the table by far more.
        np.testing.assert_allclose(batched, bn.printed_means(config), rtol=1e-6)
    assert torch_model.GELU_CUBIC == 0.044715
    assert not np.allclose(
        bn.printed_means(bn.Config("tanh", True, 123, True, 0.004715, "float32")),
        bn.printed_means(bn.Config("tanh", True, 123, True, 0.044715, "float32")),
        rtol=1e-3,
    )


def test_typos_are_one_keystroke_away():
    assert bn.TYPOS[0] == 0.004715
    assert 0.044715 not in bn.TYPOS and len(set(bn.TYPOS)) == len(bn.TYPOS)
    assert {0.44715, 0.04715, 0.044175, 0.0044715} <= set(bn.TYPOS)
