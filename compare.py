"""The book's network in torch, JAX and NumPy on shared weights, gradients checked element by element.

This script is `shortcut-compare` (the installed command) run from the repository; see
`python compare.py --help`, and shortcut_gradients/compare.py for the command line itself.
"""

import sys

from shortcut_gradients.compare import main

if __name__ == "__main__":
    sys.exit(main())
