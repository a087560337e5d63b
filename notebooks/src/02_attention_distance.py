# %% [markdown]
# # 02 · Mean attention distance (Fig 3, 4, 5, C.5)
#
# How far does each attention head look? For head *h* and query patch *i*, the paper sums
# the attention weights times the pixel distance between the patch centres,
# Σⱼ aᵢⱼ·dᵢⱼ, and averages over query patches and images. Its findings:
#
# * **Fig 3, 4.** With enough pretraining data, the lowest layers mix *local* heads (small
#   distance, like a convolution) and *global* heads; higher layers are all global.
# * **Fig 5.** Sort the heads of block 0 from local to global: the more local a subset of
#   heads, the more its output resembles the early layers of a ResNet (CKA falls as the heads
#   become more global).
# * **C.5.** Large ViTs trained on little data (ImageNet only) learn no local heads in their
#   lowest layers; a small ViT (B/32) still does.
#
# The zoo's ViT has 6 blocks of 3 heads on an 8×8 grid of 8-pixel patches (64×64 images), so
# distances run from 0 to about 40 pixels. Set `MODELS = "pretrained"` for ViT-B/16 (12
# heads, 16-pixel patches on 224×224 images).

# %% tags=["parameters"]
# Parameters: the only cell you need to change.
MODELS = "zoo"  # "zoo": bundled offline models; "pretrained": the paper's timm models (internet)
IMAGES = None  # None: synthetic test images; or a folder of natural images, e.g. "imagenet/val"
N_IMAGES = 512  # images per analysis (the paper used 5,000)
BATCH_SIZE = 128

# %%
import torch

import vitlens
from vitlens import findings, reproduce
from vitlens.analyses import attention_distance, head_subset_cka

torch.manual_seed(0)
reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
images = reproduce.test_images(N_IMAGES, folder=IMAGES)
print(M["vit"], "on", images)

# %% [markdown]
# ## Fig 3 and 4: the mean distance of every head
#
# `attention_distance` recomputes each block's attention probabilities in a hook (timm's
# fused attention never materialises them), reduces them to float64 sums on the spot and
# excludes the CLS token, as the paper does.

# %%
dist = attention_distance(M["vit"], images, batch_size=BATCH_SIZE, progress=False)
print(dist)
dist.to_dataframe().pivot(index="block", columns="rank", values="distance").round(1)

# %% [markdown]
# Fig 3 plots each head against its rank within the block (lowest and highest blocks);
# Fig 4 shows every head of every block.

# %%
(dist.chart(kind="sorted") | dist.chart(kind="blocks")).resolve_scale(color="independent")

# %% [markdown]
# ## Fig 5: local heads look like a ResNet
#
# The heads of block 0 are sorted by distance and taken one at a time from the most local to
# the most global (with 12 heads one would take subsets); each subset's output is compared by
# CKA with the ResNet's stem and first units.

# %%
subsets = head_subset_cka(M["vit"], M["resnet"], images, block=0, head_distances=dist,
                          subset_size=1, batch_size=BATCH_SIZE, progress=False)
subsets.chart()

# %% [markdown]
# ## C.5: less pretraining data
#
# The same ViT architecture trained on 3% of the data (timm: ViT-B/16 trained on
# ImageNet-1k instead of ImageNet-21k).

# %%
small = attention_distance(M["vit_small_data"], images, batch_size=BATCH_SIZE, progress=False)
small.chart(kind="sorted", title=f"Mean attention distance: {M['vit_small_data']}")

# %% [markdown]
# ## Explore
#
# The `AttentionExplorer` shows one image's attention: pick a layer and a head, click a
# query patch, and see the rollout and the heads sorted by distance.

# %%
vitlens.widgets.AttentionExplorer(M["vit"], images, layer=0)

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (thresholds in `vitlens/findings/attention.py`):
#
# 1. Depth trend: Spearman's rank correlation between block index and the block's mean
#    head distance (≥ 0.5).
# 2. Local and global heads low, all global high: the spread (max − min) of head distances
#    in the lowest block over that in the highest block (≥ 1.5).
# 3. Fig 5: Spearman's rank correlation between a head subset's distance and its CKA with the
#    early ResNet layers (≤ −0.8: a monotone fall).
# 4. C.5: the most local head of block 0, small-data model minus full-data model (≥ 1 px).

# %%
rows = findings.attention_distance(dist, subsets, small)
findings.report(rows)
