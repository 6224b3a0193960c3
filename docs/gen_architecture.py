"""Build-time generator of the Architecture page (run by mkdocs-gen-files, see ``mkdocs.yml``).

``docs/architecture.md`` holds the prose; this script fills its three markers from the code:

- ``<!-- generated: layers -->``: the picture of the layers, ``architecture/layers.svg``, drawn
  from ``tests/test_architecture.py``'s layer definitions (``FACES``, ``APPS``, ``layer_of``) and
  every ``import`` statement of the package, parsed with that test's own ``imports_of``: a box per
  package, an arrow per package that imports another (``from streamrbf import X`` counts as an
  import of the module that defines ``X``). The layers are drawn bottom up, so an import that
  breaks the rule would be an arrow pointing up, drawn in red.
- ``<!-- generated: modules -->``: a table of every module, its layer, the first sentence of its
  docstring and the packages it imports.
- ``<!-- generated: parameters -->``: every parameter of every face, a row per name, read from the
  signatures and numpy docstrings (statically, with griffe: neither River nor Beam is imported),
  the fields of ``streamrbf.core.policy.Policy`` (what the Beam transforms take as
  ``**model_params``) and the parser of ``streamrbf run``; then the deprecated names.

Preview without mkdocs: ``python docs/gen_architecture.py --out DIR``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import html
import importlib.util
import re
import sys
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = "architecture.md"
SVG = "architecture/layers.svg"  # relative to docs/, as the page links it

MARKERS = ("layers", "modules", "parameters")

# The faces whose parameters the table lists: (column title, dotted path of the class).
FACE_COLUMNS = [
    ("`RBFKMeans` (scikit-learn style)", "streamrbf.kmeans.RBFKMeans"),
    ("`river.RBFKMeans`", "streamrbf.river.RBFKMeans"),
    ("`river.KeyedRBFKMeans`", "streamrbf.river.KeyedRBFKMeans"),
    ("`beam.ClusterPerKey`", "streamrbf.beam.per_key.ClusterPerKey"),
    ("`beam.ClusterGlobally`", "streamrbf.beam.global_model.ClusterGlobally"),
    ("`nn.RBFCluster`", "streamrbf.nn.RBFCluster"),
]
CLI_COLUMN = "`streamrbf run`"
# One concept under two names: (face parameter or flag) -> the row it belongs to.
SAME_CONCEPT = {"seed": "random_state", "features": "feature_names"}
# Rows whose meaning differs by face in a way one docstring does not say.
MEANING = {
    "batch_size": "Events per step: `fit`'s mini-batch (None: full batch, each iteration one "
                  "soft-Lloyd step); a stream's batch (River, `ClusterPerKey`, `streamrbf run`).",
    "random_state": "Seed of every random draw of the model (each draw is a function of the "
                    "seed, the model's step count and its purpose).",
    "n_features": "Dimension of the data (`RBFCluster`: of the embeddings; Beam: fixes it, events "
                  "of another dimension are dead letters).",
    "max_buffering_secs": "Processing time a partial batch may wait before it is learnt from "
                          "(streams; None: until full or idle).",
}


# ---------------------------------------------------------------------------- the code's facts
def _architecture_test() -> types.ModuleType:
    """``tests/test_architecture.py`` as a module (pytest is stubbed if it is not installed)."""
    path = ROOT / "tests" / "test_architecture.py"
    spec = importlib.util.spec_from_file_location("_architecture_rules", path)
    module = importlib.util.module_from_spec(spec)
    if importlib.util.find_spec("pytest") is None:
        stub = types.ModuleType("pytest")
        stub.mark = types.SimpleNamespace(parametrize=lambda *a, **k: (lambda f: f))
        sys.modules.setdefault("pytest", stub)
    spec.loader.exec_module(module)
    return module


def _lazy_names() -> dict[str, str]:
    """What the package root re-exports: name -> the module that defines it (``_LAZY``)."""
    tree = ast.parse((ROOT / "streamrbf" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _docstring_sentence(text: str | None) -> str:
    """The first sentence of a docstring's first paragraph, Sphinx roles as code."""
    if not text:
        return ""
    para = " ".join(text.strip().split("\n\n")[0].split())
    para = re.sub(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`", r"`\1`", para)
    para = re.sub(r":math:`([^`]+)`", r"`\1`", para)
    para = para.replace("``", "`")
    for m in re.finditer(r"(?<=[.])\s+(?=[A-Z(`\"])", para):
        if m.start() >= 40:  # not a fragment ('"events": one record per event.')
            return para[: m.start()]
    return para


@dataclasses.dataclass
class Package:
    """A box of the picture: a package (or single module) of the project, in one layer."""

    name: str
    layer: str
    modules: list[str]
    public: list[str]


def collect(arch: types.ModuleType) -> tuple[dict[str, Package], dict[str, Any], set, list]:
    """The packages, per-module facts, package-level import edges and rule violations."""
    sources = arch._sources()
    known = set(sources)
    lazy = _lazy_names()
    groups = ["streamrbf.core", *arch.FACES, *arch.APPS]

    def group_of(module: str) -> str | None:
        return next((g for g in groups if arch._within(module, g)), None)

    packages: dict[str, Package] = {}
    for g in groups:
        members = sorted(m for m in sources if arch._within(m, g))
        if not members:
            continue
        public: list[str] = []
        source, _ = sources[g] if g in sources else ("", False)
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                try:
                    public = list(ast.literal_eval(node.value))
                except ValueError:
                    public = []
        packages[g] = Package(g, arch.layer_of(g), [m for m in members if m != g], public)

    facts: dict[str, Any] = {}
    edges: set[tuple[str, str]] = set()
    for module, (source, is_package) in sorted(sources.items()):
        targets: set[str] = set()
        for target, names, _ in arch.imports_of(source, module, is_package):
            if target == "streamrbf":
                targets |= {lazy[n] for n in names if n in lazy}
            elif target in known:
                targets.add(target)
        here = group_of(module)
        imported = sorted({group_of(t) for t in targets} - {None, here})
        facts[module] = {
            "layer": arch.layer_of(module),
            "doc": _docstring_sentence(ast.get_docstring(ast.parse(source))),
            "imports": imported,
        }
        if here is not None:
            edges |= {(here, t) for t in imported}
    violations = [v for m, (src, pkg) in sources.items()
                  for v in arch.violations(m, src, pkg, known)]
    return packages, facts, edges, violations


# ---------------------------------------------------------------------------------- the picture
_FILL = {"app": "#fdebd3", "face": "#dcefdc", "core": "#dbe7f7"}
_STROKE = {"app": "#b8732b", "face": "#3f8a3f", "core": "#3a66a8"}
_BAND_TITLE = {  # a label in the left column: title, then smaller lines
    "app": ["apps", "command line, jobs,", "benchmarks, experiments"],
    "face": ["faces", "one per host framework,", "each on the core alone"],
    "core": ["core", "the engine: mathematics,", "state, policy, kernels"],
}
_LABEL_COLUMN = 190
_TITLE_PX, _TEXT_PX = 13, 11
_CHAR = 0.61  # monospace advance per pixel of font size
_PAD, _GAP, _BAND_GAP = 10, 18, 70


def _text_width(text: str, px: int) -> float:
    return len(text) * px * _CHAR


def _box_lines(pkg: Package, within_layer: list[str]) -> list[str]:
    """The lines under a box's title: its modules (or public names), and its imports within the
    layer (drawn as text, not arrows: the arrows of the picture all point down)."""
    prefix = pkg.name + "."
    if pkg.modules:
        names = [m.removeprefix(prefix) for m in pkg.modules]
        names = [n for n in names if n != "__main__"]
    else:
        names = pkg.public
    lines, line = [], ""
    per_line = 34 if pkg.layer != "core" else 96
    for n in names:
        piece = n if not line else f"{line}, {n}"
        if len(piece) > per_line and line:
            lines.append(line + ",")
            line = n
        else:
            line = piece
    if line:
        lines.append(line)
    if within_layer:
        short = [w.removeprefix("streamrbf.") for w in within_layer]
        lines.append("uses " + ", ".join(short))
    return lines


_BANDS = ("app", "face", "core")
_RANK = {"app": 0, "face": 1, "core": 2}


def _layout(packages: dict[str, Package], edges: set[tuple[str, str]], app_order: list[str]
            ) -> tuple[dict[str, tuple[float, float, float, float, list[str]]], float, float,
                       dict[str, float]]:
    """Where each box goes: ``{package: (x, y, width, height, lines)}``, the picture's width and
    height, and the top of each band."""
    by_band = {b: [p for p in packages.values() if p.layer == b] for b in _BANDS}
    inside = defaultdict(list)
    for a, b in sorted(edges):
        if a in packages and b in packages and packages[a].layer == packages[b].layer:
            inside[a].append(b)
    size = {}
    for p in packages.values():
        lines = _box_lines(p, inside[p.name])
        w = max([_text_width(p.name, _TITLE_PX)] + [_text_width(t, _TEXT_PX) for t in lines])
        size[p.name] = (w + 2 * _PAD, _PAD * 2 + _TITLE_PX + 6 + len(lines) * (_TEXT_PX + 4),
                        lines)
    band_w = {b: sum(size[p.name][0] for p in by_band[b]) + _GAP * (len(by_band[b]) - 1)
              for b in _BANDS}
    width = _LABEL_COLUMN + max(band_w.values()) + 30
    x: dict[str, float] = {}

    def place(band: str) -> None:
        left = _LABEL_COLUMN + (width - _LABEL_COLUMN - 30 - band_w[band]) / 2
        for p in by_band[band]:
            x[p.name] = left
            left += size[p.name][0] + _GAP

    # Faces in tests/test_architecture.py's order; apps above where their arrows land.
    place("face")
    place("core")

    def landing(p: Package) -> float:
        below = [x[b] + size[b][0] / 2 for a, b in edges if a == p.name and b in x]
        return sum(below) / len(below) if below else float("inf")

    order = {name: i for i, name in enumerate(app_order)}
    by_band["app"].sort(key=lambda p: (landing(p), order.get(p.name, 0)))
    place("app")
    y, band_top = 40.0, {}
    for b in _BANDS:
        band_top[b] = y
        y += max((size[p.name][1] for p in by_band[b]), default=0) + _BAND_GAP
    boxes = {name: (x[name], band_top[packages[name].layer], w, h, lines)
             for name, (w, h, lines) in size.items()}
    return boxes, width, y - _BAND_GAP + 20, band_top


def _box_svg(p: Package, box: tuple[float, float, float, float, list[str]]) -> list[str]:
    bx, by, w, h, lines = box
    b = p.layer
    out = [f'<g class="package" data-package="{p.name}" data-layer="{b}">',
           f'<rect x="{bx:.1f}" y="{by:.1f}" width="{w:.1f}" height="{h:.1f}" rx="6" '
           f'fill="{_FILL[b]}" stroke="{_STROKE[b]}" stroke-width="1.5"/>',
           f'<text x="{bx + _PAD:.1f}" y="{by + _PAD + _TITLE_PX:.1f}" font-size="{_TITLE_PX}" '
           f'font-weight="bold" fill="#222">{html.escape(p.name)}</text>']
    for i, line in enumerate(lines):
        ly = by + _PAD + _TITLE_PX + 6 + (i + 1) * (_TEXT_PX + 4) - 2
        colour = "#777" if line.startswith("uses ") else "#333"
        out.append(f'<text x="{bx + _PAD:.1f}" y="{ly:.1f}" font-size="{_TEXT_PX}" '
                   f'fill="{colour}">{html.escape(line)}</text>')
    out.append("</g>")
    return out


def _arrows_svg(packages: dict[str, Package], edges: set[tuple[str, str]],
                boxes: dict[str, tuple[float, float, float, float, list[str]]]) -> list[str]:
    """An arrow per import between two layers, from the bottom of the importer to the top of the
    imported (an import against the layers would point up, in red)."""
    between = [(a, b) for a, b in sorted(edges)
               if a in boxes and b in boxes and packages[a].layer != packages[b].layer]
    leaving, arriving = defaultdict(list), defaultdict(list)
    for a, b in between:
        leaving[a].append(b)
        arriving[b].append(a)

    def spot(box: str, others: list[str], other: str) -> float:
        bx, _, w, _, _ = boxes[box]
        ordered = sorted(others, key=lambda o: boxes[o][0])
        return bx + w * (ordered.index(other) + 1) / (len(ordered) + 1)

    out = []
    for a, b in between:
        _, ay, _, ah, _ = boxes[a]
        _, by, _, bh, _ = boxes[b]
        down = _RANK[packages[a].layer] < _RANK[packages[b].layer]
        x1, x2 = spot(a, leaving[a], b), spot(b, arriving[b], a)
        y1, y2 = (ay + ah, by) if down else (ay, by + bh)
        colour, marker = ("#555", "arrow") if down else ("#c00", "arrow-up")
        out.append(f'<line class="import" data-from="{a}" data-to="{b}" '
                   f'data-direction="{"down" if down else "up"}" x1="{x1:.1f}" y1="{y1:.1f}" '
                   f'x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" stroke-width="1.3" '
                   f'marker-end="url(#{marker})"/>')
    return out


def svg(packages: dict[str, Package], edges: set[tuple[str, str]], app_order: list[str]) -> str:
    """The layers as an SVG picture: apps on top, faces, the core at the bottom."""
    boxes, width, height, band_top = _layout(packages, edges, app_order)
    marker = ('<marker id="{id}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
              'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
              'fill="{fill}"/></marker>')
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" '
        'font-family="SFMono-Regular, Menlo, Consolas, \'DejaVu Sans Mono\', monospace">',
        "<title>streamrbf: the layers and what each package imports</title>",
        "<defs>" + marker.format(id="arrow", fill="#555")
        + marker.format(id="arrow-up", fill="#c00") + "</defs>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text x="{width / 2:.0f}" y="22" text-anchor="middle" font-size="12" fill="#555">'
        "an arrow: the package at its tail imports the package at its head</text>",
    ]
    out += _arrows_svg(packages, edges, boxes)  # under the boxes
    for b in _BANDS:
        title, *more = _BAND_TITLE[b]
        t = band_top[b]
        out.append(f'<text x="16" y="{t + 16:.0f}" font-size="14" font-weight="bold" '
                   f'fill="{_STROKE[b]}">{html.escape(title)}</text>')
        out += [f'<text x="16" y="{t + 34 + 15 * i:.0f}" font-size="11" '
                f'fill="{_STROKE[b]}">{html.escape(line)}</text>' for i, line in enumerate(more)]
    for name, box in boxes.items():
        out += _box_svg(packages[name], box)
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------- the tables
def modules_table(packages: dict[str, Package], facts: dict[str, Any]) -> str:
    rows = ["| module | layer | what it holds | imports from the project |",
            "| --- | --- | --- | --- |"]
    order = {"core": 0, "face": 1, "app": 2}
    root = facts.get("streamrbf")
    if root:
        rows.append(f"| `streamrbf` | (root) | {root['doc']} Re-exports lazily: "
                    + ", ".join(f"`{n}`" for n in sorted(_lazy_names())) + " | |")
    for module, f in sorted(facts.items(), key=lambda kv: (order.get(kv[1]["layer"], 3), kv[0])):
        if f["layer"] is None:
            continue
        imports = ", ".join(f"`{i}`" for i in f["imports"])
        rows.append(f"| `{module}` | {f['layer']} | {f['doc'].replace('|', '/')} | {imports} |")
    return "\n".join(rows)


def _griffe_class(path: str):
    import griffe

    module, _, name = path.rpartition(".")
    loaded = griffe.load(module, search_paths=[str(ROOT)], docstring_parser="numpy",
                         allow_inspection=False)
    return loaded[name]


def _described(obj) -> dict[str, str]:
    """Parameter name -> its description, from a numpy docstring (griffe)."""
    out: dict[str, str] = {}
    if obj.docstring is None:
        return out
    for section in obj.docstring.parse("numpy"):
        if section.kind.value == "parameters":
            for p in section.value:
                out[p.name] = p.description
    return out


def _default(p) -> str:
    if p.kind.value == "variadic keyword":
        return ""
    if p.default is None:
        return "required"
    text = str(p.default)
    return "`" + text.replace("'", '"') + "`"


def _model_param_overrides(path: str) -> dict[str, str]:
    """Policy defaults a Beam transform overrides: constant keys written before ``**model_params``
    in a dict of its ``__init__`` (``{"reassignment_ratio": 0.0, **model_params}``)."""
    module, _, cls = path.rpartition(".")
    file = ROOT / (module.replace(".", "/") + ".py")
    tree = ast.parse(file.read_text())
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Dict) and any(k is None for k in sub.keys):
                    for k, v in zip(sub.keys, sub.values):
                        if k is None:
                            break
                        if isinstance(k, ast.Constant) and isinstance(v, ast.Constant):
                            out[k.value] = "`" + repr(v.value).replace("'", '"') + "`"
    return out


def _calls_translate_deprecated(path: str) -> bool:
    module, _, cls = path.rpartition(".")
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return any(isinstance(n, ast.Name) and n.id == "translate_deprecated"
                       for n in ast.walk(node))
    return False


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")


class _Table:
    """The parameter table being built: rows (a parameter name each) of cells (a column each)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, str]] = defaultdict(dict)
        self.meaning: dict[str, str] = {}
        self.deprecated: list[tuple[str, str, str, str]] = []


def _add_face(table: _Table, title: str, path: str, policy_fields: list, renamed: dict) -> None:
    """A face's column: its signature's parameters, and the policy's behind ``**model_params``."""
    cls = _griffe_class(path)
    doc = _described(cls)
    takes_model_params = False
    for p in cls.members["__init__"].parameters:
        if p.name == "self":
            continue
        if p.kind.value == "variadic keyword":
            takes_model_params = True
            continue
        desc = doc.get(p.name, "")
        if desc.startswith("Deprecated"):
            new = re.findall(r"``(\w+)``", desc)
            note = _docstring_sentence(desc).removeprefix("Deprecated:").strip()
            table.deprecated.append((title, p.name, new[-1] if new else "", note))
            continue
        row = SAME_CONCEPT.get(p.name, p.name)
        value = _default(p)
        table.rows[row][title] = value if row == p.name else f"`{p.name}`: {value}"
        table.meaning.setdefault(row, _docstring_sentence(desc))
    if not takes_model_params:
        return
    overrides = _model_param_overrides(path)
    for f in policy_fields:
        if title not in table.rows[f.name]:
            value = overrides.get(f.name, "`" + repr(f.default).replace("'", '"') + "`")
            table.rows[f.name][title] = value + " (†)"
    if _calls_translate_deprecated(path):
        for old, (_, new) in renamed.items():
            table.deprecated.append((title, old, new, "through `**model_params`"))


def _add_cli(table: _Table, parser: argparse.ArgumentParser) -> None:
    """The column of ``streamrbf run``: its flags, each in the row of its name."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = max(action.option_strings, key=len)
        row = SAME_CONCEPT.get(action.dest, action.dest)
        default = action.default
        if isinstance(action, (argparse._StoreFalseAction, argparse._StoreTrueAction)):
            value = " (a switch)"
        else:
            value = "" if default is None else f" `{default}`"
        table.rows[row][CLI_COLUMN] = f"`{flag}`{value}"
        help_text = re.sub(r"\s*\(default: [^)]*\)", "", (action.help or "") % {
            "default": default})
        table.meaning.setdefault(row, help_text[:1].upper() + help_text[1:])


def parameter_tables() -> tuple[str, str]:
    """The table of every parameter of every face, and the table of deprecated names."""
    sys.path.insert(0, str(ROOT))
    from streamrbf.core.policy import DEPRECATED_NAMES, Policy
    from streamrbf.jobs.run_flags import run_parser

    policy_doc = _described(_griffe_class("streamrbf.core.policy.Policy"))
    policy_fields = [f for f in dataclasses.fields(Policy) if f.name != "forgetting_per_step"]
    table = _Table()
    for f in policy_fields:  # the shared concepts first, in the policy's order
        table.meaning[f.name] = _docstring_sentence(policy_doc.get(f.name, ""))
        table.rows[f.name]
    table.rows["random_state"]
    for title, path in FACE_COLUMNS:
        _add_face(table, title, path, policy_fields, DEPRECATED_NAMES)
    _add_cli(table, run_parser())

    columns = [t for t, _ in FACE_COLUMNS] + [CLI_COLUMN]
    lines = ["| parameter | meaning | " + " | ".join(columns) + " |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for row, cells in table.rows.items():
        text = _cell(MEANING.get(row, table.meaning.get(row, "")))
        lines.append(f"| `{row}` | {text} | "
                     + " | ".join(cells.get(c, "—") for c in columns) + " |")
    text = "\n".join(lines) + (
        "\n\n(†) not in the signature: taken through `**model_params`, the learning policy's "
        "parameters (`streamrbf.core.policy.Policy`), with the policy's default unless the "
        "transform sets its own. A dash: the face has no such parameter.\n"
    )
    dep = ["| face | deprecated name | use instead | note |", "| --- | --- | --- | --- |"]
    for title, old, new, note in table.deprecated:
        dep.append(f"| {title} | `{old}` | `{new}` | {_cell(note)} |")
    return text, "\n".join(dep)


# ------------------------------------------------------------------------------------ the page
def render(page: str) -> tuple[str, str]:
    """The page with its markers filled, and the SVG picture."""
    arch = _architecture_test()
    packages, facts, edges, violations = collect(arch)
    picture = svg(packages, edges, [*arch.APPS])
    layers = f"![The layers of streamrbf: apps on top, the four faces, the core at the bottom; " \
             f"arrows point from a package to the packages it imports]({SVG})"
    if violations:
        layers += ("\n\n!!! warning \"Imports against the layers\"\n"
                   + "".join(f"    - `{v}`\n" for v in violations))
    table, deprecated = parameter_tables()
    filled = {
        "layers": layers,
        "modules": modules_table(packages, facts),
        "parameters": table + "\n### Deprecated names\n\nThey still work for one release, "
        "with a `DeprecationWarning`:\n\n" + deprecated,
    }
    for name in MARKERS:
        marker = f"<!-- generated: {name} -->"
        if marker not in page:
            raise ValueError(f"docs/{PAGE} has no {marker}")
        page = page.replace(marker, filled[name])
    return page, picture


def _build_with_mkdocs() -> None:
    import mkdocs_gen_files

    with mkdocs_gen_files.open(PAGE, "r") as f:
        page = f.read()
    text, picture = render(page)
    with mkdocs_gen_files.open(PAGE, "w") as f:
        f.write(text)
    with mkdocs_gen_files.open(SVG, "w") as f:
        f.write(picture)
    mkdocs_gen_files.set_edit_path(PAGE, PAGE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Preview the Architecture page without mkdocs.")
    parser.add_argument("--out", default="architecture-preview")
    args = parser.parse_args(argv)
    text, picture = render((Path(__file__).parent / PAGE).read_text())
    out = Path(args.out)
    (out / SVG).parent.mkdir(parents=True, exist_ok=True)
    (out / PAGE).write_text(text)
    (out / SVG).write_text(picture)
    print(f"wrote {out / PAGE} and {out / SVG}")
    return 0


if __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path
    _build_with_mkdocs()
elif __name__ == "__main__":
    raise SystemExit(main())
