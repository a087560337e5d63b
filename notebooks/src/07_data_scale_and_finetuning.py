# %% [markdown]
# # 07 · Dataset scale and fine-tuning (Fig 12, App. G)
#
# **Fig 12.** The paper trains ViTs on 3%, 10% and 30% of JFT-300M and compares each block by
# CKA with the same block of the model trained on all of it. Low layers stay similar even at
# small scale; high layers need more data to match (more so for larger models).
#
# **App. G.** Comparing a model before and after fine-tuning, block by block: the lower
# blocks are preserved; the change is small on natural images and larger on a distant domain.
#
# The zoo has ViTs trained on 3%, 10% and 30% of its synthetic training set (same number of
# steps), and `vit-cls-ft`: `vit-cls` fine-tuned on a *second rendering style* of the
# synthetic shapes (domain 1: grey checkerboards, hollow outlines, pixel noise), our stand-in
# for a distant domain. We compare before and after on images of both styles.

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
from vitlens.analyses import data_scale, finetune_similarity

torch.manual_seed(0)
reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
images = reproduce.test_images(N_IMAGES, folder=IMAGES)
print(M["vit"], "on", images)

# %% [markdown]
# ## Fig 12: per-block CKA with the model trained on all the data
#
# `data_scale` runs the four models over the images once and keeps block *i* vs block *i*
# (the full block-by-block matrices are in `scale.arrays["full"]`). There are no public
# checkpoints of the paper's data fractions, so this uses the zoo in both modes: `vit_zoo` is
# the zoo ViT trained on all the data.

# %%
scale = data_scale({"3%": M["vit_3pct"], "10%": M["vit_10pct"], "30%": M["vit_30pct"]},
                   M["vit_zoo"], images, batch_size=BATCH_SIZE, progress=False)
print(scale)
scale.chart(title="Fig 12: per-block CKA with the 100% model")

# %% [markdown]
# ## App. G: before vs after fine-tuning, on each domain
#
# (With `MODELS = "pretrained"`: ViT-B/16 on ImageNet-21k before, and after fine-tuning on
# ImageNet-1k.)

# %%
domains = {"domain 0 (pretraining style)": images,
           "domain 1 (fine-tuning style)": reproduce.test_images(N_IMAGES, domain=1)}
ft = finetune_similarity(M["vit"], M["vit_ft"], domains, batch_size=BATCH_SIZE, progress=False)
print(ft)
ft.chart(title="App. G: CKA before vs after fine-tuning")

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/scale.py`):
#
# 1. Fig 12, low vs high: for the 3% model, mean CKA over the lower half of the blocks minus
#    the upper half (≥ 0.05).
# 2. Fig 12, data helps high layers: Spearman's rank correlation between the amount of data
#    and the top block's CKA (≥ 0.5).
# 3. App. G, preserved: mean CKA over the lowest third of the blocks, on the fine-tuning
#    domain (≥ 0.8).
# 4. App. G, domains: the mean change (1 − CKA) over blocks is larger on the distant domain
#    (by > 0.01).

# %%
rows = findings.data_scale_and_finetuning(scale, ft)
findings.report(rows)
