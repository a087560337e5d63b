# %% [markdown]
# # 05 · Spatial localization (Fig 9, 10, D.1–D.3)
#
# Does the token at grid position *p* of a high layer still describe *its own* image patch?
# The paper computes, across images, the CKA between that token's representation and the raw
# input patch at every grid position *q*, and plots the heatmap over *q*. Its findings:
#
# * **Fig 9, D.1.** Interior tokens of a ViT trained with a CLS token peak at their own patch:
#   the ViT preserves spatial information up to its highest layers.
# * **Fig 10, D.2, D.3.** A ViT trained with global average pooling (GAP) instead of a CLS
#   token is much less localized, and so is a ResNet (where a "token" is all channels at one
#   position of the feature map).

# %% tags=["parameters"]
# Parameters: the only cell you need to change.
MODELS = "zoo"  # "zoo": bundled offline models; "pretrained": the paper's timm models (internet)
IMAGES = None  # None: synthetic test images; or a folder of natural images, e.g. "imagenet/val"
N_IMAGES = 512
BATCH_SIZE = 128

# %% [markdown]
# ## One call runs the notebook's analyses
#
# `reproduce.run_group` runs this notebook's analyses (the same code as `vitlens reproduce`)
# on the trained models and on random-init copies of them (seeds 0, 1, 2: the controls of
# the table at the end), and returns the results, the figures and the findings. Each model is
# measured at its last block (`reproduce.top_layer`: `blocks.5` in the zoo's ViTs).

# %%
import vitlens
from vitlens import reproduce

reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
settings = reproduce.Settings(n_images=N_IMAGES, batch_size=BATCH_SIZE, folder=IMAGES)
g = reproduce.run_group("05_localization", M, settings)
for name, result in g.results.items():
    print(f"{name}: {result!r}")

# %% [markdown]
# ## Fig 9: the CLS ViT's last block
#
# Nine tokens spread over the grid, one heatmap each; the red square is the token's own
# patch. A localized token has its brightest cell inside the red square and dark cells
# elsewhere; a token that has mixed in the whole image is evenly lit.

# %%
g.charts["fig9_localization_vit_cls"]

# %% [markdown]
# ## Fig 10: the GAP ViT, and the ResNet's last unit

# %%
g.charts["fig10_localization_vit_gap"]

# %%
g.charts["figD3_localization_resnet"]

# %% [markdown]
# ## The same map on an untrained ViT
#
# The first random-init control (seed 0), at the same layer. Untrained ViTs keep much of
# each patch's embedding in its own token, so their maps can peak at the own patch too (the
# share of tokens peaking there was 1.0 for a random-init zoo ViT): this is why the findings
# measure *how much* a token prefers its own patch (a contrast), not only whether it peaks
# there.

# %%
g.controls[0].charts["fig9_localization_vit_cls"]

# %% [markdown]
# ## Explore
#
# Click any token of the grid to see its map over the input patches.

# %%
loc_cls = g.results["localization_vit"]
vitlens.widgets.LocalizationExplorer(M["vit"], results=[loc_cls])

# %% [markdown]
# ## The same analyses on your own models
#
# `reproduce.run_group("05", {"vit": ..., "vit_gap": ..., "resnet": ...}, settings)` runs this
# notebook on other models. The calls it makes (`run_localization` in
# `vitlens/reproduce/groups.py`) are:
#
# ```python
# from vitlens.analyses import localization
#
# images = vitlens.reproduce.test_images(512)              # or a folder of images
# kw = dict(batch_size=128, progress=False)
# res = {name: localization(name, images, layer=vitlens.reproduce.top_layer(name), **kw)
#        for name in ("vitlens/vit-cls", "vitlens/vit-gap", "vitlens/resnet")}
# rows = vitlens.findings.localization(*res.values())      # CLS ViT, GAP ViT, ResNet
# ```

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# The statistic is the **localization contrast**: for each interior token (border tokens are
# left out, as their maps are cut off), the CKA with its own patch minus the mean CKA with
# every other patch, averaged over the interior tokens (thresholds in
# `vitlens/findings/localization.py`). Fig 9 asks for a clear contrast in the CLS ViT;
# Fig 10 asks for the GAP ViT's and the ResNet's to be clearly lower.
#
# **The control.** Each statistic is also computed on random-init copies of the same
# architectures (seeds 0, 1, 2), with the same images and the same code. A row reads
# *reproduced* only when the trained models pass the rule **and** beat every control by more
# than the controls' spread (the *margin* column: trained value minus the most favourable
# control, beside the spread it must exceed). It reads *inconclusive* when a control passes
# the rule too, or the margin is within the spread: an untrained network earns it as well.
# *Not reproduced* means the trained models fail the rule; the note says why we think so.

# %%
g.table()
