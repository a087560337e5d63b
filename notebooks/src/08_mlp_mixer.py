# %% [markdown]
# # 08 · MLP-Mixer (App. H)
#
# MLP-Mixer replaces attention with MLPs that mix information across patches. The paper's
# appendix H applies the same CKA analyses to it:
#
# * Within the Mixer, CKA shows distinct blocks of layers.
# * Across models, the Mixer is closer to the ViT than to the ResNet.

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
from vitlens.analyses import mixer_comparison

torch.manual_seed(0)
reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
images = reproduce.test_images(N_IMAGES, folder=IMAGES)
print(M["mixer"], M["vit"], M["resnet"], "on", images)

# %% [markdown]
# ## Within the Mixer, and against the ViT and the ResNet
#
# `mixer_comparison` runs the three models over the images once and returns three CKA
# matrices (every capture point of each model, in depth order) and a summary: for each
# Mixer layer, its best match in the other model.

# %%
comp = mixer_comparison(M["mixer"], M["vit"], M["resnet"], images, layers="all",
                        batch_size=BATCH_SIZE, progress=False)
print(comp)
comp.chart(size=200)

# %%
{k: (round(v, 3) if isinstance(v, float) else v) for k, v in comp.summary.items()}

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/representation.py`):
#
# 1. Distinct blocks: split the Mixer's within-model CKA into the two contiguous groups of
#    layers that maximise the mean CKA within groups minus between them; that contrast
#    (≥ 0.10).
# 2. Closer to ViT: the mean best-match CKA of Mixer layers with the ViT minus that with the
#    ResNet (> 0).

# %%
rows = findings.mixer(comp)
findings.report(rows)
