"""The cross-check's report as text: the per-layer table, the one-line verdict, and strict JSON."""

from shortcut_gradients.cli import to_json
from shortcut_gradients.plumbing.config import BOOK_RTOL, ORACLE
from shortcut_gradients.verdict import decide

__all__ = ["format_report", "oracle_summary", "share", "to_json", "verdict"]


def format_report(report: dict) -> str:
    """The table compare.py prints: per layer, each framework's mean |dL/dW| and the worst elementwise difference."""
    cfg = report["config"]
    source = f"weights {cfg['weights']}" if cfg["weights"] else f"seed {cfg['seed']}"
    names = cfg["frameworks"]
    tol = report["runs"][0]["tolerance"]
    network = f"{cfg['gelu']} GELU" + (", pre-LN" if cfg["norm"] == "pre" else "")
    over = "dW and db" + (", scale and shift" if cfg["norm"] == "pre" else "")
    if all(r.get("rule") == "bound" for r in report["runs"]):
        rule = "each element may differ by twice its measured rounding bound: docs/tolerances.md"
    else:
        rule = f"tolerance {tol:g}: shortcut_gradients/verdict/check.py"
    lines = [
        f"Layer sizes {cfg['layer_sizes']}, {source}, input {tuple(cfg['input_shape'])}, {network}, {cfg['dtype']}",
        f"mean |dL/dW| per layer; 'max rel diff': worst elementwise relative difference between any two"
        f" frameworks over the layer's {over} ({rule})",
    ]
    for r in report["runs"]:
        names = [n for n in cfg["frameworks"] if n in r["frameworks"]]  # not those that left themselves out
        losses = ", ".join(f"{n} {r['frameworks'][n]['loss']:.9g}" for n in names)
        lines += ["", f"{'With' if r['use_shortcut'] else 'Without'} shortcut (loss: {losses})"]
        widths = {n: max(15, len(n) + 2) for n in names}  # a long file name keeps its column apart
        header = f"{'layer':<18}" + "".join(f"{n:>{widths[n]}}" for n in names)
        header += f"{'book':>15}" if r["book"] else ""
        lines.append(header + f"{'max rel diff':>14}")
        for i, diff in enumerate(r["layer_max_rel_diff"]):
            row = f"{f'layers.{i}.0.weight':<18}" + "".join(
                f"{r['frameworks'][n]['weight_grad_mean_abs'][i]:>{widths[n]}.7e}" for n in names
            )
            row += f"{r['book']['values'][i]:>15.7e}" if r["book"] else ""
            lines.append(row + f"{diff:>14.1e}")
    lines += ["", *left_out_lines(report), *probe_lines(report), verdict(report)]
    return "\n".join(lines)


def left_out_lines(report: dict) -> list[str]:
    """One line per implementation that raised NotImplementedError (docs/contract.md): where it was
    left out of the comparison, and why."""
    settings = {}  # (name, why) -> ["with shortcut", "the batch probe without shortcut", ...]
    for on, runs in (("", report["runs"]), ("the batch probe ", report.get("probes", {}).get("runs", []))):
        for r in runs:
            for name, why in r.get("left_out", {}).items():
                settings.setdefault((name, why), []).append(
                    f"{on}{'with' if r['use_shortcut'] else 'without'} shortcut"
                )
    return [f"{name} left out ({', '.join(where)}): {why}" for (name, why), where in settings.items()]


def probe_lines(report: dict) -> list[str]:
    """The one line saying which probe ran (verdict/probes.py), or none where no probe ran."""
    probe = report.get("probes")
    if probe is None:
        return []
    settings = shortcut_settings(r["use_shortcut"] for r in probe["runs"])
    outcome = "every implementation compared agrees" if probe["agree"] else "they disagree"
    return [f"Also checked on the {probe['ran']}, {settings} shortcut: {outcome}"]


def disagreement(decided: decide.Verdict, entry: dict, dtype: str, tol: float, on: str = "") -> str:
    """One line for a decided DISAGREE: the first element to differ in backprop order, its values,
    which implementation is the odd one out, and what the difference looks like."""
    m = decided.first_mismatch
    where = m["tensor"] + (f"[{', '.join(map(str, m['index']))}]" if m["index"] else "")
    shown = m.get("dtype", dtype)
    digits = 9 if shown == "float32" else 17  # enough to tell apart any two values of the dtype
    setting = "with" if entry["use_shortcut"] else "without"
    rerun = (
        " in the float64 rerun (float32 could not tell the two GELU forms apart here)"
        if m.get("dtype") == "float64" and dtype == "float32"
        else ""
    )
    line = (
        f"DISAGREE{on}{rerun}: {where} {setting} shortcut is the first to differ in backprop order: "
        f"{m['frameworks'][0]} {m['values'][0]:.{digits}g} vs {m['frameworks'][1]} {m['values'][1]:.{digits}g} "
        f"(rel diff {m['rel_diff']:.2e} > {m.get('allowed', tol):.2g}, {shown})"
        + (f"; {m['odd_one_out']} is the odd one out" if m.get("odd_one_out") else "")
    )
    if diagnosis := entry.get("diagnosis"):
        line += f"; likely cause: {diagnosis['text']}"
    return line


def blind_spots(report: dict) -> str | None:
    """What a run on a single row with a single output cannot see, where no probe ran, else None."""
    cfg = report["config"]
    rows = 1
    for n in cfg["input_shape"][:-1]:
        rows *= n
    if "probes" in report or rows > 1 or cfg["layer_sizes"][-1] > 1:
        return None
    return (
        "this input is one row with one output, where a bias gradient taken from one row, a gradient not summed"
        " over a batch or a loss summed instead of averaged gives the same numbers: --batch N checks N rows"
    )


def verdict(report: dict) -> str:
    """One line: verdict/decide.py's verdict on the whole run, formatted: the first element to differ
    in backprop order, or what agreed and by how much."""
    cfg, runs = report["config"], report["runs"]
    names, tol = cfg["frameworks"], runs[0]["tolerance"]
    decided, entry = decide.overall(runs)
    if decided.status == decide.OVERFLOW:
        o, setting = entry["overflow"], "with" if entry["use_shortcut"] else "without"
        advice = "try --dtype float64" if cfg["dtype"] == "float32" else "use smaller weights, inputs or fewer layers"
        return (
            f"OVERFLOW: {o['tensor']} {setting} shortcut is inf or NaN in {', '.join(o['frameworks'])}: "
            f"the values outgrow {cfg['dtype']}, so nothing can be compared; {advice}"
        )
    if decided.status == decide.DISAGREE:
        return disagreement(decided, entry, cfg["dtype"], tol)
    if decided.status == decide.BOOK:
        return f"DISAGREE WITH THE BOOK: mean |dL/dW| off by {entry['book']['max_rel_diff']:.2e} relative (> {BOOK_RTOL:g})"
    probe = report.get("probes")
    if probe is not None and not probe["agree"]:
        decided, entry = decide.overall(probe["runs"])
        if decided.status == decide.DISAGREE:
            return disagreement(decided, entry, probe["dtype"], tol, on=" on the batch probe")
        return f"{decided.status} on the batch probe ({probe['ran']})"
    # The implementations compared pairwise: not the finite differences, nor one that left itself out.
    compared = [name for name in names if name != ORACLE and all(name in r["frameworks"] for r in runs)]
    if len(compared) > 1:
        worst = max(max(r["max_rel_diff"].values()) for r in runs)
        norms = ", every LayerNorm scale and shift" if cfg["norm"] == "pre" else ""
        what = f"the loss, output, every dW and db{norms}, and the input gradient"
        if all(r.get("rule") == "bound" for r in runs):
            used = max(max(r["room"].values()) for r in runs)
            margin = (
                f"the closest element used {share(used)} of its allowance, twice its measured rounding bound;"
                f" worst rel diff {worst:.1e}, {cfg['dtype']}"
            )
        else:
            margin = f"worst rel diff {worst:.1e} <= {tol:g}, {cfg['dtype']}"
        parts = [f"AGREE: {', '.join(compared)} match on every element of {what} ({margin})"]
    elif ORACLE in names:
        parts = [f"AGREE: {compared[0]} against finite differences"]
    else:
        parts = [f"ONLY {compared[0]}: nothing to compare it with"]
    if ORACLE in names:
        parts.append(oracle_summary([r[ORACLE] for r in runs]))
    parts += gelu_form_notes(runs, len(compared))
    books = [r["book"]["max_rel_diff"] for r in runs if r["book"]]
    if books:
        parts.append(f"mean |dL/dW| matches the book within {max(books):.1e} (<= {BOOK_RTOL:g})")
    if blind := blind_spots(report):
        parts.append(blind)
    return "; ".join(parts)


def gelu_form_notes(runs: list[dict], compared: int) -> list[str]:
    """What the AGREE line adds where a setting could not tell the two GELU forms apart (decide's
    notes): the float64 rerun that could, or, where none ran or it could not either, the caution
    that a mix-up would pass."""
    noted = {decide.RERAN: [], decide.BLIND: []}
    for r in runs:
        g, rerun = r["gelu_form_resolution"], r["float64_rerun"]
        for note in decide.gelu_form_notes(g, rerun, compared):
            noted[note].append((r["use_shortcut"], g, rerun))
    notes = []
    if reran := noted[decide.RERAN]:
        settings = shortcut_settings(s for s, _, _ in reran)
        g = max((g for _, g, _ in reran), key=lambda g: g["share"])
        room = max(max(rerun["room"].values()) for _, _, rerun in reran)
        notes.append(
            f"float32 could not tell the two GELU forms apart here, {settings} shortcut (the {g['other_form']}"
            f" form's largest move is {share(g['share'])} of an allowance, at {g['tensor']}), so every"
            f" implementation ran again in float64, where they agree too (the closest element used"
            f" {share(room)} of its allowance)"
        )
    if blind := noted[decide.BLIND]:
        settings = shortcut_settings(s for s, _, _ in blind)
        _, g, rerun = max(blind, key=lambda item: item[1]["share"])
        notes.append(
            f"but on this input, {settings} shortcut, an implementation computing the {g['other_form']} GELU form"
            f" would agree too (its largest move is {share(g['share'])} of an allowance, at {g['tensor']})"
            + (f"; {rerun['skipped']}" if rerun else "")
        )
    return notes


def shortcut_settings(flags) -> str:
    """use_shortcut flags in run order as words: "without", "with" or "without and with"."""
    return " and ".join(dict.fromkeys("with" if flag else "without" for flag in flags))


def share(fraction: float) -> str:
    """A share of an allowance as a percentage; one too small to round to 1% says so."""
    return f"{fraction:.0%}" if fraction >= 0.005 else "under 1%"


def oracle_summary(checks: list[dict]) -> str:
    """One sentence on the finite differences' agreement, over every shortcut setting."""
    resolved, unresolved = sum(c["resolved"] for c in checks), sum(c["unresolved"] for c in checks)
    text = (
        f"{ORACLE}: finite differences agree within {max(c['max_rel_diff'] for c in checks):.1e} relative "
        f"on {resolved} elements (their error bounds <= {max(c['max_bound'] for c in checks):.1e} relative)"
    )
    if unresolved:
        text += (
            f"; {unresolved} more are no bigger than their bound (largest |d|"
            f" {max(c['unresolved_max_abs'] for c in checks):.2g}), so differences cannot tell them from 0:"
            " they are within it"
        )
    return text
