"""The book's network in torch, JAX and NumPy on shared weights, gradients checked element by element.

This script is `shortcut-compare` (the installed command) run from the repository; see
`python compare.py --help`, and shortcut_gradients/compare.py for the command line itself.
"""

import sys

if __name__ == "__main__":
    try:
        from shortcut_gradients.compare import main_exit
    except KeyboardInterrupt:  # Ctrl-C while the package loads: one line, as anywhere else in the run
        print("compare.py: interrupted", file=sys.stderr)
        sys.exit(130)
    main_exit()
