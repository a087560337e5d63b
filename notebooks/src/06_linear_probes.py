# %% [markdown]
# # 06 · Linear probes (Fig 11, 13, D.4)
#
# How much class information can a *linear* classifier read from each layer, given only 10
# labelled images per class? The paper fits closed-form regularised least squares (targets
# in {−1, 1}) on the CLS token, on single spatial tokens and on the mean over tokens. Its
# findings:
#
# * **Fig 11.** In a ViT trained with a CLS token, the spatial tokens stay poor: the class is
#   read from CLS. In a ViT trained with global average pooling (GAP), every token becomes
#   about as good as the pooled representation at the top: tokens become interchangeable.
#   Each model does best with its own aggregation.
# * **Fig 13.** Large ViTs pretrained on more data have much stronger intermediate layers.
# * **D.4** shows the accuracy of probes on every single token, as a map over the grid.

# %% tags=["parameters"]
# Parameters: the only cell you need to change.
MODELS = "zoo"  # "zoo": bundled offline models; "pretrained": the paper's timm models (internet)
PROBE_TRAIN = 500  # pool of labelled training images (10 per class are drawn per seed)
PROBE_TEST = 1000  # labelled test images
SHOTS = 10
SEEDS = (0, 1, 2)
BATCH_SIZE = 128

# %%
import torch

import vitlens
from vitlens import findings, reproduce
from vitlens.analyses import linear_probe

torch.manual_seed(0)
reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
# Probes need labels: the synthetic validation and test splits (never used for training).
train, test = reproduce.probe_images(PROBE_TRAIN, PROBE_TEST)
print(train, test)

# %% [markdown]
# ## Fig 11: the CLS ViT and the GAP ViT
#
# `linear_probe` captures the features once, fits one probe per layer, aggregation and seed,
# and scores them all in one pass over the test images. `"every"` probes each spatial token
# separately (the accuracy shown is their average).

# %%
kw = dict(shots=SHOTS, seeds=SEEDS, batch_size=BATCH_SIZE, progress=False)
probe_cls = linear_probe(M["vit"], train, None, test, None,
                         aggregations=("cls", "mean", "every"), **kw)
probe_gap = linear_probe(M["vit_gap"], train, None, test, None,
                         aggregations=("mean", "every"), **kw)
probe_cls.chart() | probe_gap.chart()

# %%
probe_cls.to_dataframe().pivot(index="layer", columns="aggregation", values="accuracy").round(3)

# %% [markdown]
# ## D.4: one probe per token

# %%
probe_cls.map_chart(columns=6, size=70) & probe_gap.map_chart(columns=6, size=70)

# %% [markdown]
# ## Fig 13: more pretraining data
#
# The same architecture trained on 3% of the data (timm: ImageNet-1k instead of 21k), probed
# on the mean over tokens.

# %%
probe_small = linear_probe(M["vit_small_data"], train, None, test, None,
                           aggregations=("mean",), **kw)
reproduce.data_probe_chart({"100% data": probe_cls, "3% data": probe_small})

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/probes.py`), at the top layer unless noted:
#
# 1. CLS model: CLS accuracy minus single-token accuracy (≥ 0.10).
# 2. GAP model: mean-pooled minus single-token accuracy (≤ 0.05: interchangeable tokens).
# 3. Own aggregation: CLS model, CLS minus mean-pooled accuracy (> 0).
# 4. Fig 13: mean-pooled accuracy at the middle block, full-data minus small-data (≥ 0.05).

# %%
rows = findings.linear_probes(probe_cls, probe_gap, probe_small)
findings.report(rows)
