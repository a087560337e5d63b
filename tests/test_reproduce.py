"""`vitlens reproduce --quick` end to end on the offline zoo: every figure, result and table."""

from __future__ import annotations

import json
import re

import pytest

from vitlens import load_result
from vitlens.cli import main
from vitlens.reproduce import GROUPS

# Every figure the notebooks reproduce, by notebook (PNG and SVG each).
EXPECTED_FIGURES = {
    "01_representation_structure": ["fig1_cka_within_vit", "fig1_cka_within_resnet",
                                    "fig2_cka_vit_vs_resnet"],
    "02_attention_distance": ["fig3_attention_distance", "fig4_attention_distance_by_block",
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
    "02_attention_distance": ["Fig 3, 4", "Fig 3", "Fig 5", "C.5"],
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


def test_groups_follow_the_notebooks():
    assert [nb for nb, _ in GROUPS] == list(EXPECTED_FIGURES)


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
        assert isinstance(r["reproduced"], bool) and r["rule"] and r["statistic"]
    assert got == EXPECTED_ROWS
    md = (quick_run / "FINDINGS.md").read_text()
    n_ok = sum(r["reproduced"] for r in rows)
    assert f"**{n_ok} of {len(rows)} findings reproduced.**" in md
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
    for role in ("vit_noskip", "vit_3pct", "vit_10pct", "vit_30pct", "vit_zoo"):
        assert p[role] == z[role]
    with pytest.raises(ValueError, match="choose 'zoo'"):
        models("imagenet")


def _doc_tables() -> dict[str, list[tuple[str, bool]]]:
    """docs/FINDINGS.md: per notebook, (value, reproduced) of each row."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "FINDINGS.md").read_text()
    out: dict[str, list[tuple[str, bool]]] = {}
    nb = None
    for line in text.splitlines():
        m = re.match(r"Notebook: `notebooks/(\w+)\.ipynb`", line)
        if line.startswith("## "):
            nb = None
        elif m:
            nb = m.group(1)
            out[nb] = []
        elif nb and line.startswith("| ") and not line.startswith("| figure"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[nb].append((cells[3], cells[5] == "**yes**"))
    return out


def test_committed_notebooks_agree_with_docs_findings():
    """The findings printed by each executed notebook are those of docs/FINDINGS.md (the same
    analyses, settings and verdicts); rebuild both after a change (see notebooks/README.md)."""
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parents[1]
    tables = _doc_tables()
    assert list(tables) == list(EXPECTED_ROWS)
    for nb, rows in tables.items():
        cells = nbformat.read(root / "notebooks" / f"{nb}.ipynb", 4).cells
        lines = [ln for o in cells[-1].get("outputs", []) if o.get("output_type") == "stream"
                 for ln in o["text"].splitlines() if ln.strip()]
        assert len(lines) == len(rows) == len(EXPECTED_ROWS[nb]), nb
        for line, (value, ok) in zip(lines, rows, strict=True):
            assert f"= {value} (rule" in line, (nb, line, value)
            assert (": reproduced." in line) == ok, (nb, line)


def test_committed_notebooks_are_executed_in_order():
    """Every notebook is committed executed, top to bottom, ending with its findings table."""
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parents[1] / "notebooks"
    names = sorted(p.stem for p in root.glob("*.ipynb"))
    assert names == ["00_tour", *EXPECTED_ROWS]
    for name in names:
        nb = nbformat.read(root / f"{name}.ipynb", 4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), name
        assert "parameters" in code[0].metadata.get("tags", []), name
        assert 'MODELS = "zoo"' in code[0].source, name
        last = code[-1]
        assert "findings." in last.source and last.outputs, name
        html = [o for o in last.outputs if "text/html" in o.get("data", {})]
        assert html and "reproduced?" in html[0]["data"]["text/html"], name
