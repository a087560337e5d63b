# %% [markdown]
# # 04 · The residual stream and skip connections (Fig 7, 8, E.1, E.2)
#
# Every ViT block adds two *branches* to a residual stream z: z ← z + f(z), first attention,
# then the MLP. The ratio ‖z‖ / ‖f(z)‖ says how much of each token is carried along the skip
# path rather than rewritten by the branch. The paper finds:
#
# * **Fig 7.** The ratio is much higher in a ViT than in a ResNet: the skip path dominates.
# * **Fig 7, E.1.** A phase change: in the first half of the blocks the CLS token (token 0)
#   rides the skip path while the spatial tokens change through the branches; in the second
#   half this reverses.
# * **E.2** shows the cosine between the stream and the branch.
# * **Fig 8.** Train a ViT *without* the skip connections of one middle block i: its
#   within-model CKA splits into two groups, the layers before block i and those after it,
#   and accuracy drops (about 4% in the paper).

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
from vitlens.analyses import residual_ratio, skip_removal_structure

torch.manual_seed(0)
reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
images = reproduce.test_images(N_IMAGES, folder=IMAGES)
print(M["vit"], "and", M["resnet"], "on", images)

# %% [markdown]
# ## Fig 7: ‖z‖ / ‖f(z)‖ per block
#
# For the ViT, solid lines are the CLS token and dashed lines the mean over spatial tokens;
# for the ResNet a "token" is one position of the feature map.

# %%
vit_res = residual_ratio(M["vit"], images, batch_size=BATCH_SIZE, progress=False)
resnet_res = residual_ratio(M["resnet"], images, batch_size=BATCH_SIZE, progress=False)
(vit_res.chart(kind="ratio") | resnet_res.chart(kind="ratio")).resolve_scale(y="shared")

# %% [markdown]
# ## E.1: every token (token 0 is CLS) and E.2: the cosine of stream and branch

# %%
vit_res.chart(kind="tokens") & vit_res.chart(kind="cosine")

# %% [markdown]
# The `ResidualExplorer` shows the same per-token table; click a cell to follow one token
# through the blocks.

# %%
vitlens.widgets.ResidualExplorer(M["vit"], result=vit_res)

# %% [markdown]
# ## Fig 8: a ViT without the skip connections of one block
#
# `vit_noskip` was trained exactly like `vit` but with both residual adds of one middle block
# removed (the paper trained its own; there is no public checkpoint, so this uses the zoo in
# both modes). `skip_removal_structure` computes the within-model CKA and finds the best
# split into two contiguous groups of layers (the split that maximises mean CKA within the
# groups minus mean CKA between them). The normal ViT of the same architecture (`vit_zoo`) is
# split the same way for comparison.

# %%
noskip = skip_removal_structure(M["vit_noskip"], images, layers="all", batch_size=BATCH_SIZE,
                                progress=False)
normal = skip_removal_structure(vitlens.cka(M["vit_zoo"], images, layers_a="all",
                                            batch_size=BATCH_SIZE, progress=False))
print(noskip)
print(normal)
noskip.chart(size=300) | normal.chart(size=300)

# %% [markdown]
# The accuracy cost, from the zoo's model cards (each card records the test accuracy measured
# when the model was trained; `None` for models outside the zoo):

# %%
acc = {role: reproduce.zoo_accuracy(M[role]) for role in ("vit_zoo", "vit_noskip")}
print({role: None if a is None else f"{100 * a:.1f}%" for role, a in acc.items()})

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/skip.py`):
#
# 1. ViT vs ResNet: geometric-mean ratio over sub-blocks (spatial tokens), ViT over ResNet (≥ 2).
# 2. Phase change, first half: mean log₁₀(ratio of CLS / ratio of spatial tokens) > 0.
# 3. Phase change, second half: the same < 0.
# 4. Fig 8 split: the best split lies within one block of the block without skips.
# 5. Fig 8 contrast: the split is sharper than the normal ViT's by ≥ 0.05 CKA.
# 6. Fig 8 accuracy: removing the skips costs between 0.5 and 15 percentage points.

# %%
rows = findings.skip_connections(vit_res, resnet_res, noskip, normal, accuracy=acc["vit_zoo"],
                                 accuracy_noskip=acc["vit_noskip"])
findings.report(rows)
