"""Draw README's overview figure, docs/figures/cka_overview.png, from the bundled zoo.

    python tools/make_overview_figure.py

Minibatch CKA within the zoo ViT (every capture point) and between the ViT and the ResNet, on
512 synthetic test images. Re-run it after retraining the zoo.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import altair as alt

    import vitlens
    from vitlens.figures import save_chart

    images = vitlens.datasets.synthetic("test", 512)
    vit = vitlens.load_model("vitlens/vit-cls")
    resnet = vitlens.load_model("vitlens/resnet")
    within = vitlens.cka(vit, images, layers_a="all", batch_size=128)
    between = vitlens.cka(vit, images, resnet, layers_a="all", layers_b="all", batch_size=128)
    chart = alt.hconcat(
        within.chart(title=f"CKA within vit-cls (all {len(within.layers_a)} capture points)"),
        between.chart(title="CKA: vit-cls vs resnet"),
    ).resolve_scale(color="independent")
    save_chart(chart, ROOT / "docs" / "figures" / "cka_overview", formats=("png",), scale=1.6)
    print("wrote docs/figures/cka_overview.png")


if __name__ == "__main__":
    main()
