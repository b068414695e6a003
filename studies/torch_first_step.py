"""torch's first float32 tanh in a process, against float64: how often it is off by far more than rounding.

    python -m studies.torch_first_step             # 12 fresh processes each way, the other core left idle
    python -m studies.torch_first_step 20 --load   # 20, with a busy loop on the other core
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python -m studies.torch_first_step    # torch on one thread

Each process builds one of the book's layers in plain torch (nn.Linear 512 -> 512 with
nn.Linear's initialisation, then the tanh GELU as the book writes it), runs it once on 8192
standard normal rows, and prints the largest absolute error against the same layer in float64.
The processes are identical, so their errors should be too. Two ways: torch as it comes, and
torch after one call of torch.tanh on one element, which impl_torch makes on import for this
reason; docs/tolerances.md has what this machine printed.
"""

import subprocess
import sys

CHILD = r"""
import math, sys
import numpy as np, torch
if sys.argv[1] == "warmed":
    torch.tanh(torch.zeros(1))  # what impl_torch/__init__.py does: tanh's first call, on one thread
rng = np.random.default_rng(0)
a = 1 / 512**0.5
W, b = rng.uniform(-a, a, (512, 512)).astype(np.float32), rng.uniform(-a, a, 512).astype(np.float32)
x = rng.standard_normal((8192, 512)).astype(np.float32)

def layer(W, b, x):  # nn.Linear, then the book's tanh GELU
    z = x @ W.T + b
    return 0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))

first = layer(*(torch.tensor(v) for v in (W, b, x))).numpy()  # the process's first step
exact = layer(*(torch.tensor(v, dtype=torch.float64) for v in (W, b, x))).numpy()
print(float(np.max(np.abs(first - exact))))
"""


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(next((a for a in args if a.isdigit()), 12))
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if "--load" in args else None
    try:
        for way in ("as it comes", "warmed"):
            errors = [
                float(subprocess.run([sys.executable, "-c", CHILD, way], capture_output=True, text=True, check=True).stdout)
                for _ in range(n)
            ]
            typical = sorted(errors)[len(errors) // 2]
            far = sum(e > 10 * typical for e in errors)
            print(f"torch {way}: {n} processes, median error {typical:.1e}; over 10 times it: {far}, largest {max(errors):.1e}")
    finally:
        if burner:
            burner.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
