# %% [markdown]
# # 00 · A five-minute tour of vitlens
#
# vitlens looks inside vision models from a notebook. It computes the analyses of *Do Vision
# Transformers See Like Convolutional Neural Networks?* (Raghu et al., NeurIPS 2021) for any
# timm model, and shows them as live widgets. This tour runs offline on vitlens's bundled
# *zoo* of small models; the numbered notebooks then reproduce the paper figure by figure:
#
# | notebook | paper figures |
# |---|---|
# | [01 representation structure](01_representation_structure.ipynb) | Fig 1, 2, B.1: CKA within and across models |
# | [02 attention distance](02_attention_distance.ipynb) | Fig 3, 4, 5, C.5 |
# | [03 receptive fields](03_receptive_fields.ipynb) | Fig 6, C.1–C.4 |
# | [04 skip connections](04_skip_connections.ipynb) | Fig 7, 8, E.1, E.2 |
# | [05 localization](05_localization.ipynb) | Fig 9, 10, D.1–D.3 |
# | [06 linear probes](06_linear_probes.ipynb) | Fig 11, 13, D.4 |
# | [07 data scale and fine-tuning](07_data_scale_and_finetuning.ipynb) | Fig 12, App. G |
# | [08 MLP-Mixer](08_mlp_mixer.ipynb) | App. H |
#
# Each one ends with a table that *measures* whether our figure shows the paper's finding.

# %% tags=["parameters"]
# Parameters: the only cell you need to change.
MODELS = "zoo"  # "zoo": bundled offline models; "pretrained": the paper's timm models (internet)
IMAGES = None  # None: synthetic test images; or a folder of natural images, e.g. "imagenet/val"
N_IMAGES = 512  # the same as the numbered notebooks, so the numbers agree with theirs
BATCH_SIZE = 128

# %%
import numpy as np
import pandas as pd
from PIL import Image

import vitlens
from vitlens import findings, reproduce

reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)  # model names by role
settings = reproduce.Settings(n_images=N_IMAGES, batch_size=BATCH_SIZE, folder=IMAGES)
images = reproduce.test_images(N_IMAGES, folder=IMAGES)
print(images)

# %% [markdown]
# ## The zoo and the images
#
# Every zoo model is a real timm architecture (`VisionTransformer`, `ResNetV2`, `MlpMixer`)
# trained by vitlens's own script (`python -m vitlens.zoo.train`) on a deterministic synthetic
# dataset: 10 classes of shapes at random positions, sizes and colours, among clutter, 64×64
# pixels; the main ViT is first pretrained by masked-patch prediction on crops of photographs
# (notebook 02 says why). Each model card records the measured test accuracy and which of the
# paper's models it stands in for.

# %%
cards = []
for name in vitlens.zoo.names():
    card = vitlens.zoo.card(name)
    acc = card["test_accuracy"]  # None for the self-supervised backbone (no classifier)
    cards.append({"model": f"vitlens/{name}",
                  "test accuracy": "-" if acc is None else f"{acc:.3f}",
                  "stands in for": card.get("stands_in_for", "")})
pd.DataFrame(cards)

# %%
items = [images[i] for i in range(8)]  # synthetic images come as (image, label) pairs
tiles = [np.asarray((x[0] if isinstance(x, tuple) else x).convert("RGB").resize((64, 64)))
         for x in items]
Image.fromarray(np.concatenate(tiles, axis=1))

# %% [markdown]
# ## One call per notebook: `reproduce.run_group`
#
# Each numbered notebook runs its analyses with one call, the same code as
# `vitlens reproduce`: `reproduce.run_group("01", M, settings)` returns a `Group` with
# `.results` (result objects), `.charts` (the paper's figures) and `.findings` (measured
# verdicts). It also runs every analysis on random-init copies of the models (seeds 0, 1, 2):
# the controls that tell a finding about training from one the architecture gives for free.
# Here, notebook 01's CKA analyses:

# %%
g = reproduce.run_group("01_representation_structure", M, settings)
print(list(g.results), list(g.charts))

# %% [markdown]
# ## Similarity between layers: `vitlens.cka`
#
# The CKA of every layer of the ViT against every layer of the ResNet (unbiased minibatch CKA,
# accumulated in float64): one of notebook 01's results. The `SimilarityExplorer` shows it;
# click a cell, or choose other models and layers to recompute live.

# %%
cross = g.results["cka_vit_resnet"]
vitlens.widgets.SimilarityExplorer.from_result(cross)

# %% [markdown]
# ## Attention: `AttentionExplorer`
#
# Pick an image, a layer and a head; click a patch to see where it attends. The bars sort the
# layer's heads by mean attention distance (notebook 02).

# %%
vitlens.widgets.AttentionExplorer(M["vit"], images, layer=0)

# %% [markdown]
# ## Localization: `LocalizationExplorer`
#
# For the token you click, the CKA across images between it and every input patch
# (notebook 05). The explorers need no control, so these two runs skip it (`controls=()`).

# %%
loc = reproduce.run_group("05_localization", M, settings, controls=()).results["localization_vit"]
vitlens.widgets.LocalizationExplorer(M["vit"], results=[loc])

# %% [markdown]
# ## The residual stream: `ResidualExplorer`
#
# ‖z‖/‖f(z)‖ for every token and sub-block: how much of each token rides the skip path
# (notebook 04).

# %%
res = reproduce.run_group("04_skip_connections", M, settings, controls=()).results["residual_vit"]
vitlens.widgets.ResidualExplorer(M["vit"], result=res)

# %% [markdown]
# ## Every result is an object
#
# Results have `.to_dataframe()`, `.chart()` (Altair), `.save(path)` and
# `vitlens.load_result(path)`:

# %%
cross.to_dataframe().sort_values("cka", ascending=False).head(5).round(3)

# %% [markdown]
# ## A first finding, measured
#
# Fig 1 of the paper: a ViT's layers are uniformly similar, a ResNet's are not. Each numbered
# notebook ends with a table like this one: the statistic was fixed before running, and the
# verdict is computed, never asserted. The *control* column holds the same statistic on
# random-init copies of the same architectures (seeds 0, 1, 2; same images, same code). A
# row reads *reproduced* only when the trained models pass the rule and beat every control by
# more than the controls' spread (the *margin* column); *inconclusive* when a control passes
# too: an untrained network shows the same pattern, so it is no evidence about training.

# %%
findings.report(g.findings[:2])

# %% [markdown]
# ## Next steps
#
# * **The paper's models.** Set `MODELS = "pretrained"` in the parameter cell (with internet)
#   to use the timm checkpoints of PAPER.md (`vit_base_patch16_224.augreg_in21k`,
#   `resnetv2_50x1_bit.goog_in21k`, `mixer_b16_224.goog_in21k`, ...), and `IMAGES` to a folder
#   of natural images; a GPU helps. Or call `vitlens.load_model(name)` with any timm name.
# * **Your own models.** `reproduce.run_group("01", {"vit": "my_vit", "resnet": "my_cnn"},
#   settings)` runs one notebook's analyses, with controls, on any timm name or module.
# * **Everything at once.** `vitlens reproduce --out out` runs every analysis and writes the
#   figures (PNG and SVG) and `FINDINGS.md`.
# * **Interactive charts.** The charts here are static SVG so that they display anywhere,
#   offline. For tooltips and zoom, run `alt.renderers.enable("jupyter", offline=True)`
#   (with `import altair as alt`).
