# %% [markdown]
# # 03 · Effective receptive fields (Fig 6, C.1–C.4)
#
# Which input pixels does a layer's centre location depend on? The *effective receptive
# field* (Luo et al. 2017) is the absolute gradient of the layer's centre feature with
# respect to the input image, averaged over channels and over 32 images. The paper finds:
#
# * **Fig 6, C.1.** ResNet receptive fields are local and grow gradually with depth.
# * **Fig 6, C.2.** ViT receptive fields are wider from the first block and become global
#   midway through the network.
# * **Fig 6, C.4.** They still peak strongly at the centre patch: that peak comes from the
#   residual (skip) path. Measured *before* the residual add, the peak is gone.
#
# Each map below is normalised by its own maximum (darker = larger gradient).

# %% tags=["parameters"]
# Parameters: the only cell you need to change.
MODELS = "zoo"  # "zoo": bundled offline models; "pretrained": the paper's timm models (internet)
IMAGES = None  # None: synthetic test images; or a folder of natural images, e.g. "imagenet/val"
ERF_IMAGES = 32  # images averaged (as in the paper)
BATCH_SIZE = 16

# %%
import torch

import vitlens
from vitlens import findings, reproduce
from vitlens.analyses import effective_receptive_field

torch.manual_seed(0)
reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
images = reproduce.test_images(ERF_IMAGES, folder=IMAGES)
print(M["vit"], "and", M["resnet"], "on", images)

# %% [markdown]
# ## The ViT: after the residual add (top row) and before it (bottom row, C.4)
#
# `where="both"` measures every block twice: its output (after the add), and the sum of its
# attention and MLP branches without the skip path.

# %%
vit_erf = effective_receptive_field(M["vit"], images, where="both", n_images=ERF_IMAGES,
                                    batch_size=BATCH_SIZE, progress=False)
vit_erf.chart(max_side=16, size=80)

# %% [markdown]
# ## The ResNet: every residual unit, after the add

# %%
resnet_erf = effective_receptive_field(M["resnet"], images, where="after", n_images=ERF_IMAGES,
                                       batch_size=BATCH_SIZE, progress=False)
resnet_erf.chart(max_side=16, size=80)

# %% [markdown]
# ## Measuring "local", "global" and "peak"
#
# Two numbers per map (`vitlens/findings/receptive_field.py`):
#
# * **extent**: the radius of gyration of the gradient mass (its RMS distance from its
#   centroid), divided by that of a uniform map: about 0 for a point, 1 for a field spread
#   evenly over the image. For comparisons with the ViT the centre patch is left out (for
#   both models), so the residual peak does not hide how far the field reaches.
# * **centre concentration**: the mean gradient inside the centre patch over the mean
#   elsewhere.

# %%
from vitlens.findings.receptive_field import centre_box, centre_concentration, extent

box = centre_box(vit_erf.erf.shape[1:], reproduce.patch_size(M["vit"]))
for layer in vit_erf.layers[: len(vit_erf.layers) // 2]:
    after, before = vit_erf.map(layer, "after"), vit_erf.map(layer, "before")
    print(f"ViT {layer}: extent {extent(after, box):.2f}, centre concentration "
          f"{centre_concentration(after, box):.1f} after the add, "
          f"{centre_concentration(before, box):.1f} before")
for layer in resnet_erf.layers:
    print(f"ResNet {layer}: extent {extent(resnet_erf.map(layer)):.2f}")

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand:
#
# 1. ResNet grows gradually: Spearman's rank correlation of unit index and extent (≥ 0.8).
# 2. ViT wider early: extent of ViT block 0 over that of the first ResNet unit (≥ 1).
# 3. ViT global midway: extent at the ViT's middle block (≥ 0.7).
# 4. Residual peak: centre concentration after the add over before it, geometric mean over
#    blocks (≥ 2).

# %%
rows = findings.receptive_fields(vit_erf, resnet_erf,
                                 patch_size=reproduce.patch_size(M["vit"]))
findings.report(rows)
