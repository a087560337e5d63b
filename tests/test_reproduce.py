"""`vitlens reproduce --quick` end to end on the offline zoo: every figure, result and table."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import textwrap
from pathlib import Path

import pytest

from vitlens import analyses, load_result
from vitlens.cli import main
from vitlens.reproduce import CONTROL_SEEDS, GROUPS

VERDICTS = {"reproduced", "inconclusive", "not reproduced"}

# Every figure the notebooks reproduce, by notebook (PNG and SVG each).
EXPECTED_FIGURES = {
    "01_representation_structure": ["fig1_cka_within_vit", "fig1_cka_within_resnet",
                                    "fig2_cka_vit_vs_resnet"],
    "02_attention_distance": ["fig3_attention_distance", "fig4_attention_distance_by_block",
                              "fig3_local_attention", "fig4_local_attention_small_data",
                              "fig5_head_subsets_vs_resnet",
                              "figC5_attention_distance_small_data"],
    "03_receptive_fields": ["fig6_c4_erf_vit", "fig6_erf_resnet"],
    "04_skip_connections": ["fig7_residual_ratio_vit", "fig7_residual_ratio_resnet",
                            "figE1_residual_ratio_tokens", "figE2_cosine_vit", "fig8_cka_noskip",
                            "fig8_cka_normal"],
    "05_localization": ["fig9_localization_vit_cls", "fig10_localization_vit_gap",
                        "figD3_localization_resnet"],
    "06_linear_probes": ["fig11_probes_vit_cls", "fig11_probes_vit_gap",
                         "figD4_token_probes_vit_cls", "figD4_token_probes_vit_gap",
                         "fig13_probes_by_data"],
    "07_data_scale_and_finetuning": ["fig12_data_scale", "figG1_finetuning"],
    "08_mlp_mixer": ["figH_mixer"],
}
# The figure labels of the findings rows of each notebook, in order.
EXPECTED_ROWS = {
    "01_representation_structure": ["Fig 1", "Fig 1", "Fig 2, B.1", "Fig 2, B.1"],
    "02_attention_distance": ["Fig 3", "Fig 3, 4", "Fig 4, C.5", "Fig 5"],
    "03_receptive_fields": ["Fig 6, C.1", "Fig 6, C.2", "Fig 6, C.2", "Fig 6, C.4"],
    "04_skip_connections": ["Fig 7", "Fig 7, E.1", "Fig 7, E.1", "Fig 8", "Fig 8", "Fig 8"],
    "05_localization": ["Fig 9, D.1", "Fig 10, D.2", "Fig 10, D.3"],
    "06_linear_probes": ["Fig 11", "Fig 11, D.4", "Fig 11", "Fig 13"],
    "07_data_scale_and_finetuning": ["Fig 12", "Fig 12", "App. G", "App. G"],
    "08_mlp_mixer": ["App. H", "App. H"],
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    with pytest.MonkeyPatch.context() as mp:  # an empty result cache, like every test
        mp.setenv("VITLENS_CACHE_DIR", str(tmp_path_factory.mktemp("reproduce_cache")))
        assert main(["reproduce", "--out", str(out), "--quick", "--no-progress"]) == 0
    return out


ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks" / "src"
# Called in a notebook source, these would be a second copy of the analyses: the numbers must
# come from reproduce.run_group (groups.py), the one source that `vitlens reproduce` runs too.
FORBIDDEN_CALLS = (
    {n for n in analyses.__all__ if n[0].islower()}
    | {"cka", "cka_stream", "with_controls", "control_models", "random_init"}
    | {"representation_structure", "attention_distance", "receptive_fields", "skip_connections",
       "localization", "linear_probes", "data_scale_and_finetuning", "mixer"})


def _build_module():
    spec = importlib.util.spec_from_file_location("notebook_build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(name: str):
    """A notebook source's cells, as notebooks/build.py builds them."""
    return _build_module().parse(SOURCES / f"{name}.py").cells


def _calls(cells) -> list[ast.Call]:
    return [node for c in cells if c.cell_type == "code"
            for node in ast.walk(ast.parse(c.source)) if isinstance(node, ast.Call)]


def _called_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


def _run_group_calls(cells) -> list[ast.Call]:
    return [c for c in _calls(cells) if isinstance(c.func, ast.Attribute)
            and c.func.attr == "run_group" and getattr(c.func.value, "id", "") == "reproduce"]


def _settings(cells):
    """Run the parameter cell and the cell's ``settings = reproduce.Settings(...)`` line."""
    from vitlens import reproduce

    ns = {"reproduce": reproduce}
    exec(cells[0].source if cells[0].cell_type == "code" else "", ns)  # noqa: S102
    for c in cells:
        if c.cell_type != "code":
            continue
        for node in ast.parse(c.source).body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] \
                    == ["settings"]:
                exec(ast.unparse(node), ns)  # noqa: S102
                return ns["settings"]
    return None


def test_groups_follow_the_notebooks():
    assert [nb for nb, _ in GROUPS] == list(EXPECTED_FIGURES)
    assert sorted(p.stem for p in SOURCES.glob("*.py")) == ["00_tour", *EXPECTED_FIGURES]


@pytest.mark.parametrize("name", list(EXPECTED_FIGURES))
def test_notebook_takes_its_numbers_from_run_group(name):
    """One source: each notebook calls reproduce.run_group for its own group, once, with the
    trained models, the settings of its parameter cell and the default controls, and calls no
    analysis itself; its default parameters are those of `vitlens reproduce` (FULL)."""
    from vitlens import reproduce

    cells = [c for c in _cells(name) if c.source.strip()]
    code = [c for c in cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), name
    params = {t.id for node in ast.parse(code[0].source).body if isinstance(node, ast.Assign)
              for t in node.targets}
    assert {"MODELS", "IMAGES", "N_IMAGES", "BATCH_SIZE"} <= params, name
    runs = _run_group_calls(cells)
    assert len(runs) == 1, (name, [ast.unparse(r) for r in runs])
    call = runs[0]
    assert [ast.unparse(a) for a in call.args] == [repr(name), "M", "settings"], name
    assert not call.keywords, name  # the controls of `vitlens reproduce`: CONTROL_SEEDS
    assert _settings(code) == reproduce.FULL, name
    own = sorted({_called_name(c) for c in _calls(cells)} & FORBIDDEN_CALLS)
    assert not own, f"{name} calls {own} itself; take the result from g.results instead"
    # it ends with the findings table, after the text that says how the control is read
    assert code[-1].source.strip() == "g.table()", name
    text = cells[-2].source
    assert cells[-2].cell_type == "markdown", name
    for words in ("random-init", "seeds 0, 1, 2", "same images", "*reproduced*",
                  "*inconclusive*", "spread", "margin"):
        assert words in text, (name, words)


@pytest.mark.parametrize(("name", "run"), GROUPS)
def test_notebook_shows_every_figure_and_names_the_calls(name, run):
    """Every chart of the group is shown, and the markdown names every analysis function the
    group calls (the equivalent library calls, for readers with their own models)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(run)))
    called = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
              and node.module in ("analyses", "api") for a in node.names}
    called |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
               and getattr(n.value, "id", "") == "F"}
    charts = [k.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
              and ast.unparse(node.targets[0]) == "g.charts" and isinstance(node.value, ast.Dict)
              for k in node.value.keys]
    assert called and sorted(charts) == sorted(EXPECTED_FIGURES[name]), name
    cells = _cells(name)
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    markdown = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    for stem in charts:
        assert f'g.charts["{stem}"]' in code, (name, stem)
    for fn in called:
        assert f"{fn}(" in markdown, (name, fn)
    assert f"`{run.__name__}`" in markdown, name


def test_tour_uses_the_groups_too():
    cells = _cells("00_tour")
    groups = {ast.literal_eval(c.args[0]) for c in _run_group_calls(cells)}
    assert groups and groups <= {nb for nb, _ in GROUPS}
    own = sorted({_called_name(c) for c in _calls(cells)} & FORBIDDEN_CALLS)
    assert not own, own
    from vitlens import reproduce

    assert _settings([c for c in cells if c.cell_type == "code"]) == reproduce.FULL


def test_every_figure_is_written_as_png_and_svg(quick_run):
    for stems in EXPECTED_FIGURES.values():
        for stem in stems:
            png = quick_run / "figures" / f"{stem}.png"
            svg = quick_run / "figures" / f"{stem}.svg"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
            assert svg.read_text().lstrip().startswith("<svg"), svg
    written = {p.stem for p in (quick_run / "figures").glob("*.png")}
    assert written == {s for stems in EXPECTED_FIGURES.values() for s in stems}


def test_findings_table_has_the_expected_rows(quick_run):
    rows = json.loads((quick_run / "findings.json").read_text())
    got: dict[str, list[str]] = {}
    for r in rows:
        got.setdefault(r["notebook"], []).append(r["figure"])
        assert r["verdict"] in VERDICTS and r["rule"] and r["statistic"]
        assert len(r["control"]) == len(CONTROL_SEEDS)  # every row carries its control
    assert got == EXPECTED_ROWS
    md = (quick_run / "FINDINGS.md").read_text()
    n = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    assert (f"**{n['reproduced']} of {len(rows)} findings reproduced beyond their control; "
            f"{n['inconclusive']} inconclusive; {n['not reproduced']} not reproduced.**"
            ) in " ".join(md.split())
    met = [r for r in rows if any(r["control_passes"])]
    behind = sum(r["margin"] is not None and r["margin"] <= 0 for r in met)
    assert (f"A random-init control meets the paper's rule in {len(met)} of the {len(rows)} "
            f"rows (at or beyond the trained value in {behind} of them)") in " ".join(md.split())
    assert f"at most {len(rows) - len(met)} rows can reproduce." in " ".join(md.split())
    assert all(r["verdict"] != "reproduced" for r in met)  # what the sentence claims
    for nb in EXPECTED_ROWS:
        assert f"`notebooks/{nb}.ipynb`" in md
    assert md.count("| figure | paper finding |") == len(EXPECTED_ROWS)
    assert "quick mode" in md


def test_results_load_back(quick_run):
    files = sorted((quick_run / "results").rglob("*.npz"))
    assert {f.parent.name for f in files} == set(EXPECTED_ROWS)
    vit = load_result(quick_run / "results" / "01_representation_structure" / "cka_vit.npz")
    assert vit.matrix.shape[0] == vit.matrix.shape[1] == len(vit.layers_a) > 30
    assert vit.meta["n_images"] == 32


def test_static_svg_charts_are_compact_and_offline():
    import altair as alt
    import numpy as np

    from vitlens import SimilarityResult
    from vitlens.reproduce.display import compact_svg, static_charts

    assert compact_svg('<path d="M1.23456,7.5h0.999999"/>') == '<path d="M1.23,7.5h0.99"/>'
    names = [f"l{i}" for i in range(7)]
    sim = SimilarityResult(np.random.default_rng(0).random((7, 7)), names, names)
    before = alt.renderers.active
    try:
        static_charts()
        bundle = sim.chart()._repr_mimebundle_()
    finally:
        alt.renderers.enable(before)
    svg = bundle["image/svg+xml"]
    assert svg.startswith("<svg") and "<script" not in svg and "cdn" not in svg
    assert svg.count("<path") >= 49 and svg.count("aria-label") < 5  # no label per cell
    assert not re.search(r"\d\.\d{3}", svg)


def test_parameter_cell_switches_every_role():
    from vitlens import zoo
    from vitlens.reproduce import ROLES, models

    z, p = models("zoo"), models("pretrained")
    assert set(z) == set(p) == set(ROLES)
    assert all(name.startswith("vitlens/") and name[8:] in zoo.names() for name in z.values())
    # the paper's public checkpoints (PAPER.md), never the bare BiT names
    assert p["vit"] == "vit_base_patch16_224.augreg_in21k"
    assert p["resnet"] == "resnetv2_50x1_bit.goog_in21k"
    assert p["mixer"] == "mixer_b16_224.goog_in21k"
    # models without a public counterpart stay on the zoo, with a zoo reference
    for role in ("vit_noskip", "vit_3pct", "vit_10pct", "vit_30pct", "vit_60pct", "vit_zoo",
                 "vit_ft_base", "vit_ft_near", "vit_ft"):
        assert p[role] == z[role]
    with pytest.raises(ValueError, match="choose 'zoo'"):
        models("imagenet")


def _doc_tables() -> dict[str, list[str]]:
    """docs/FINDINGS.md: per notebook, the lines of its findings table."""
    text = (ROOT / "docs" / "FINDINGS.md").read_text()
    out: dict[str, list[str]] = {}
    nb = None
    for line in text.splitlines():
        m = re.match(r"Notebook: `notebooks/(\w+)\.ipynb`", line)
        if line.startswith("## "):
            nb = None
        elif m:
            nb = m.group(1)
            out[nb] = []
        elif nb and line.startswith("|"):
            out[nb].append(line)
    return out


def _committed(name: str):
    import nbformat

    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", 4)


def _text(output) -> str:
    text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def test_committed_notebooks_are_built_from_their_sources():
    """A change is made once, in notebooks/src: the committed notebooks hold exactly the cells
    that notebooks/build.py makes of their sources (rebuild and execute after an edit)."""
    for src in sorted(SOURCES.glob("*.py")):
        built = [(c.cell_type, c.source) for c in _build_module().parse(src).cells]
        committed = [(c.cell_type, c.source) for c in _committed(src.stem).cells]
        assert committed == built, f"{src.stem}.ipynb is stale: run python notebooks/build.py"


def test_committed_notebooks_agree_with_docs_findings():
    """The findings table each executed notebook shows (trained value, control, margin,
    verdict) is the table of docs/FINDINGS.md for it: both come from reproduce.run_group with
    the same settings. Rebuild both after a change (see notebooks/README.md)."""
    tables = _doc_tables()
    assert list(tables) == list(EXPECTED_ROWS)
    for nb, doc in tables.items():
        outputs = _committed(nb).cells[-1].get("outputs", [])
        shown = [ln for o in outputs if o.get("output_type") == "execute_result"
                 for ln in _text(o).splitlines() if ln.startswith("|")]
        assert len(doc) == len(EXPECTED_ROWS[nb]) + 2, nb  # header, rule, one line per row
        assert shown == doc, nb


def test_committed_notebooks_are_executed_in_order():
    """Every notebook is committed executed, top to bottom, ending with its findings table,
    controls and margins included."""
    root = ROOT / "notebooks"
    names = sorted(p.stem for p in root.glob("*.ipynb"))
    assert names == ["00_tour", *EXPECTED_ROWS]
    for name in names:
        nb = _committed(name)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), name
        assert "parameters" in code[0].metadata.get("tags", []), name
        assert 'MODELS = "zoo"' in code[0].source, name
        last = code[-1]
        assert ("findings.report" if name == "00_tour" else "g.table()") in last.source, name
        html = [o for o in last.outputs if "text/html" in o.get("data", {})]
        assert html, name
        table = "".join(html[0]["data"]["text/html"])
        for column in ("control (random init)", "margin", "verdict"):
            assert column in table, (name, column)
