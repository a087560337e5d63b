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
# (the table at the end: a statistic chosen beforehand, its value, the rule and the verdict).
#
# It runs offline in about a minute on a laptop, with vitlens's bundled *zoo*: small timm
# models trained on a synthetic dataset of shapes in clutter (64×64 pixels). To use the
# paper's pretrained models instead, set `MODELS = "pretrained"` in the next cell (this
# downloads the timm checkpoints; point `IMAGES` at a folder of natural images).

# %% tags=["parameters"]
# Parameters: the only cell you need to change.
MODELS = "zoo"  # "zoo": bundled offline models; "pretrained": the paper's timm models (internet)
IMAGES = None  # None: synthetic test images; or a folder of natural images, e.g. "imagenet/val"
N_IMAGES = 512  # images per analysis (the paper used 10,240)
BATCH_SIZE = 128

# %%
import torch

import vitlens
from vitlens import findings, reproduce

torch.manual_seed(0)
reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)  # the models by role, e.g. M["vit"], M["resnet"]
images = reproduce.test_images(N_IMAGES, folder=IMAGES)
print(M["vit"], "vs", M["resnet"], "on", images)

# %% [markdown]
# ## Fig 1: CKA between every pair of layers of one model
#
# `layers_a="all"` takes every capture point in depth order: for the ViT each block's
# `norm1`, attention output, residual stream after attention, `norm2`, MLP hidden layer, MLP
# output and block output. `vitlens.cka` streams the images in batches and accumulates the
# unbiased minibatch CKA (Nguyen et al. 2021) in float64.

# %%
vit_within = vitlens.cka(M["vit"], images, layers_a="all", batch_size=BATCH_SIZE, progress=False)
vit_within

# %%
resnet_within = vitlens.cka(M["resnet"], images, layers_a="all", batch_size=BATCH_SIZE,
                            progress=False)
resnet_within

# %% [markdown]
# Each result is a labelled object: `.matrix`, `.layers_a`, `.to_dataframe()`, `.chart()`
# and `.save(path)`. For example, the CKA of the ViT's first and last block outputs:

# %%
print(f"ViT    blocks.0 vs blocks.5: {vit_within.value('blocks.0', 'blocks.5'):.3f}")
first, last = resnet_within.layers_a[0], resnet_within.layers_a[-1]
print(f"ResNet {first} vs {last}: {resnet_within.value(first, last):.3f}")

# %% [markdown]
# ## Fig 2 and B.1: ViT against ResNet
#
# Rows are ViT layers (bottom to top), columns ResNet layers. The paper used two ResNets
# (R50 in Fig 2, R152 in B.1); the zoo has one.

# %%
cross = vitlens.cka(M["vit"], images, M["resnet"], layers_a="all", layers_b="all",
                    batch_size=BATCH_SIZE, progress=False)
cross

# %% [markdown]
# ## Explore
#
# The `SimilarityExplorer` shows the same matrix; click a cell to see the pair and each
# layer's closest match in the other model, or pick other models and layers (it then
# recomputes, batch by batch).

# %%
vitlens.widgets.SimilarityExplorer.from_result(cross)

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# The statistics, chosen before looking at any result (thresholds in
# `vitlens/findings/representation.py`):
#
# 1. Uniformity: the mean off-diagonal CKA of the ViT minus that of the ResNet (> 0.05).
# 2. Low vs high layers: the mean CKA between the lowest and the highest quarter of the
#    layers, ViT minus ResNet (> 0.05).
# 3. Ordering: for each ResNet layer, the depth of its best-matching ViT layer; Spearman's
#    rank correlation with the ResNet layer's own depth (≥ 0.5).
# 4. Top third: the best-match CKA of the ViT's lower two thirds minus its top third (> 0.05).

# %%
rows = findings.representation_structure(vit_within, resnet_within, cross)
findings.report(rows)
