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
settings = reproduce.Settings(n_images=N_IMAGES, batch_size=BATCH_SIZE, folder=IMAGES)
g = reproduce.run_group("07_data_scale_and_finetuning", M, settings)
for name, result in g.results.items():
    print(f"{name}: {result!r}")

# %% [markdown]
# ## Fig 12: per-block CKA with the model trained on all the data
#
# `data_scale` runs the four models over the images once and keeps block *i* vs block *i*
# (the full block-by-block matrices are in `.arrays["full"]`). There are no public
# checkpoints of the paper's data fractions, so this uses the zoo in both modes: `vit_zoo` is
# the zoo ViT trained on all the data. One line per data fraction: in the paper each line
# starts high at the low blocks and falls towards the top, and the lines with more data fall
# less.

# %%
print(g.results["data_scale"])
g.charts["fig12_data_scale"]

# %% [markdown]
# ## App. G: before vs after fine-tuning, on each domain
#
# One line per image domain: CKA of each block of the model before fine-tuning with the same
# block after it. 1 means the block was left unchanged. (With `MODELS = "pretrained"`:
# ViT-B/16 on ImageNet-21k before, and after fine-tuning on ImageNet-1k.)

# %%
print(g.results["finetune"])
g.charts["figG1_finetuning"]

# %% [markdown]
# ## The same analyses on your own models
#
# `reproduce.run_group("07", {"vit_3pct": ..., "vit_10pct": ..., "vit_30pct": ...,
# "vit_zoo": ..., "vit": ..., "vit_ft": ...}, settings)` runs this notebook on other models.
# The calls it makes (`run_scale` in `vitlens/reproduce/groups.py`) are:
#
# ```python
# from vitlens.analyses import data_scale, finetune_similarity
#
# images = vitlens.reproduce.test_images(512)              # or a folder of images
# kw = dict(batch_size=128, progress=False)
# scale = data_scale({"3%": "vitlens/vit-cls-3pct", "10%": "vitlens/vit-cls-10pct",
#                     "30%": "vitlens/vit-cls-30pct"}, "vitlens/vit-cls", images, **kw)
# domains = {"domain 0 (pretraining style)": images,
#            "domain 1 (fine-tuning style)": vitlens.reproduce.test_images(512, domain=1)}
# ft = finetune_similarity("vitlens/vit-cls", "vitlens/vit-cls-ft", domains, **kw)
# rows = vitlens.findings.data_scale_and_finetuning(scale, ft)
# ```

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/scale.py`):
#
# 1. Fig 12, low vs high: for the model with the least data, mean CKA over the lower half of
#    the blocks minus the upper half.
# 2. Fig 12, data helps high layers: the top block's CKA rises with the amount of data
#    (Spearman's rank correlation).
# 3. App. G, preserved: mean CKA over the lowest third of the blocks, on the fine-tuning
#    domain.
# 4. App. G, domains: the mean change (1 − CKA) over blocks is larger on the distant domain.
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
