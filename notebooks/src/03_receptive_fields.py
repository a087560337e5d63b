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
N_IMAGES = 512  # images of the other analyses (unused here)
ERF_IMAGES = 32  # images averaged for each map (as in the paper)
BATCH_SIZE = 128  # the gradients run in batches of at most 16

# %% [markdown]
# ## One call runs the notebook's analyses
#
# `reproduce.run_group` runs this notebook's analyses (the same code as `vitlens reproduce`)
# on the trained models and on random-init copies of them (seeds 0, 1, 2: the controls of
# the table at the end), and returns the results, the figures and the findings.

# %%
from vitlens import reproduce

reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
settings = reproduce.Settings(n_images=N_IMAGES, batch_size=BATCH_SIZE, folder=IMAGES,
                              erf_images=ERF_IMAGES)
g = reproduce.run_group("03_receptive_fields", M, settings)
for name, result in g.results.items():
    print(f"{name}: {result!r}")

# %% [markdown]
# ## The ViT: after the residual add (top row) and before it (bottom row, C.4)
#
# The ViT is measured with `where="both"`: every block twice, at its output (after the add),
# and at the sum of its attention and MLP branches without the skip path. Read each column
# as one block, left to right from the input: a dark dot in the middle is a field that
# depends on the centre patch alone; a grey spread is a field that reaches the whole image.

# %%
g.charts["fig6_c4_erf_vit"]

# %% [markdown]
# ## The ResNet: every residual unit, after the add
#
# A convolution sees a small window, and each unit widens it a little: the dark region should
# grow step by step.

# %%
g.charts["fig6_erf_resnet"]

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

vit_erf, resnet_erf = g.results["erf_vit"], g.results["erf_resnet"]
box = centre_box(vit_erf.erf.shape[1:], reproduce.patch_size(M["vit"]))
for layer in vit_erf.layers[: len(vit_erf.layers) // 2]:
    after, before = vit_erf.map(layer, "after"), vit_erf.map(layer, "before")
    print(f"ViT {layer}: extent {extent(after, box):.2f}, centre concentration "
          f"{centre_concentration(after, box):.1f} after the add, "
          f"{centre_concentration(before, box):.1f} before")
for layer in resnet_erf.layers:
    print(f"ResNet {layer}: extent {extent(resnet_erf.map(layer)):.2f}")

# %% [markdown]
# ## The same analyses on your own models
#
# `reproduce.run_group("03", {"vit": ..., "resnet": ...}, settings)` runs this notebook on
# other models. The calls it makes (`run_receptive_fields` in `vitlens/reproduce/groups.py`)
# are:
#
# ```python
# from vitlens.analyses import effective_receptive_field
#
# images = vitlens.reproduce.test_images(32)               # or a folder of images
# kw = dict(n_images=32, batch_size=16, progress=False)
# vit = effective_receptive_field("vitlens/vit-cls", images, where="both", **kw)
# resnet = effective_receptive_field("vitlens/resnet", images, where="after", **kw)
# rows = vitlens.findings.receptive_fields(
#     vit, resnet, patch_size=vitlens.reproduce.patch_size("vitlens/vit-cls"))
# ```

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/receptive_field.py`):
#
# 1. ResNet grows gradually: Spearman's rank correlation of unit index and extent.
# 2. ViT wider early: extent of ViT block 0 over that of the first ResNet unit.
# 3. ViT global midway: extent at the ViT's middle block.
# 4. Residual peak: centre concentration after the add over before it, geometric mean over
#    blocks.
#
# **The control.** Each statistic is also computed on random-init copies of the same
# architectures (seeds 0, 1, 2), with the same images and the same code. A row reads
# *reproduced* only when the trained models pass the rule **and** beat every control by more
# than the controls' spread (the *margin* column: trained value minus the most favourable
# control, beside the spread it must exceed). It reads *inconclusive* when a control passes
# the rule too, or the margin is within the spread: receptive fields are partly a property of
# the architecture (a convolution is local and a skip path peaks at the centre before any
# training), and such a row is no evidence about training. *Not reproduced* means the trained
# models fail the rule; the note says why we think so.

# %%
g.table()
