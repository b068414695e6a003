"""Run the notebooks from a clean kernel and write them back with their outputs.

    python -m notebooks.make                             # every notebook, in place
    python -m notebooks.make backprop_exercises.ipynb    # one of them

Each notebook runs top to bottom in a fresh kernel of this Python interpreter (the project's
environment, whatever other kernels Jupyter knows of), with notebooks/ as its working
directory, as Jupyter runs it. The notebooks import only the installed project, so any other
folder does as well (the tests run them from a temporary one). A cell tagged "raises-exception"
may end in an error (it shows one); any other error stops the run and nothing is written. The
outputs are as deterministic as the code: no timings are recorded, nor printed (the depth
study's wall time is left out), a cell's printed text is one output however the kernel sent it,
cell ids are kept, and execution counts run 1, 2, 3; running it twice leaves no difference.
Exit status: 0 when every notebook ran and was written, 1 when a cell failed, 2 for bad input.
"""

import argparse
import asyncio
import sys
import time
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
NOTEBOOKS = ("shortcut_three_ways.ipynb", "backprop_exercises.ipynb")
CELL_TIMEOUT_S = 300  # per cell; the slowest cell (the cross-check, compiling JAX) takes seconds


class NotebookError(Exception):
    """A cell failed: the message names the notebook, the cell and the error, in one line."""


def kernel_manager():
    """An ipykernel of this interpreter: the notebooks run in the environment that runs this."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    # No kernel folders: only the native kernel is found, ipykernel under sys.executable, so a
    # "python3" kernelspec installed for another Python cannot be picked instead. Its messages go
    # over loopback TCP, encrypted (CurveZMQ keys from the manager) rather than in plain text.
    return AsyncKernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]), transport_encryption="auto"
    )


async def _execute(name: str, nb, cwd: Path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    km = kernel_manager()
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        record_timing=False,  # no timestamps in the committed file
        coalesce_streams=True,  # a cell's printing is one output, however the kernel split it into messages
        resources={"metadata": {"path": str(cwd)}},  # the kernel's working directory
    )
    try:
        await client.async_execute()
    except CellExecutionError as err:
        index = next(
            (i for i, cell in enumerate(nb.cells) for out in cell.get("outputs", []) if out.output_type == "error"),
            None,
        )
        where = f"cell {index} (id {nb.cells[index].id})" if index is not None else "a cell"
        raise NotebookError(f"{name}: {where} raised {err.ename}: {' '.join(str(err.evalue).split())}") from None
    finally:  # nbclient shuts down only a kernel it started itself
        if km.has_kernel:
            await km.shutdown_kernel()
    return nb


def execute(notebooks: dict, cwd: Path = FOLDER) -> dict:
    """{name: notebook} -> {name: the same notebooks, executed}; each in its own kernel, all at once, in cwd.

    The kernels run concurrently: most of each notebook's time is one process importing
    torch and JAX, so two or three of them share the machine's cores. Raises NotebookError
    for the first notebook with a cell that failed.
    """

    async def all_of_them():
        return await asyncio.gather(*(_execute(name, nb, cwd) for name, nb in notebooks.items()))

    return dict(zip(notebooks, asyncio.run(all_of_them())))


def read(name: str):
    import nbformat

    return nbformat.read(FOLDER / name, as_version=4)


def write(name: str, nb) -> None:
    import nbformat

    from shortcut_gradients.plumbing.files import write_atomically

    nbformat.validate(nb)
    write_atomically(FOLDER / name, lambda tmp: nbformat.write(nb, tmp))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebooks.make", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NOTEBOOK", help=f"default: {' '.join(NOTEBOOKS)}")
    args = parser.parse_args(argv)
    names = [Path(name).name for name in args.names] or list(NOTEBOOKS)
    unknown = [name for name in names if name not in NOTEBOOKS]
    if unknown:
        print(
            f"notebooks.make: error: no notebook {unknown[0]!r}; the notebooks are {', '.join(NOTEBOOKS)}",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    try:
        executed = execute({name: read(name) for name in names})
    except NotebookError as err:
        print(f"notebooks.make: error: {err}; nothing written", file=sys.stderr)
        return 1
    for name, nb in executed.items():
        write(name, nb)
        print(f"wrote notebooks/{name}", file=sys.stderr)
    print(f"ran {len(executed)} notebooks in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
