"""Run the book's network in torch, JAX and NumPy on shared weights and check that the gradients agree.

    python compare.py                      # the book's configuration, with and without shortcut
    python compare.py --dtype float64      # agreement to 1e-12
    python compare.py --json               # one JSON object on stdout
    python compare.py --explain            # each layer's gradient: identity path vs through the layer
    python compare.py --plot layers.png    # the book's Figure 4.12, measured (and --sweep-plot depth.png)
    python compare.py --side-by-side page.html   # the three model.py files in aligned columns

Exit status: 0 when every element of every gradient agrees (and the book's numbers match,
where the configuration is the book's), 1 when anything disagrees, 2 for bad input.
"""

import argparse
import json
import os
import sys

import numpy as np

import impl_numerical as numerical
from crosscheck import check, oracle, sensitivity
from plumbing import files, frameworks, weights
from plumbing.config import (
    BOOK_LAYER_SIZES,
    BOOK_RTOL,
    BOOK_SEED,
    BOOK_WEIGHT_GRAD_MEANS,
    DTYPES,
    FRAMEWORKS,
    GELU_FORMS,
    ORACLE,
    SHORTCUT_SETTINGS,
    Config,
    InputError,
    parse_frameworks,
    parse_layer_sizes,
)
from teaching import explain


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit 2), like every other bad input."""

    def error(self, message):
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    p = OneLineParser(prog="compare.py", description=__doc__.splitlines()[0])
    p.add_argument("--layer-sizes", help="comma-separated widths, input first (default: the book's 3,3,3,3,3,1)")
    p.add_argument(
        "--seed", type=int, default=defaults.seed, help="torch.manual_seed for the weights (default: %(default)s)"
    )
    p.add_argument(
        "--weights", metavar="FILE", help="safetensors file with layers.{i}.0.weight/bias and optional input, target"
    )
    p.add_argument("--save-weights", metavar="FILE", help="write this run's weights, input and target (safetensors)")
    p.add_argument(
        "--shortcut", choices=tuple(SHORTCUT_SETTINGS), default=defaults.shortcut, help="default: %(default)s"
    )
    p.add_argument(
        "--gelu", choices=GELU_FORMS, default=defaults.gelu, help="GELU form (default: %(default)s, the book's)"
    )
    p.add_argument("--dtype", choices=DTYPES, default=defaults.dtype, help="default: %(default)s")
    p.add_argument(
        "--frameworks",
        default=None,
        help=f"comma-separated subset of torch,jax,numpy, and {ORACLE} for finite differences (float64, small networks)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    learn = p.add_argument_group("learning backprop from it (docs/backprop.md)")
    learn.add_argument(
        "--explain", action="store_true", help="per layer, the gradient through the layer and through the identity path"
    )
    learn.add_argument("--plot", metavar="FILE.png", help="per-layer mean |dL/dW| on a log scale (needs matplotlib)")
    learn.add_argument(
        "--sweep-depth",
        metavar="A:B[:STEP]",
        help="layer 0's mean |dL/dW| for networks of A to B layers of the first layer size, with a fitted decay rate",
    )
    learn.add_argument(
        "--sweep-plot",
        metavar="FILE.png",
        help=f"draw the depth sweep (needs matplotlib; depths {explain.DEFAULT_SWEEP} unless --sweep-depth is given)",
    )
    learn.add_argument(
        "--side-by-side", metavar="FILE.html", help="the three implementations in aligned columns (needs pygments)"
    )
    return p


def resolve(args) -> tuple[Config, list, np.ndarray, np.ndarray, bool]:
    """Check every input before any work; returns (config, params, x, target, is_book)."""
    names = parse_frameworks(args.frameworks or ",".join(Config().frameworks), FRAMEWORKS + (ORACLE,))
    if names == (ORACLE,):
        raise InputError(f"--frameworks {ORACLE} checks an implementation: add torch, jax or numpy")
    for name in names:
        if name != ORACLE:
            frameworks.check_installed(name)
    sizes = parse_layer_sizes(args.layer_sizes) if args.layer_sizes is not None else None
    if args.save_weights:
        files.check_output_path(args.save_weights, "--save-weights")

    x = target = None
    if args.weights:
        params, x, target = weights.load_weights(args.weights)
        file_sizes = (params[0][0].shape[1],) + tuple(W.shape[0] for W, _ in params)
        if sizes is not None and sizes != file_sizes:
            raise InputError(
                f"--layer-sizes {','.join(map(str, sizes))} disagrees with {args.weights}, which has {','.join(map(str, file_sizes))}"
            )
        sizes = file_sizes
    else:
        sizes = sizes or BOOK_LAYER_SIZES
        params = weights.seeded_params(sizes, args.seed)
    x = weights.default_input(sizes[0]) if x is None else x
    weights.check_input(x, sizes)
    target = weights.default_target(sizes[-1]) if target is None else target
    weights.check_target(target, x.shape[:-1] + (sizes[-1],))
    elements = sum(W.size + b.size for W, b in params) + x.size
    if ORACLE in names and elements > numerical.MAX_ELEMENTS:
        raise InputError(
            f"--frameworks {ORACLE} runs eight forward passes per weight, bias and input element; this network has "
            f"{elements:,}, more than {numerical.MAX_ELEMENTS:,}: leave {ORACLE} out or use a smaller network"
        )

    dtype = np.dtype(args.dtype)
    params = [(W.astype(dtype), b.astype(dtype)) for W, b in params]  # upcast (or round) once, here
    x, target = x.astype(dtype), target.astype(dtype)
    config = Config(sizes, args.seed, args.shortcut, args.gelu, args.dtype, names, args.weights)
    return config, params, x, target, is_book_configuration(config, params, x, target)


def is_book_configuration(config: Config, params, x, target) -> bool:
    """The book's numbers apply: its sizes, weights, input and target, in float32."""
    if config.layer_sizes != BOOK_LAYER_SIZES or config.dtype != "float32":
        return False
    book_params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    same_weights = all(np.array_equal(W, bW) and np.array_equal(b, bb) for (W, b), (bW, bb) in zip(params, book_params))
    return (
        same_weights
        and np.array_equal(x, weights.default_input(3))
        and np.array_equal(np.broadcast_to(target, (1, 1)), weights.default_target(1))
    )


def run(config: Config, params, x, target, is_book: bool) -> dict:
    """Every framework on every shortcut setting; returns the report that --json prints."""
    grads_fns = {
        name: numerical.loss_and_grads if name == ORACLE else frameworks.load(name) for name in config.frameworks
    }
    # The implementation whose float64 runs measure each element's magnitude (the size of the
    # terms it is summed from, crosscheck.sensitivity.sensitivity) for the comparison's noise floor:
    # NumPy when present, as it needs no compilation.
    floor_name = next(name for name in ("numpy", "torch", "jax") if name in grads_fns)
    runs = []
    for use_shortcut in SHORTCUT_SETTINGS[config.shortcut]:
        results = {
            name: fn(params, x, target, use_shortcut=use_shortcut, gelu_form=config.gelu, dtype=config.dtype)
            for name, fn in grads_fns.items()
        }
        magnitude = sensitivity.sensitivity(
            grads_fns[floor_name], params, x, target, use_shortcut=use_shortcut, gelu_form=config.gelu
        )
        means = {
            name: {
                "loss": float(r["loss"]),
                "weight_grad_mean_abs": check.layer_means(r["dW"]),
                "bias_grad_mean_abs": check.layer_means(r["db"]),
            }
            for name, r in results.items()
        }
        oracle_result = results.pop(ORACLE, None)  # checked on its own terms below, not pairwise
        entry = {
            "use_shortcut": use_shortcut,
            "frameworks": means,
            **check.compare(results, config.dtype, magnitude),
            "book": None,
        }
        if oracle_result:
            entry[ORACLE] = oracle.check(results, oracle_result, config.dtype)
            entry["first_mismatch"] = entry["first_mismatch"] or entry[ORACLE]["first_mismatch"]
            entry["agree"] = entry["agree"] and entry[ORACLE]["agree"]
        if is_book:
            entry["book"] = check.book_check(results, BOOK_WEIGHT_GRAD_MEANS[(config.gelu, use_shortcut)], BOOK_RTOL)
        runs.append(entry)
    agree = all(r["agree"] and (r["book"] is None or r["book"]["match"]) for r in runs)
    return {
        "agree": agree,
        "config": {
            "layer_sizes": list(config.layer_sizes),
            "weights": config.weights,
            "seed": None if config.weights else config.seed,
            "gelu": config.gelu,
            "dtype": config.dtype,
            "frameworks": list(config.frameworks),
            "input_shape": list(x.shape),
            "book_configuration": is_book,
        },
        "runs": runs,
    }


def format_report(report: dict) -> str:
    cfg = report["config"]
    source = f"weights {cfg['weights']}" if cfg["weights"] else f"seed {cfg['seed']}"
    names = cfg["frameworks"]
    tol = report["runs"][0]["tolerance"]
    lines = [
        f"Layer sizes {cfg['layer_sizes']}, {source}, input {tuple(cfg['input_shape'])}, {cfg['gelu']} GELU, {cfg['dtype']}",
        f"mean |dL/dW| per layer; 'max rel diff': worst elementwise relative error between any two"
        f" frameworks over the layer's dW and db (tolerance {tol:g}; see crosscheck/check.py)",
    ]
    for r in report["runs"]:
        losses = ", ".join(f"{n} {r['frameworks'][n]['loss']:.9g}" for n in names)
        lines += ["", f"{'With' if r['use_shortcut'] else 'Without'} shortcut (loss: {losses})"]
        header = f"{'layer':<18}" + "".join(f"{n:>15}" for n in names)
        header += f"{'book':>15}" if r["book"] else ""
        lines.append(header + f"{'max rel diff':>14}")
        for i, diff in enumerate(r["layer_max_rel_diff"]):
            row = f"{f'layers.{i}.0.weight':<18}" + "".join(
                f"{r['frameworks'][n]['weight_grad_mean_abs'][i]:>15.7e}" for n in names
            )
            row += f"{r['book']['values'][i]:>15.7e}" if r["book"] else ""
            lines.append(row + f"{diff:>14.1e}")
    lines += ["", verdict(report)]
    return "\n".join(lines)


def verdict(report: dict) -> str:
    cfg, runs = report["config"], report["runs"]
    names, tol = cfg["frameworks"], runs[0]["tolerance"]
    for r in runs:
        m = r["first_mismatch"]
        if m:
            where = f"{m['tensor']}[{', '.join(map(str, m['index']))}]"
            setting = "with" if r["use_shortcut"] else "without"
            return (
                f"DISAGREE: {where} {setting} shortcut is the first to differ in backprop order: "
                f"{m['frameworks'][0]} {m['values'][0]:.9g} vs {m['frameworks'][1]} {m['values'][1]:.9g} "
                f"(rel diff {m['rel_diff']:.2e} > {m.get('allowed', tol):.2g}, {cfg['dtype']})"
                + (f"; {m['odd_one_out']} is the odd one out" if m.get("odd_one_out") else "")
            )
    for r in runs:
        if r["book"] and not r["book"]["match"]:
            return f"DISAGREE WITH THE BOOK: mean |dL/dW| off by {r['book']['max_rel_diff']:.2e} relative (> {BOOK_RTOL:g})"
    worst = max(max(r["max_rel_diff"].values()) for r in runs)
    if len(names) == 1:
        text = f"ONLY {names[0]}: nothing to compare it with"
    else:
        text = (
            f"AGREE: {', '.join(names)} match on every element of the loss, output, every dW and db, and the "
            f"input gradient (worst rel diff {worst:.1e} <= {tol:g}, {cfg['dtype']})"
        )
    if ORACLE in names:
        text += "; " + oracle_summary([r[ORACLE] for r in runs])
    books = [r["book"]["max_rel_diff"] for r in runs if r["book"]]
    if books:
        text += f"; mean |dL/dW| matches the book within {max(books):.1e} (<= {BOOK_RTOL:g})"
    return text


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


def check_learning_flags(args) -> range | None:
    """Check --plot, --sweep-depth, --sweep-plot and --side-by-side before any work; returns the depths."""
    from teaching import plots, side_by_side

    flags = {"--plot": (args.plot, ".png"), "--sweep-plot": (args.sweep_plot, ".png")}
    flags["--side-by-side"] = (args.side_by_side, ".html")
    outputs = [(flag, path, suffix) for flag, (path, suffix) in flags.items() if path]
    for flag, path, suffix in outputs:
        if suffix == ".png":
            plots.require_matplotlib(flag)
        else:
            side_by_side.require_pygments(flag)
        files.check_output_path(path, flag, suffix)
    paths = [os.path.realpath(path) for _, path, _ in outputs]
    if len(set(paths)) < len(paths):
        raise InputError("--plot, --sweep-plot and --side-by-side must name different files")
    if args.sweep_depth is None and not args.sweep_plot:
        return None
    if args.weights:
        raise InputError(
            "--sweep-depth and --sweep-plot draw seeded weights for every depth; leave out --weights (--seed picks them)"
        )
    return explain.parse_depths(args.sweep_depth or explain.DEFAULT_SWEEP)


def learn(report: dict, args, config: Config, params, x, target, depths) -> None:
    """Add --explain's and the sweep's figures to the report, and write the pictures and the page."""
    from teaching import plots, side_by_side

    if args.explain:
        settings = SHORTCUT_SETTINGS[config.shortcut]
        report["explain"] = explain.explain(
            params, x, target, settings=settings, gelu_form=config.gelu, dtype=config.dtype
        )
    if depths is not None:
        names = [name for name in config.frameworks if name in frameworks.REQUIRES]
        if args.frameworks is None and len(names) > 1:
            # JAX compiles every depth anew (1 to 5 s each, growing with depth): a default sweep
            # of torch and NumPy takes seconds, with JAX minutes. Naming --frameworks brings it back.
            names.remove("jax")
            print("sweep: torch and numpy (add --frameworks torch,jax,numpy to sweep JAX too)", file=sys.stderr)
        fns = {name: frameworks.load(name) for name in names}
        width, d_out = config.layer_sizes[0], config.layer_sizes[-1]
        sweep = explain.sweep_depth(
            fns,
            depths,
            width=width,
            d_out=d_out,
            seed=config.seed,
            gelu_form=config.gelu,
            dtype=config.dtype,
            progress=lambda text: print(text, file=sys.stderr),
        )
        report["sweep"] = {**sweep, "fits": explain.fit_sweep(sweep)}
    if args.plot:
        plots.save_png(plots.layer_gradients_figure(report), args.plot)
    if args.sweep_plot:
        figure = plots.sweep_figure(report["sweep"], gelu_form=config.gelu, dtype=config.dtype)
        plots.save_png(figure, args.sweep_plot)
    if args.side_by_side:
        side_by_side.write_page(args.side_by_side)


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        config, params, x, target, is_book = resolve(args)
        depths = check_learning_flags(args)
        if args.save_weights:
            weights.save_weights(args.save_weights, params, x, target)
    except (InputError, OSError) as err:
        print(f"compare.py: error: {err}", file=sys.stderr)
        return 2
    report = run(config, params, x, target, is_book)
    try:
        learn(report, args, config, params, x, target, depths)
    except OSError as err:  # a picture or the page could not be written (nothing half-written is left)
        print(f"compare.py: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if "explain" in report:
            print("\n" + explain.format_explain(report["explain"]))
        if "sweep" in report:
            print("\n" + explain.format_sweep(report["sweep"], report["sweep"]["fits"]))
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
