"""benchmarks/isolation.py runs and prints what it promises: timings are never asserted, only that
every row is measured, the worker returns what the in-process call returns, and the table holds."""

import re

from benchmarks import isolation


def test_quick_run_measures_every_row(capsys):
    assert isolation.main(["--quick"]) == 0  # it exits if the worker's result differs from the in-process one
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| book") or line.startswith("| 4 x")]
    assert len(rows) == 4  # two networks, both shortcut settings
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        here, there, ratio = float(cells[2].split()[0]), float(cells[3].split()[0]), float(cells[5])
        assert here > 0 and there > 0 and abs(ratio - there / here) <= 0.01 * ratio  # printed to 3 digits
    assert re.search(r"\| worker start-up .* \| \d+ ms \|", out)
    assert re.search(r"load average \(1 min\) \d+\.\d\d before, \d+\.\d\d after", out)


def test_results_compare_bit_for_bit():
    params, x, target, _ = isolation.networks(quick=True)["book (3,3,3,3,3,1), 1 row"]
    _, module = isolation.user_code.load(str(isolation.PLUG_IN))
    kw = {"use_shortcut": True, "gelu_form": "tanh", "dtype": "float32"}
    a = module.loss_and_grads(params, x, target, **kw)
    b = module.loss_and_grads(params, x, target, **kw)
    assert isolation.same(a, b)
    b["dW"][0] = b["dW"][0] + 1e-3
    assert not isolation.same(a, b)  # a changed gradient is seen
