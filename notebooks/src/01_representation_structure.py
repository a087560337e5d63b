# %% [markdown]
# # 01 · Representation structure (Fig 1, 2, B.1)
#
# *Do Vision Transformers See Like Convolutional Neural Networks?* (Raghu et al., 2021) starts
# by comparing every layer of a model with every other layer, using **CKA** (centred kernel
# alignment: 1 means two layers represent the images the same way, up to rotation and
# scale; 0 means unrelated). Their findings:
#
# * **Fig 1.** A ViT's layers are *uniform*: even its lowest and highest layers are fairly
#   similar. A ResNet has distinct *stages*, and its low and high layers are dissimilar.
# * **Fig 2, B.1.** Across models, the lower half of the ResNet matches roughly the lowest
#   quarter of the ViT's layers, its upper half the next third, and the top third of the ViT
#   matches nothing in the ResNet.
#
# This notebook computes those figures, then **measures** whether ours show the findings
# (the table at the end: a statistic chosen beforehand, its value, the same statistic on
# untrained copies of the models, the margin between them, the rule and the verdict).
#
# It runs offline on a laptop, with vitlens's bundled *zoo*: small timm models trained on a
# synthetic dataset of shapes in clutter (64×64 pixels). To use the paper's pretrained models
# instead, set `MODELS = "pretrained"` in the next cell (this downloads the timm checkpoints;
# point `IMAGES` at a folder of natural images).

# %% tags=["parameters"]
# Parameters: the only cell you need to change.
MODELS = "zoo"  # "zoo": bundled offline models; "pretrained": the paper's timm models (internet)
IMAGES = None  # None: synthetic test images; or a folder of natural images, e.g. "imagenet/val"
N_IMAGES = 512  # images per analysis (the paper used 10,240)
BATCH_SIZE = 128

# %% [markdown]
# ## One call runs the notebook's analyses
#
# `reproduce.run_group` runs this notebook's analyses (the same code as `vitlens reproduce`,
# so this notebook and `docs/FINDINGS.md` cannot disagree). It runs them four times: on the
# trained models, and on random-init copies of the same architectures with seeds 0, 1 and 2
# (the *controls*, used by the table at the end). It returns a `Group`: `g.results` (the
# result objects), `g.charts` (the paper's figures) and `g.findings` (the measured verdicts).

# %%
import vitlens
from vitlens import reproduce

reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)  # the models by role, e.g. M["vit"], M["resnet"]
settings = reproduce.Settings(n_images=N_IMAGES, batch_size=BATCH_SIZE, folder=IMAGES)
g = reproduce.run_group("01_representation_structure", M, settings)
for name, result in g.results.items():
    print(f"{name}: {result!r}")

# %% [markdown]
# ## Fig 1: CKA between every pair of layers of one model
#
# The analyses take every capture point in depth order (`layers_a="all"`): for the ViT each
# block's `norm1`, attention output, residual stream after attention, `norm2`, MLP hidden
# layer, MLP output and block output. `vitlens.cka` streams the images in batches and
# accumulates the unbiased minibatch CKA (Nguyen et al. 2021) in float64.
#
# How to read the heatmaps: rows and columns are layers, bottom-left is the input end. A ViT
# whose layers are uniform is bright almost everywhere; a ResNet with stages shows bright
# blocks along the diagonal and dark corners (low vs high layers).

# %%
g.charts["fig1_cka_within_vit"] | g.charts["fig1_cka_within_resnet"]

# %% [markdown]
# Each result is a labelled object: `.matrix`, `.layers_a`, `.to_dataframe()`, `.chart()`
# and `.save(path)`. For example, the CKA of the first and last block outputs:

# %%
vit_within, resnet_within = g.results["cka_vit"], g.results["cka_resnet"]
first, last = vit_within.layers_a[0], vit_within.layers_a[-1]
print(f"ViT    {first} vs {last}: {vit_within.value(first, last):.3f}")
first, last = resnet_within.layers_a[0], resnet_within.layers_a[-1]
print(f"ResNet {first} vs {last}: {resnet_within.value(first, last):.3f}")

# %% [markdown]
# ## Fig 2 and B.1: ViT against ResNet
#
# Rows are ViT layers (bottom to top), columns ResNet layers. The paper used two ResNets
# (R50 in Fig 2, R152 in B.1); the zoo has one. Read it column by column: where in the ViT
# does each ResNet layer find its best match? A bright band rising from bottom-left means the
# two models process the image in the same order.

# %%
g.charts["fig2_cka_vit_vs_resnet"]

# %% [markdown]
# The same figure on the first random-init control (seed 0): what the architectures alone,
# without any training, give on the same images. A finding is about training only where the
# trained figure differs from this one.

# %%
g.controls[0].charts["fig2_cka_vit_vs_resnet"]

# %% [markdown]
# ## Explore
#
# The `SimilarityExplorer` shows the same matrix; click a cell to see the pair and each
# layer's closest match in the other model, or pick other models and layers (it then
# recomputes, batch by batch).

# %%
cross = g.results["cka_vit_resnet"]
vitlens.widgets.SimilarityExplorer.from_result(cross)

# %% [markdown]
# ## The same analyses on your own models
#
# `reproduce.run_group("01", {"vit": "my_vit", "resnet": "my_resnet"}, settings)` runs this
# notebook on other models (any timm name or `nn.Module`). The calls it makes
# (`run_representation` in `vitlens/reproduce/groups.py`) are:
#
# ```python
# images = vitlens.reproduce.test_images(512)              # or a folder of images
# kw = dict(batch_size=128, progress=False)
# vit = vitlens.cka("vitlens/vit-cls", images, layers_a="all", **kw)
# resnet = vitlens.cka("vitlens/resnet", images, layers_a="all", **kw)
# cross = vitlens.cka("vitlens/vit-cls", images, "vitlens/resnet",
#                     layers_a="all", layers_b="all", **kw)
# rows = vitlens.findings.representation_structure(vit, resnet, cross)
# vitlens.findings.report(rows)                            # verdicts without a control
# ```
#
# `vitlens.findings.random_init(name, seed)` builds the random-init copy of a model, and
# `vitlens.findings.with_controls(rows, [control_rows, ...])` attaches its rows to yours.

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# The statistics, chosen before looking at any result (thresholds in
# `vitlens/findings/representation.py`):
#
# 1. Uniformity: the mean off-diagonal CKA of the ViT minus that of the ResNet.
# 2. Low vs high layers: the mean CKA between the lowest and the highest quarter of the
#    layers, ViT minus ResNet.
# 3. Ordering: for each ResNet layer, the depth of its best-matching ViT layer; Spearman's
#    rank correlation with the ResNet layer's own depth.
# 4. Top third: the best-match CKA of the ViT's lower two thirds minus its top third.
#
# **The control.** Each statistic is also computed on random-init copies of the same
# architectures (seeds 0, 1, 2), with the same images and the same code. A row reads
# *reproduced* only when the trained models pass the rule **and** beat every control by more
# than the controls' spread (the *margin* column: trained value minus the most favourable
# control, beside the spread it must exceed). It reads *inconclusive* when a control passes
# the rule too, or the margin is within the spread: an untrained network earns that pattern
# as well, so it is no evidence about training. *Not reproduced* means the trained models
# fail the rule; the note says why we think so.

# %%
g.table()
