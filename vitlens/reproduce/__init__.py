"""``vitlens reproduce``: every analysis of the paper on the offline zoo, in notebook order.

    vitlens reproduce --out DIR [--quick] [--no-progress]

writes, under ``DIR``:

- ``results/<notebook>/<name>.npz``: every result object (``vitlens.load_result`` reads them);
- ``figures/<stem>.png`` and ``.svg``: every figure, through vl-convert (no browser);
- ``findings.json`` and ``FINDINGS.md``: the measured verdicts of
  :mod:`vitlens.findings`, one table per notebook.

The notebooks in ``notebooks/`` call :func:`run_group` with the same :class:`Settings`
(:data:`FULL`); ``quick=True`` uses :data:`QUICK` (fewer images) for a smoke run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..findings.controls import CONTROL_SEEDS
from .config import (
    FULL,
    PRETRAINED_MODELS,
    QUICK,
    ROLES,
    ZOO_MODELS,
    Settings,
    models,
    patch_size,
    probe_images,
    test_images,
)
from .display import static_charts
from .groups import GROUPS, Group, data_probe_chart, top_layer, zoo_accuracy, zoo_correct
from .markdown import findings_markdown

__all__ = ["CONTROL_SEEDS", "FULL", "GROUPS", "PRETRAINED_MODELS", "QUICK", "ROLES", "ZOO_MODELS", "Group",
           "Settings", "data_probe_chart", "findings_markdown", "models", "patch_size",
           "probe_images", "reproduce", "run_group", "run_groups", "static_charts", "test_images", "top_layer",
           "write_outputs", "zoo_accuracy", "zoo_correct"]


def run_group(notebook: str, model_names: Mapping[str, Any] | None = None,
              settings: Settings = FULL, *, controls: Sequence[int] | None = CONTROL_SEEDS
              ) -> Group:
    """Run one notebook's analyses on the trained models and on their random-init controls.

    This is the one source of every notebook's numbers: the notebooks call it, and so does
    ``vitlens reproduce``.

    Args:
        notebook: A group name such as ``"02_attention_distance"``, or its number ``"02"``.
        model_names: Models by role (default: the offline zoo, :func:`models`).
        settings: Image counts and batch size.
        controls: Seeds of the random-init controls (``None`` or ``()``: no control; every
            verdict then reads "rule met, no control" or "not reproduced").

    Returns:
        The :class:`Group`, its findings carrying the control values, and the control runs'
        groups in ``group.controls``.
    """
    import torch

    from ..findings import with_controls
    from ..findings.controls import control_models

    names = {nb: fn for nb, fn in GROUPS}
    key = next((nb for nb in names if nb == notebook or nb[:2] == str(notebook)), None)
    if key is None:
        msg = f"unknown notebook group {notebook!r}; choose from {list(names)}"
        raise ValueError(msg)
    M = dict(model_names) if model_names is not None else models("zoo")
    torch.manual_seed(0)
    group = names[key](M, settings)
    runs = []
    for seed in controls or ():
        torch.manual_seed(0)
        runs.append(names[key](control_models(M, seed), settings))
    group.findings = with_controls(group.findings, [c.findings for c in runs])
    group.controls = runs
    group.control_seeds = tuple(controls or ())
    return group


def run_groups(model_names: Mapping[str, Any] | None = None, settings: Settings = FULL, *,
               only: list[str] | None = None, progress: bool = True,
               controls: Sequence[int] | None = CONTROL_SEEDS) -> list[Group]:
    """Run the analyses of every notebook (or those named in ``only``), in notebook order,
    each on the trained models and on its random-init controls (see :func:`run_group`).

    Args:
        model_names: Models by role (default: the offline zoo, :func:`models`).
        settings: Image counts and batch size.
        only: Notebook names (e.g. ``["01_representation_structure"]``) to run.
        progress: One progress bar over the groups.
        controls: Seeds of the random-init controls.
    """
    from tqdm.auto import tqdm

    chosen = [nb for nb, _ in GROUPS if only is None or nb in only]
    unknown = sorted(set(only or []) - {nb for nb, _ in GROUPS})
    if unknown:
        msg = f"unknown notebook groups {unknown}; choose from {[nb for nb, _ in GROUPS]}"
        raise ValueError(msg)
    out = []
    with tqdm(total=len(chosen), disable=not progress, unit="group", desc="reproduce") as bar:
        for nb in chosen:
            bar.set_postfix_str(nb)
            out.append(run_group(nb, model_names, settings, controls=controls))
            bar.update(1)
    return out


def write_outputs(groups: list[Group], out: str | os.PathLike, *, settings: Settings = FULL,
                  progress: bool = True, quick: bool = False,
                  elapsed: float | None = None, overwrite: bool = False) -> Path:
    """Save every result (.npz), figure (PNG and SVG), ``findings.json`` and ``FINDINGS.md``.

    Every file goes through :class:`vitlens.outputs.OutputFolder`: it replaces only files
    vitlens wrote there and that are unchanged since (``overwrite=True``: any), and records
    each one in the folder's manifest as it is written.

    Returns:
        The path of ``FINDINGS.md``.

    Raises:
        ValueError: a file in the way that vitlens may not replace (checked before any
            file is written).
    """
    import altair as alt
    from tqdm.auto import tqdm

    from ..outputs import REPRODUCE_OUTPUTS, OutputFolder

    folder = OutputFolder(out, overwrite)
    folder.check(REPRODUCE_OUTPUTS)
    figures: dict[str, list[str]] = {}
    total = sum(len(g.charts) for g in groups)
    with tqdm(total=total, disable=not progress, unit="fig", desc="figures") as bar, \
            alt.data_transformers.disable_max_rows():  # the ERF maps have many cells
        for g in groups:
            for name, result in g.results.items():
                folder.save_result(result, f"results/{g.notebook}/{name}.npz")
            figures[g.notebook] = []
            for stem, chart in g.charts.items():
                folder.save_chart(chart, f"figures/{stem}")
                figures[g.notebook].append(stem)
                bar.update(1)
    rows = [dict(r.to_dict(), notebook=g.notebook) for g in groups for r in g.findings]
    folder.write_text("findings.json", json.dumps(rows, indent=1) + "\n")
    return folder.write_text("FINDINGS.md", findings_markdown(
        groups, settings=settings, figures=figures, quick=quick, elapsed=elapsed))


def reproduce(out: str | os.PathLike, *, quick: bool = False, progress: bool = True,
              model_names: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Run every analysis on the offline zoo and write results, figures and FINDINGS.md.

    Args:
        out: Output folder (created if needed).
        quick: Fewer images (:data:`QUICK`), for a smoke run; the verdicts are then noisier.
        progress: Show progress bars.
        model_names: Models by role, to override the zoo (see :func:`models`).
        overwrite: Replace outputs in ``out`` that vitlens did not write (see
            :mod:`vitlens.outputs`); by default such files stop the run before any work.

    Returns:
        The path of ``FINDINGS.md``.
    """
    from .. import distributed
    from ..outputs import REPRODUCE_OUTPUTS, check_out

    check_out(Path(out), REPRODUCE_OUTPUTS, overwrite)  # before any work; nothing written yet

    settings = QUICK if quick else FULL
    start = time.perf_counter()
    groups = run_groups(model_names, settings, progress=progress)
    if not distributed.is_main():  # under torchrun, rank 0 writes
        return Path(out) / "FINDINGS.md"
    path = write_outputs(groups, out, settings=settings, progress=progress, quick=quick,
                         elapsed=time.perf_counter() - start, overwrite=overwrite)
    n_ok = sum(r.verdict == "reproduced" for g in groups for r in g.findings)
    n_all = sum(len(g.findings) for g in groups)
    print(f"{n_ok} of {n_all} findings reproduced beyond their random-init control; wrote {path}")
    return path
