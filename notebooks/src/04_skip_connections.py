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

# %% [markdown]
# ## One call runs the notebook's analyses
#
# `reproduce.run_group` runs this notebook's analyses (the same code as `vitlens reproduce`)
# on the trained models and on random-init copies of them (seeds 0, 1, 2: the controls of
# the table at the end), and returns the results, the figures and the findings.

# %%
import vitlens
from vitlens import reproduce

reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
settings = reproduce.Settings(n_images=N_IMAGES, batch_size=BATCH_SIZE, folder=IMAGES)
g = reproduce.run_group("04_skip_connections", M, settings)
for name, result in g.results.items():
    print(f"{name}: {result!r}")

# %% [markdown]
# ## Fig 7: ‖z‖ / ‖f(z)‖ per block
#
# For the ViT, solid lines are the CLS token and dashed lines the mean over spatial tokens;
# for the ResNet a "token" is one position of the feature map. Both charts share the y axis:
# the higher the line, the less each sub-block changes the stream.

# %%
(g.charts["fig7_residual_ratio_vit"]
 | g.charts["fig7_residual_ratio_resnet"]).resolve_scale(y="shared")

# %% [markdown]
# ## E.1: every token (token 0 is CLS) and E.2: the cosine of stream and branch
#
# E.1 is a heatmap of the ratio (log scale) with one column per token (the leftmost is CLS)
# and one row per sub-block: the phase change of Fig 7 shows as the CLS column standing out
# in the lower sub-blocks and the spatial columns in the upper ones. E.2: a cosine near 0
# means the branch adds something new to the stream; near ±1, it rescales the stream.

# %%
g.charts["figE1_residual_ratio_tokens"] & g.charts["figE2_cosine_vit"]

# %% [markdown]
# The `ResidualExplorer` shows the same per-token table; click a cell to follow one token
# through the blocks.

# %%
vit_res = g.results["residual_vit"]
vitlens.widgets.ResidualExplorer(M["vit"], result=vit_res)

# %% [markdown]
# ## Fig 8: a ViT without the skip connections of one block
#
# `vit_noskip` has both residual adds of one middle block removed and was trained from scratch
# on the shapes for 7,000 steps; `vit_noskip_ref` is the normal ViT trained with exactly that
# recipe (`vitlens/vit-sup-7k`). At `vit-sup`'s 2,000 steps the no-skip ViT had not yet left
# its loss plateau (train accuracy 0.34), so the comparison is made where both have fit their
# training set (docs/ZOO.md 3l). The paper trained its own; there is no public checkpoint, so
# this uses the zoo in both modes. `skip_removal_structure` computes the within-model CKA and finds the best
# split into two contiguous groups of layers (the split that maximises mean CKA within the
# groups minus mean CKA between them). The normal ViT (`vit_noskip_ref`) is split the same
# way for comparison. The white lines mark the best split: in the paper's
# figure the no-skip ViT falls into two bright squares with dark off-diagonal blocks (layers
# before block i are unlike those after it); the normal ViT shows no such break.

# %%
print(g.results["cka_noskip"])
print(g.results["cka_normal"])
g.charts["fig8_cka_noskip"] | g.charts["fig8_cka_normal"]

# %% [markdown]
# The test accuracies on the zoo's model cards (each card records the accuracy measured when
# the model was trained; `None` for models outside the zoo). The findings table classifies the
# card's test images again with both models, image by image, so that the cost comes with its
# interval.

# %%
acc = {role: reproduce.zoo_accuracy(M[role]) for role in ("vit_noskip_ref", "vit_noskip")}
print({role: None if a is None else f"{100 * a:.1f}%" for role, a in acc.items()})

# %% [markdown]
# ## The same analyses on your own models
#
# `reproduce.run_group("04", {"vit": ..., "resnet": ..., "vit_noskip": ...,
# "vit_noskip_ref": ...},
# settings)` runs this notebook on other models. The calls it makes (`run_skip_connections`
# in `vitlens/reproduce/groups.py`) are:
#
# ```python
# from vitlens.analyses import residual_ratio, skip_removal_structure
#
# images = vitlens.reproduce.test_images(512)              # or a folder of images
# kw = dict(batch_size=128, progress=False)
# vit = residual_ratio("vitlens/vit-cls", images, **kw)
# resnet = residual_ratio("vitlens/resnet", images, **kw)
# noskip = skip_removal_structure("vitlens/vit-noskip-3", images, layers="all", **kw)
# normal = skip_removal_structure(vitlens.cka("vitlens/vit-sup-7k", images, layers_a="all",
#                                              **kw))
# rows = vitlens.findings.skip_connections(
#     vit, resnet, noskip, normal,
#     accuracy=vitlens.reproduce.zoo_correct("vitlens/vit-sup-7k"),
#     accuracy_noskip=vitlens.reproduce.zoo_correct("vitlens/vit-noskip-3"))
# ```

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/skip.py`):
#
# 1. ViT vs ResNet: geometric-mean ratio over sub-blocks (spatial tokens), ViT over ResNet.
# 2. Phase change, first half: mean log₁₀(ratio of CLS / ratio of spatial tokens) > 0.
# 3. Phase change, second half: the same < 0.
# 4. Fig 8 split: the best split lies within one block of the block without skips.
# 5. Fig 8 contrast: the split is sharper than the normal ViT's.
# 6. Fig 8 accuracy: removing the skips costs some accuracy, but not most of it, judged on
#    the paired 95% interval over the test images that both models classify (the 5,000 of
#    the cards; lower end at least 0.5 points, upper end at most 15). The controls classify
#    the same images.
#
# **The control.** Each statistic is also computed on random-init copies of the same
# architectures (seeds 0, 1, 2), with the same images and the same code. A row reads
# *reproduced* only when the trained models pass the rule **and** beat every control by more
# than the controls' spread (the *margin* column: trained value minus the most favourable
# control, beside the spread it must exceed). It reads *inconclusive* when a control passes
# the rule too, or the margin is within the spread: an untrained network earns it as well.
# *Not reproduced* means the trained models fail the rule; the note says why we think so.

# %%
g.table()
