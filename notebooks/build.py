"""Build the tutorial notebooks from ``notebooks/src/*.py``, execute them, measure them.

    python notebooks/build.py                 # build and execute every notebook
    python notebooks/build.py 01 04           # only notebooks whose name starts with these
    python notebooks/build.py --no-execute    # write the .ipynb files without outputs

Sources use the "percent" format: a line ``# %%`` starts a code cell, ``# %% [markdown]`` a
Markdown cell (its lines start with ``# ``) and ``# %% tags=["parameters"]`` the parameter
cell. Each notebook is executed in a fresh kernel, in its own process, with its working
directory in ``notebooks/``; the outputs are saved into the ``.ipynb`` (nbval compares them in
CI). Each runs with an empty result cache (a fresh ``VITLENS_CACHE_DIR``), and its wall time,
the kernel's CPU time and the kernel's peak memory (max RSS) are written to the table in
``notebooks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
README = HERE / "README.md"
TABLE_START, TABLE_END = "<!-- measurements:start -->", "<!-- measurements:end -->"


def parse(path: Path):
    """A percent-format source file as an nbformat v4 notebook (no outputs)."""
    import nbformat

    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(re.sub(r"^# ?", "", ln) for ln in text.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            cell = nbformat.v4.new_code_cell(text)
            if tags:
                cell.metadata["tags"] = tags
            cells.append(cell)

    for line in path.read_text().splitlines():
        if line.startswith("# %%"):
            flush()
            rest = line[4:].strip()
            kind = "markdown" if rest.startswith("[markdown]") else "code"
            found = re.search(r"tags=(\[.*\])", rest)
            tags, lines = (json.loads(found.group(1)) if found else []), []
        else:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: clean diffs
        cell["id"] = f"{path.stem[:2]}-{i:02d}"
    return nb


def execute_one(src: Path, out: Path) -> None:
    """Execute one notebook in a fresh kernel and print JSON {seconds, peak_mb}."""
    import nbformat
    from nbclient import NotebookClient

    nb = parse(src)
    start = time.perf_counter()
    # The widgets' state is saved into the notebook, so a reader with no kernel (JupyterLab
    # before a kernel starts, nbviewer) sees each widget drawn; GitHub shows the image/png
    # picture every vitlens widget puts in its output beside the widget view.
    NotebookClient(nb, timeout=900, kernel_name="python3", record_timing=False,
                   store_widget_state=True,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, out)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel, once shut down
    print(json.dumps({"seconds": round(seconds, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime),
                      "peak_mb": round(usage.ru_maxrss / 1024)}))  # Linux: ru_maxrss in KiB


def _update_readme(measured: dict[str, dict]) -> None:
    text = README.read_text()
    rows = {}
    if TABLE_START in text:
        old = text.split(TABLE_START)[1].split(TABLE_END)[0]
        for line in old.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 4 and cells[0].startswith("`"):
                rows[cells[0].strip("`")] = cells[1:]
    for name, m in measured.items():
        rows[name] = [f"{m['seconds']:.0f}", f"{m['cpu_s']}", f"{m['peak_mb']}"]
    lines = ["| notebook | wall time (s) | kernel CPU time (s) | peak memory (MB) |",
             "|---|---|---|---|"]
    lines += [f"| `{k}` | {' | '.join(v)} |" for k, v in sorted(rows.items())]
    table = "\n".join(lines)
    if TABLE_START in text:
        head, rest = text.split(TABLE_START)
        text = head + TABLE_START + "\n" + table + "\n" + TABLE_END + rest.split(TABLE_END)[1]
    else:
        text += f"\n{TABLE_START}\n{table}\n{TABLE_END}\n"
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("only", nargs="*", help="name prefixes, e.g. 01 04")
    p.add_argument("--no-execute", action="store_true")
    p.add_argument("--execute-one", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.execute_one:
        execute_one(Path(args.execute_one[0]), Path(args.execute_one[1]))
        return 0
    import nbformat

    sources = sorted(s for s in SRC.glob("*.py")
                     if not args.only or any(s.stem.startswith(o) for o in args.only))
    measured = {}
    for src in sources:
        out = HERE / f"{src.stem}.ipynb"
        if args.no_execute:
            nbformat.write(parse(src), out)
            print(f"wrote {out.name}")
            continue
        with tempfile.TemporaryDirectory(prefix="vitlens-nb-cache-") as cache:
            env = dict(os.environ, VITLENS_CACHE_DIR=cache)  # a cold cache: honest timings
            proc = subprocess.run([sys.executable, __file__, "--execute-one", str(src), str(out)],
                                  capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-6000:], file=sys.stderr)
            print(f"FAILED {src.stem}", file=sys.stderr)
            return 1
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        measured[f"{src.stem}.ipynb"] = m
        print(f"{src.stem}: {m['seconds']} s wall, {m['cpu_s']} s CPU, peak {m['peak_mb']} MB",
              flush=True)
    if measured:
        _update_readme(measured)
    return 0


if __name__ == "__main__":
    sys.exit(main())
