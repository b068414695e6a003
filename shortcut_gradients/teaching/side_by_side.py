"""The three implementations side by side: one static HTML page, rows aligned at the names they share.

The three model.py files follow one skeleton (constants, gelu, ExampleDeepNeuralNetwork,
mse_loss, loss_and_grads), so the page cuts each file at the top-level definitions that all
three share and puts the pieces in one row: a row runs from one shared definition to the
next, and takes along whatever a file defines in between (NumPy's hand-written backward
functions, JAX's loss_fn and grad_fn). Row "module" holds what comes before the first
shared definition: the docstring, imports and constants. Nothing is written by hand: a row
shows each file's own code, and every line of every file appears once, in order.

pygments (an optional extra, `pip install -e ".[html]"`) highlights it.
"""

import ast
import html
import importlib.util
import re
from pathlib import Path

from shortcut_gradients.plumbing.config import InputError

SOURCES = {  # framework: (module, column heading)
    "torch": ("impl_torch.model", "PyTorch: autograd"),
    "jax": ("impl_jax.model", "JAX + Flax NNX: jax.value_and_grad"),
    "numpy": ("impl_numpy.model", "NumPy: backward by hand"),
}
PREAMBLE = "module"  # the row for the docstring, imports and constants


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


def shared_names(sources: dict[str, str]) -> list[str]:
    """The public top-level names every file defines, in the first file's order."""
    names = [public_names(text) for text in sources.values()]
    return [n for n in names[0] if all(n in other for other in names[1:])]


def sections(source: str, shared: list[str]) -> list[tuple[str, int, str]]:
    """[(row name, first line number, source text)]: the file cut where each shared definition starts.

    Comments directly above a definition go with it. The texts joined give back the whole file."""
    lines = source.splitlines(keepends=True)
    cuts = []
    for node in ast.parse(source).body:
        if _defined_name(node) in shared:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
            while first > 0 and lines[first - 1].lstrip().startswith("#"):
                first -= 1
            cuts.append((_defined_name(node), first))
    bounds = [(PREAMBLE, 0)] + cuts + [(None, len(lines))]
    return [(name, begin + 1, "".join(lines[begin:end])) for (name, begin), (_, end) in zip(bounds, bounds[1:])]


def source_file(module: str) -> Path:
    """Where an implementation's model.py is, found without importing it (nor its framework)."""
    return Path(importlib.util.find_spec(module).origin)


def shown_path(module: str) -> str:
    """The file as its readers know it: impl_torch/model.py, wherever it is installed."""
    return module.replace(".", "/") + ".py"


def rows() -> tuple[list[str], dict[str, dict[str, tuple[int, str]]]]:
    """(row names in page order, {framework: {row name: (first line number, source text)}}), read now."""
    sources = {fw: source_file(module).read_text(encoding="utf-8") for fw, (module, _) in SOURCES.items()}
    shared = shared_names(sources)
    texts = {fw: {name: (line, text) for name, line, text in sections(src, shared)} for fw, src in sources.items()}
    return [PREAMBLE, *shared], texts


def hanging_indents(page: str, prefix: str, text: str) -> str:
    """Give each line's <span> a hanging indent past its own indentation, so a wrapped line stays indented.

    pygments' linespans put line k in <span id="{prefix}-k">; a line indented by n spaces gets
    padding n + 4 characters and a first-line indent of -(n + 4): the line itself starts at
    its n spaces, and what wraps continues 4 characters further in."""
    indents = [len(line) - len(line.lstrip(" ")) for line in text.splitlines()]

    def style(match):
        n = indents[int(match[1]) - 1] + 4
        return f'<span id="{prefix}-{match[1]}" style="padding-left:{n}ch;text-indent:-{n}ch">'

    return re.sub(rf'<span id="{re.escape(prefix)}-(\d+)">', style, page)


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
/* One block per source line; its hanging indent (set per line) keeps a wrapped line under its own code. */
.code pre > span[id] { display: block; }
.note { margin: 0; padding: 8px 10px; font-size: 0.88em; line-height: 1.4; color: #444; font-style: italic;
        background: #fffbe8; border: 1px dashed #d9c98c; }
"""


def build_page() -> str:
    """The whole page as one HTML string, highlighted from the three files as they are now."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    lexer = PythonLexer()
    names, texts = rows()
    head = [
        f'<div class="colhead">{html.escape(title)}<br><code>{html.escape(shown_path(module))}</code></div>'
        for module, title in SOURCES.values()
    ]
    body = []
    for name in names:
        body.append(f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>')
        for fw, (module, _) in SOURCES.items():
            attrs = f'class="cell" data-framework="{fw}" data-name="{html.escape(name)}"'
            first, text = texts[fw][name]
            blank = len(text) - len(text.lstrip("\n"))  # leading blank lines are not shown
            first, text = first + blank, text.strip("\n") + "\n"
            last = first + text.count("\n") - 1
            # linespans: one <span> per line, so that a wrapped line can hang (see CSS); ids unique per cell.
            formatter = HtmlFormatter(style="default", cssclass="code", linespans=f"{fw}-{name}")
            code = hanging_indents(highlight(text, lexer, formatter), f"{fw}-{name}", text)
            where = f"{shown_path(module)}, line{'s' if last > first else ''} {first}{f'-{last}' if last > first else ''}"
            body.append(f'<div {attrs}><div class="where">{where}</div>{code}</div>')
    nav = " ".join(f'<a href="#{html.escape(n)}">{html.escape(n)}</a>' for n in names)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>The shortcut network in PyTorch, JAX and NumPy, side by side</title>
<style>{CSS}{HtmlFormatter(style="default").get_style_defs(".code")}</style></head>
<body>
<header>
<h1>The book's shortcut network (section 4.4) in PyTorch, JAX and NumPy, side by side</h1>
<p>The three files follow one skeleton; each row starts at a definition all three share and runs to the next, so
what one framework needs and the others do not sits in the row where it is used: NumPy's hand-written backward
functions beside the autograd modules, JAX's <code>loss_fn</code> and <code>grad_fn</code> beside the loss.
Generated from the source files by <code>python compare.py --side-by-side FILE.html</code>.</p>
<nav>{nav}</nav>
</header>
<div class="grid">
{chr(10).join(head)}
{chr(10).join(body)}
</div>
</body></html>
"""


def write_page(path) -> None:
    """build_page() written atomically to `path`."""
    from shortcut_gradients.plumbing.files import write_atomically

    page = build_page()
    write_atomically(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
