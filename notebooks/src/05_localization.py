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

# %%
import torch

import vitlens
from vitlens import findings, reproduce
from vitlens.analyses import localization

torch.manual_seed(0)
reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
images = reproduce.test_images(N_IMAGES, folder=IMAGES)
print(M["vit"], M["vit_gap"], M["resnet"], "on", images)

# %% [markdown]
# ## Fig 9: the CLS ViT's last block
#
# Nine tokens spread over the grid; the red square is each token's own patch.
# `reproduce.top_layer` is the model's last block (`blocks.5` in the zoo's ViTs).

# %%
loc_cls = localization(M["vit"], images, layer=reproduce.top_layer(M["vit"]),
                       batch_size=BATCH_SIZE, progress=False)
print(loc_cls)
loc_cls.chart()

# %% [markdown]
# ## Fig 10: the GAP ViT, and the ResNet's last unit

# %%
loc_gap = localization(M["vit_gap"], images, layer=reproduce.top_layer(M["vit_gap"]),
                       batch_size=BATCH_SIZE, progress=False)
print(loc_gap)
loc_gap.chart()

# %%
loc_resnet = localization(M["resnet"], images, layer=reproduce.top_layer(M["resnet"]),
                          batch_size=BATCH_SIZE, progress=False)
print(loc_resnet)
loc_resnet.chart()

# %% [markdown]
# ## Explore
#
# Click any token of the grid to see its map over the input patches.

# %%
vitlens.widgets.LocalizationExplorer(M["vit"], results=[loc_cls])

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# The statistic is the share of interior tokens whose map peaks at their own patch (border
# tokens are left out, as their maps are cut off). Thresholds (`vitlens/findings/localization.py`):
# at least 0.5 for the CLS ViT; at least 0.25 lower for the GAP ViT and the ResNet.

# %%
rows = findings.localization(loc_cls, loc_gap, loc_resnet)
findings.report(rows)
