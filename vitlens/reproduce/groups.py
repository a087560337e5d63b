"""The analyses of each notebook: the one source of the notebooks' and FINDINGS.md's numbers
(both reach them through :func:`vitlens.reproduce.run_group`).

Each ``run_*`` function takes the models by role (:func:`vitlens.reproduce.models`) and the
:class:`~vitlens.reproduce.Settings`, and returns a :class:`Group`: its result objects, its
figures (Altair charts, by file stem) and its findings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from .. import findings as F
from ..findings.attention import mixed_blocks
from ..zoo._specs import SCALE_SEEDS
from .config import SMALL_DATA_SEED_ROLES, Settings, patch_size, probe_images, test_images

__all__ = ["GROUPS", "Group"]


@dataclass
class Group:
    """The output of one notebook's analyses."""

    notebook: str
    title: str
    figures: str
    results: dict[str, Any] = field(default_factory=dict)
    charts: dict[str, Any] = field(default_factory=dict)
    findings: list[F.Finding] = field(default_factory=list)
    controls: list[Group] = field(default_factory=list)
    control_seeds: tuple[int, ...] = ()

    def table(self):
        """The findings table (control and margin beside each value), for notebooks."""
        return F.FindingsTable(self.findings)


def run_representation(M: Mapping[str, Any], s: Settings) -> Group:
    from ..api import cka

    g = Group("01_representation_structure", "Representation structure", "Fig 1, 2, B.1")
    images = test_images(s.n_images, folder=s.folder)
    kw = dict(batch_size=s.batch_size, progress=False)
    vit = cka(M["vit"], images, layers_a="all", **kw)
    resnet = cka(M["resnet"], images, layers_a="all", **kw)
    cross = cka(M["vit"], images, M["resnet"], layers_a="all", layers_b="all", **kw)
    g.results = {"cka_vit": vit, "cka_resnet": resnet, "cka_vit_resnet": cross}
    g.charts = {"fig1_cka_within_vit": vit.chart(title="Fig 1: CKA within the ViT"),
                "fig1_cka_within_resnet": resnet.chart(title="Fig 1: CKA within the ResNet"),
                "fig2_cka_vit_vs_resnet": cross.chart(title="Fig 2: ViT vs ResNet")}
    g.findings = F.representation_structure(vit, resnet, cross)
    return g


def run_attention(M: Mapping[str, Any], s: Settings) -> Group:
    from ..analyses import attention_distance, attention_locality, head_subset_cka

    g = Group("02_attention_distance", "Local and global attention heads", "Fig 3, 4, 5, C.5")
    images = test_images(s.n_images, folder=s.folder)
    kw = dict(batch_size=s.batch_size, progress=False)
    dist = attention_distance(M["vit"], images, **kw)
    small = attention_distance(M["vit_small_data"], images, **kw)
    local = attention_locality(M["vit"], images, **kw)
    small_local = attention_locality(M["vit_small_data"], images, **kw)
    matched = M.get("vit_small_data_matched")  # the same, trained for the whole step budget
    matched_local = attention_locality(matched, images, **kw) if matched is not None else None
    seed_local = {r: attention_locality(M[r], images, **kw) for r in _seed_roles(M)}
    # Fig 5 sorts the heads of the lower-half block that has the most local head (the paper's
    # block 0, where its large ViTs' local heads are)
    lower = local.local_ratio[: len(local.blocks) // 2]
    block = local.blocks[int(lower.max(1).argmax())]
    subsets = head_subset_cka(M["vit"], M["resnet"], images, block=block, head_distances=dist,
                              subset_size=1, **kw)
    g.results = {"distance_vit": dist, "distance_vit_small_data": small,
                 "locality_vit": local, "locality_vit_small_data": small_local,
                 "head_subsets": subsets}
    # an illustration beside Fig 5, not a verdict: the GAP ViT's first lower-half block that
    # holds both local and global heads, where the order of heads can show (docs/ZOO.md 3m)
    if M.get("vit_gap") is not None:
        gap_local = attention_locality(M["vit_gap"], images, **kw)
        g.results["locality_vit_gap"] = gap_local
        mixed = mixed_blocks(gap_local)
        if mixed:
            g.results["head_subsets_vit_gap"] = head_subset_cka(
                M["vit_gap"], M["resnet"], images, block=mixed[0], subset_size=1, **kw)
    if matched_local is not None:
        g.results["locality_vit_small_data_matched"] = matched_local
    g.results |= {f"locality_{r}": v for r, v in seed_local.items()}
    g.charts = {"fig3_attention_distance": dist.chart(kind="sorted"),
                "fig4_attention_distance_by_block": dist.chart(kind="blocks"),
                "fig3_local_attention": local.chart(),
                "fig4_local_attention_small_data": small_local.chart(),
                "fig5_head_subsets_vs_resnet": subsets.chart(),
                "figC5_attention_distance_small_data": small.chart(kind="sorted")}
    g.findings = F.attention_distance(dist, subsets, small, locality=local,
                                      small_data_locality=small_local,
                                      matched_locality=matched_local,
                                      seed_localities=list(seed_local.values()))
    return g


def run_receptive_fields(M: Mapping[str, Any], s: Settings) -> Group:
    from ..analyses import effective_receptive_field

    g = Group("03_receptive_fields", "Effective receptive fields", "Fig 6, C.1-C.4")
    images = test_images(max(s.erf_images, 1), folder=s.folder)
    kw = dict(n_images=s.erf_images, batch_size=min(s.batch_size, 16), progress=False)
    vit = effective_receptive_field(M["vit"], images, where="both", **kw)
    resnet = effective_receptive_field(M["resnet"], images, where="after", **kw)
    g.results = {"erf_vit": vit, "erf_resnet": resnet}
    g.charts = {"fig6_c4_erf_vit": vit.chart(max_side=16, size=80),
                "fig6_erf_resnet": resnet.chart(max_side=16, size=80)}
    g.findings = F.receptive_fields(vit, resnet, patch_size=patch_size(M["vit"]))
    return g


def _zoo_tag(model: Any) -> str | None:
    """``"vitlens/<name>"`` for a zoo name or a module of a zoo architecture (its
    ``pretrained_cfg`` tag, which random-init controls keep); ``None`` otherwise."""
    tag = (str((getattr(model, "pretrained_cfg", {}) or {}).get("tag", ""))
           if isinstance(model, nn.Module) else model)
    return tag if isinstance(tag, str) and tag.startswith("vitlens/") else None


def zoo_accuracy(name: Any) -> float | None:
    """The test accuracy on a zoo model's card (0-1); for a module of a zoo architecture (a
    random-init control), measured on 1,000 synthetic test images; ``None`` otherwise."""
    from .. import zoo

    tag = _zoo_tag(name)
    if tag is None:
        return None
    if isinstance(name, nn.Module):
        from ..zoo.train import evaluate

        return evaluate(name, n=1000)
    try:
        return float(zoo.card(tag)["test_accuracy"])
    except (FileNotFoundError, KeyError, TypeError):  # TypeError: no classifier (vit-mim)
        return None


def zoo_correct(model: Any) -> np.ndarray | None:
    """Per-image correctness (one bool per image, in order) of a zoo model, or of a module of a
    zoo architecture (a random-init control), on the test split its card records (the images
    its ``test_accuracy`` was measured on); ``None`` for models outside the zoo."""
    from .. import zoo
    from ..models import load_model
    from ..zoo.train import correct_by_image

    tag = _zoo_tag(model)
    if tag is None:
        return None
    try:
        test = zoo.card(tag)["test"]
    except (FileNotFoundError, KeyError):
        return None
    module = model if isinstance(model, nn.Module) else load_model(model)
    return correct_by_image(module, n=test["n"], seed=test["seed"], domain=test["domain"],
                            split=test["split"])


def run_skip_connections(M: Mapping[str, Any], s: Settings) -> Group:
    from ..analyses import residual_ratio, skip_removal_structure
    from ..api import cka

    g = Group("04_skip_connections", "Residual stream and skip connections",
              "Fig 7, 8, E.1, E.2")
    images = test_images(s.n_images, folder=s.folder)
    kw = dict(batch_size=s.batch_size, progress=False)
    vit = residual_ratio(M["vit"], images, **kw)
    resnet = residual_ratio(M["resnet"], images, **kw)
    noskip = skip_removal_structure(M["vit_noskip"], images, layers="all", **kw)
    normal = skip_removal_structure(cka(M["vit_noskip_ref"], images, layers_a="all", **kw))
    g.results = {"residual_vit": vit, "residual_resnet": resnet, "cka_noskip": noskip,
                 "cka_normal": normal}
    g.charts = {"fig7_residual_ratio_vit": vit.chart(kind="ratio"),
                "fig7_residual_ratio_resnet": resnet.chart(kind="ratio"),
                "figE1_residual_ratio_tokens": vit.chart(kind="tokens"),
                "figE2_cosine_vit": vit.chart(kind="cosine"),
                "fig8_cka_noskip": noskip.chart(),
                "fig8_cka_normal": normal.chart()}
    g.findings = F.skip_connections(vit, resnet, noskip, normal,
                                    accuracy=zoo_correct(M["vit_noskip_ref"]),
                                    accuracy_noskip=zoo_correct(M["vit_noskip"]))
    return g


def top_layer(model: Any) -> str:
    """The last block (or unit) of a model: the paper's "high layer"."""
    from ..models import layer_catalog, load_model

    return layer_catalog(load_model(model) if isinstance(model, str) else model).select("blocks")[-1]


def _seed_roles(M: Mapping[str, Any]) -> list[str]:
    """The small-data ViT's further training seeds that ``M`` has (Fig 4 and 13)."""
    return [r for r in SMALL_DATA_SEED_ROLES if M.get(r) is not None]


def run_localization(M: Mapping[str, Any], s: Settings) -> Group:
    from ..analyses import localization

    g = Group("05_localization", "Spatial localization", "Fig 9, 10, D.1-D.3")
    images = test_images(s.n_images, folder=s.folder)
    kw = dict(batch_size=s.batch_size, progress=False)
    res = {role: localization(M[role], images, layer=top_layer(M[role]), **kw)
           for role in ("vit", "vit_gap", "resnet")}
    g.results = {f"localization_{k}": v for k, v in res.items()}
    g.charts = {"fig9_localization_vit_cls": res["vit"].chart(),
                "fig10_localization_vit_gap": res["vit_gap"].chart(),
                "figD3_localization_resnet": res["resnet"].chart()}
    g.findings = F.localization(res["vit"], res["vit_gap"], res["resnet"])
    return g


def run_probes(M: Mapping[str, Any], s: Settings) -> Group:
    from ..analyses import linear_probe

    g = Group("06_linear_probes", "Linear probes", "Fig 11, 13, D.4")
    train, test = probe_images(s.probe_train, s.probe_test)
    kw = dict(shots=s.shots, seeds=s.seeds, batch_size=s.batch_size, l2="auto", progress=False)
    cls = linear_probe(M["vit"], train, None, test, None,
                       aggregations=("cls", "mean", "every"), **kw)
    gap = linear_probe(M["vit_gap"], train, None, test, None, aggregations=("mean", "every"), **kw)
    small = linear_probe(M["vit_small_data"], train, None, test, None, aggregations=("mean",), **kw)
    matched = M.get("vit_small_data_matched")
    matched_probe = (linear_probe(matched, train, None, test, None, aggregations=("mean",), **kw)
                     if matched is not None else None)
    seed_probes = {r: linear_probe(M[r], train, None, test, None, aggregations=("mean",), **kw)
                   for r in _seed_roles(M)}
    g.results = {"probes_vit": cls, "probes_vit_gap": gap, "probes_vit_small_data": small}
    if matched_probe is not None:
        g.results["probes_vit_small_data_matched"] = matched_probe
    g.results |= {f"probes_{r}": v for r, v in seed_probes.items()}
    g.charts = {"fig11_probes_vit_cls": cls.chart(), "fig11_probes_vit_gap": gap.chart(),
                "figD4_token_probes_vit_cls": cls.map_chart(columns=6, size=70),
                "figD4_token_probes_vit_gap": gap.map_chart(columns=6, size=70),
                "fig13_probes_by_data": data_probe_chart(
                    {"pretrained": cls, "no pretraining": small}
                    | ({"no pretraining, same steps": matched_probe} if matched_probe else {})
                    | {f"no pretraining, training seed {r.removeprefix('vit_small_data_seed')}": p
                       for r, p in seed_probes.items()})}
    g.findings = F.linear_probes(cls, gap, small, matched_probe, list(seed_probes.values()))
    return g


def data_probe_chart(probes: Mapping[str, Any], aggregation: str = "mean"):
    """Fig 13: probe accuracy by layer for several models (one line each)."""
    import altair as alt
    import pandas as pd

    df = pd.concat([p.to_dataframe().assign(model=label) for label, p in probes.items()])
    df = df[df.aggregation == aggregation]
    first = next(iter(probes.values()))
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("layer:N", sort=first.layers, title="layer"),
        y=alt.Y("accuracy:Q", title=f"{first.meta['shots']}-shot accuracy ({aggregation})",
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("model:N", sort=list(probes), title=None),
    ).properties(width=320, height=220, title="Fig 13: linear probes by pretraining data")


def run_scale(M: Mapping[str, Any], s: Settings) -> Group:
    from ..analyses import data_scale, finetune_similarity

    g = Group("07_data_scale_and_finetuning", "Dataset scale and fine-tuning", "Fig 12, App. G")
    images = test_images(s.n_images, folder=s.folder)
    kw = dict(batch_size=s.batch_size, progress=False)
    sfx = ["", *(f"_seed{k}" for k in SCALE_SEEDS[1:])]  # Fig 12 over the training seeds
    scale = data_scale({f"{p}%": [M[f"vit_{p}pct{x}"] for x in sfx] for p in (3, 10, 30, 60)},
                       [M[f"vit_zoo{x}"] for x in sfx], images, **kw)
    near, distant = "near: domain 0 (new images)", "distant: domain 1"
    ft = finetune_similarity(M["vit_ft_base"], {near: M["vit_ft_near"], distant: M["vit_ft"]},
                             {near: images, distant: test_images(s.n_images, domain=1)}, **kw)
    g.results = {"data_scale": scale, "finetune": ft}
    g.charts = {"fig12_data_scale": scale.chart(title="Fig 12: per-block CKA with the 100% model"),
                "figG1_finetuning": ft.chart(title="App. G: CKA before vs after fine-tuning")}
    g.findings = F.data_scale_and_finetuning(scale, ft, near=near, distant=distant)
    return g


def run_mixer(M: Mapping[str, Any], s: Settings) -> Group:
    from ..analyses import mixer_comparison

    g = Group("08_mlp_mixer", "MLP-Mixer", "App. H")
    images = test_images(s.n_images, folder=s.folder)
    comp = mixer_comparison(M["mixer"], M["vit"], M["resnet"], images, layers="all",
                            batch_size=s.batch_size, progress=False)
    g.results = {"mixer_comparison": comp}
    g.charts = {"figH_mixer": comp.chart(size=200)}
    g.findings = F.mixer(comp)
    return g


#: The groups in notebook order.
GROUPS: list[tuple[str, Callable[[Mapping[str, Any], Settings], Group]]] = [
    ("01_representation_structure", run_representation),
    ("02_attention_distance", run_attention),
    ("03_receptive_fields", run_receptive_fields),
    ("04_skip_connections", run_skip_connections),
    ("05_localization", run_localization),
    ("06_linear_probes", run_probes),
    ("07_data_scale_and_finetuning", run_scale),
    ("08_mlp_mixer", run_mixer),
]
