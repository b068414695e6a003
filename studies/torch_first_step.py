"""torch's first float32 step in a process, against float64: how often it is off by far more than rounding.

    python -m studies.torch_first_step             # 12 fresh processes, the other core left idle
    python -m studies.torch_first_step 20 --load   # 20, with a busy loop on the other core
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python -m studies.torch_first_step    # torch on one thread

Each process builds one of the book's layers (nn.Linear 512 -> 512 and the tanh GELU,
impl_torch.model) with nn.Linear's initialisation, runs its first step on 8192 standard normal
rows, and prints the largest absolute error against the same layer in float64. The processes are
identical, so their errors should be too; docs/tolerances.md has what this machine printed.
"""

import subprocess
import sys

CHILD = r"""
import numpy as np, torch
from impl_torch import model
rng = np.random.default_rng(0)
a = 1 / 512**0.5
W, b = rng.uniform(-a, a, (512, 512)).astype(np.float32), rng.uniform(-a, a, 512).astype(np.float32)
x = rng.standard_normal((8192, 512)).astype(np.float32)
net = model.ExampleDeepNeuralNetwork.from_params([(W, b)], False, "tanh", "none", dtype=torch.float32)
first = net.layers[0](torch.tensor(x, requires_grad=True)).detach().numpy()  # the process's first step
W64, b64, x64 = (torch.tensor(v, dtype=torch.float64) for v in (W, b, x))
exact = model.gelu(x64 @ W64.T + b64, "tanh").numpy()
print(float(np.max(np.abs(first - exact))))
"""


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(next((a for a in args if a.isdigit()), 12))
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if "--load" in args else None
    try:
        errors = [
            float(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout)
            for _ in range(n)
        ]
    finally:
        if burner:
            burner.kill()
    typical = sorted(errors)[len(errors) // 2]
    far = sum(e > 10 * typical for e in errors)
    print(f"{n} processes, median error {typical:.1e}; over 10 times it: {far}, largest {max(errors):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
