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
import sys

from shortcut_gradients.plumbing import inputs, weights
from shortcut_gradients.plumbing.config import (
    DTYPES,
    GELU_FORMS,
    NORMS,
    ORACLE,
    SHORTCUT_SETTINGS,
    Config,
    InputError,
    parse_layer_sizes,
)
from shortcut_gradients.plumbing.frameworks import MODULES
from shortcut_gradients.teaching import outputs
from shortcut_gradients.verdict import report as reporting
from shortcut_gradients.verdict.run import run


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
        "--norm",
        choices=NORMS,
        default=defaults.norm,
        help="pre: a LayerNorm in front of every layer, x = x + GELU(Linear(LN(x))), the book's next step "
        "(default: %(default)s, the book's network)",
    )
    p.add_argument(
        "--frameworks",
        help=f"comma-separated, from {','.join(m for m in MODULES if m != ORACLE)} "
        f"(default: {','.join(defaults.frameworks)}), a .py file or module of your own (docs/contract.md),"
        f" and {ORACLE} for finite differences (float64, small networks)",
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
        help="the depth study (docs/depth.md): layer 0's mean |dL/dW| over many random networks of A to B layers,"
        f" plain, with shortcut and pre-LN, with fitted per-layer factors (default {outputs.DEFAULT_SWEEP_DEPTHS})",
    )
    learn.add_argument(
        "--sweep-plot",
        metavar="FILE.png",
        help="draw the depth study (needs matplotlib; the --sweep-* flags or their defaults)",
    )
    learn.add_argument(
        "--sweep-seeds",
        metavar="N",
        type=int,
        help=f"random networks per depth in the depth study, seeds --seed onwards (default {outputs.DEFAULT_SWEEP_SEEDS})",
    )
    learn.add_argument(
        "--sweep-widths", metavar="W,W", help=f"the depth study's widths (default {outputs.DEFAULT_SWEEP_WIDTHS})"
    )
    learn.add_argument(
        "--side-by-side", metavar="FILE.html", help="the three implementations in aligned columns (needs pygments)"
    )
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        run_inputs = inputs.resolve(
            frameworks_text=args.frameworks,
            layer_sizes=parse_layer_sizes(args.layer_sizes) if args.layer_sizes is not None else None,
            seed=args.seed,
            weights_file=args.weights,
            save_weights=args.save_weights,
            shortcut=args.shortcut,
            gelu=args.gelu,
            dtype=args.dtype,
            norm=args.norm,
        )
        request = outputs.Request(
            args.explain,
            args.plot,
            args.sweep_depth,
            args.sweep_plot,
            args.side_by_side,
            sweep_seeds=args.sweep_seeds,
            sweep_widths=args.sweep_widths,
        )
        sweep = outputs.check(request, weights_file=args.weights)
        if args.save_weights:
            weights.save_weights(args.save_weights, run_inputs.params, run_inputs.x, run_inputs.target)
        report = run(run_inputs)
        outputs.produce(report, request, run_inputs, sweep)
    except (InputError, OSError) as err:  # bad input, or a file that could not be written (none is left half-written)
        print(f"compare.py: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(reporting.to_json(report))
    else:
        print(reporting.format_report(report) + outputs.format_learning(report))
    return 0 if report["agree"] else 1


def main_exit() -> None:
    """The console script `shortcut-compare`."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
