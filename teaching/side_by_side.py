"""The three implementations side by side: one static HTML page, rows aligned by name.

Each model.py is cut at its top-level definitions (functions, classes, and public
assignments such as JAX's grad_fn); comments and blank lines between two definitions go
with the one below. Row "module" holds what comes before the first definition: the
docstring, imports and constants. A row is named after its definition, and where one
implementation has no definition of that name, its cell says what does that job there
(NumPy's gelu_backward is autograd's work in torch, jax.value_and_grad's in JAX).

The page is generated from the files at run time and never edited by hand; pygments
(an optional extra, `pip install -e ".[html]"`) highlights it.
"""

import ast
import html
import importlib.util
from pathlib import Path

from plumbing.config import InputError

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {  # framework: (file, column heading)
    "torch": ("impl_torch/model.py", "PyTorch: autograd"),
    "jax": ("impl_jax/model.py", "JAX + Flax NNX: jax.value_and_grad"),
    "numpy": ("impl_numpy/model.py", "NumPy: backward by hand"),
}
PREAMBLE = "module"  # the row for the docstring, imports and constants

# What does the job of a definition that one implementation lacks: (framework, name) -> note.
NOTES = {
    ("numpy", "GELU"): "No module class: gelu is a plain function, and forward calls it.",
    ("torch", "gelu_backward"): "No gelu_backward: autograd recorded gelu's operations in the forward pass, "
    "and loss.backward() applies each one's derivative in reverse.",
    ("jax", "gelu_backward"): "No gelu_backward: jax.value_and_grad traces gelu inside loss_fn and derives "
    "its derivative (see grad_fn).",
    ("numpy", "ExampleDeepNeuralNetwork"): "No class: params is a plain list of (W, b), and forward below runs "
    "the layers.",
    ("torch", "forward"): "ExampleDeepNeuralNetwork.forward above is the forward pass; autograd keeps what the "
    "backward pass needs, so no cache is returned.",
    ("jax", "forward"): "ExampleDeepNeuralNetwork.__call__ above is the forward pass; jax.value_and_grad keeps "
    "what the backward pass needs.",
    ("torch", "mse_loss_backward"): "loss.backward() starts at dL/dL = 1 and differentiates mse_loss itself.",
    ("jax", "mse_loss_backward"): "jax.value_and_grad differentiates mse_loss itself, inside loss_fn.",
    ("torch", "loss_fn"): "No loss function of the parameters: loss_and_grads computes the loss from the model and "
    "calls loss.backward() on it.",
    ("numpy", "loss_fn"): "No loss function of the parameters: loss_and_grads calls forward, mse_loss, "
    "mse_loss_backward and backward in turn.",
    ("torch", "grad_fn"): "loss.backward() in loss_and_grads plays this part; nothing is compiled.",
    ("numpy", "grad_fn"): "backward below is the gradient function, written by hand.",
    ("torch", "backward"): "loss.backward() in loss_and_grads below: autograd walks the recorded graph in reverse "
    "and fills each parameter's .grad.",
    ("jax", "backward"): "jax.value_and_grad(loss_fn) in grad_fn above: JAX derives the reverse pass from loss_fn, "
    "and jax.jit compiles it.",
}


def require_pygments(flag: str) -> None:
    if importlib.util.find_spec("pygments") is None:
        raise InputError(f'{flag} highlights with pygments, which is not installed: pip install -e ".[html]"')


def _defined_name(node: ast.stmt) -> str | None:
    """The row name a top-level statement starts, or None (imports, constants, private names)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        name = node.name
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name = node.targets[0].id
        if name.isupper():  # a constant: part of the module's preamble or the definition below
            return None
    else:
        return None
    return None if name.startswith("_") else name


def public_names(source: str) -> list[str]:
    """The module's public top-level definitions, in file order."""
    return [name for node in ast.parse(source).body if (name := _defined_name(node))]


def chunks(source: str) -> list[tuple[str, str]]:
    """[(row name, source text)] in file order; the texts joined give back the whole file."""
    lines = source.splitlines(keepends=True)
    starts = []  # (name, first line index of the definition, decorators included)
    for node in ast.parse(source).body:
        if name := _defined_name(node):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
            starts.append((name, first, node.end_lineno))
    out, begin = [], 0
    for k, (name, _, end) in enumerate(starts):
        if k == 0:
            first = starts[0][1]
            while first > 0 and lines[first - 1].lstrip().startswith("#"):  # comments above the first def
                first -= 1
            out.append((PREAMBLE, "".join(lines[:first])))
            begin = first
        stop = end if k + 1 < len(starts) else len(lines)  # the last row takes the file's tail
        out.append((name, "".join(lines[begin:stop])))
        begin = stop
    return out or [(PREAMBLE, source)]


def row_order(names_per_file: list[list[str]]) -> list[str]:
    """One order for the rows that keeps every file's own order (a topological merge).

    Among the names free to go next, the one earliest in its file (as a fraction of the
    file's length) goes first; ties go to the file listed first.
    """
    position, after = {}, {}
    for f, names in enumerate(names_per_file):
        for i, name in enumerate(names):
            position[name] = min(position.get(name, (2.0, f)), (i / max(len(names), 1), f))
            after.setdefault(name, set())
            if i:
                after[name].add(names[i - 1])
    order = []
    while after:
        free = [n for n, before in after.items() if not before - set(order)]
        if not free:  # two files disagree on the order: fall back to the first-seen order for the rest
            free = list(after)
        name = min(free, key=lambda n: position[n])
        order.append(name)
        del after[name]
    return order


def rows(root: Path = ROOT) -> tuple[list[str], dict[str, dict[str, tuple[int, str]]]]:
    """(row names in page order, {framework: {row name: (first line number, source text)}}), read now."""
    texts = {}
    for fw, (path, _) in SOURCES.items():
        texts[fw], line = {}, 1
        for name, text in chunks((root / path).read_text(encoding="utf-8")):
            texts[fw][name] = (line, text)
            line += text.count("\n")
    names = row_order([[n for n in t if n != PREAMBLE] for t in texts.values()])
    return [PREAMBLE, *names], texts


CSS = """
body { font-family: system-ui, sans-serif; margin: 0 16px 32px; color: #222; }
header { max-width: 72em; }
h1 { font-size: 1.35em; margin: 14px 0 6px; }
header p { margin: 4px 0; line-height: 1.4; font-size: 0.95em; }
nav { margin: 8px 0 4px; font-size: 0.9em; }
nav a { margin-right: 0.9em; white-space: nowrap; }
.grid { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); column-gap: 10px; }
.colhead { position: sticky; top: 0; z-index: 1; background: #2b3440; color: #fff; padding: 6px 8px;
           font-weight: 600; font-size: 0.9em; }
.colhead code { font-weight: normal; color: #cfd8e3; }
h2 { grid-column: 1 / -1; font-size: 1em; margin: 18px 0 4px; padding: 3px 8px; background: #e8edf3;
     border-left: 4px solid #2b3440; font-family: ui-monospace, monospace; }
.cell { min-width: 0; }
.where { font-size: 0.72em; color: #778; text-align: right; margin: 0 2px 1px; }
.code pre { margin: 0; padding: 6px 8px; background: #f8f8f8; border: 1px solid #e2e2e2; font-size: 11.5px;
            line-height: 1.4; white-space: pre-wrap; overflow-wrap: anywhere; }
/* A line too long for the column wraps with a hanging indent, so each source line still reads as one. */
.code pre > span[id] { display: block; padding-left: 4ch; text-indent: -4ch; }
.note { margin: 0; padding: 8px 10px; font-size: 0.88em; line-height: 1.4; color: #444; font-style: italic;
        background: #fffbe8; border: 1px dashed #d9c98c; }
"""


def build_page(root: Path = ROOT) -> str:
    """The whole page as one HTML string, highlighted from the three files as they are now."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    lexer = PythonLexer()
    names, texts = rows(root)
    head = [
        f'<div class="colhead">{html.escape(title)}<br><code>{html.escape(path)}</code></div>'
        for path, title in SOURCES.values()
    ]
    body = []
    for name in names:
        body.append(f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>')
        for fw, (path, _) in SOURCES.items():
            attrs = f'class="cell" data-framework="{fw}" data-name="{html.escape(name)}"'
            if name not in texts[fw]:
                note = NOTES.get((fw, name), f"Not defined in {path}.")
                body.append(f'<div {attrs}><p class="note">{html.escape(note)}</p></div>')
                continue
            first, text = texts[fw][name]
            blank = len(text) - len(text.lstrip("\n"))  # leading blank lines are not shown
            first, text = first + blank, text.strip("\n") + "\n"
            last = first + text.count("\n") - 1
            # linespans: one <span> per line, so that a wrapped line can hang (see CSS); ids unique per cell.
            formatter = HtmlFormatter(style="default", cssclass="code", linespans=f"{fw}-{name}")
            where = f"{path}, line{'s' if last > first else ''} {first}{f'-{last}' if last > first else ''}"
            body.append(f'<div {attrs}><div class="where">{where}</div>{highlight(text, lexer, formatter)}</div>')
    nav = " ".join(f'<a href="#{html.escape(n)}">{html.escape(n)}</a>' for n in names)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>The shortcut network in PyTorch, JAX and NumPy, side by side</title>
<style>{CSS}{HtmlFormatter(style="default").get_style_defs(".code")}</style></head>
<body>
<header>
<h1>The book's shortcut network (section 4.4) in PyTorch, JAX and NumPy, side by side</h1>
<p>Each row is one definition, by name, in the three files' own order. Where a framework has no such definition,
its cell says what does that job there: the NumPy file writes the backward pass by hand; torch and JAX derive it.
Generated from the source files by <code>python compare.py --side-by-side FILE.html</code>.</p>
<nav>{nav}</nav>
</header>
<div class="grid">
{chr(10).join(head)}
{chr(10).join(body)}
</div>
</body></html>
"""


def write_page(path, root: Path = ROOT) -> None:
    """build_page() written atomically to `path`."""
    from plumbing.files import write_atomically

    page = build_page(root)
    write_atomically(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
