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
# The zoo has ViTs trained on 3%, 10%, 30% and 60% of its synthetic training set (same number
# of steps), each with three training seeds (seed 0, and the `-seed1`/`-seed2` copies: another
# initialisation and data order on the same images), and two fine-tunes of `vit-cls` with the same recipe: `vit-cls-ft-near` on new
# images of the style it was trained on (the near domain, as ImageNet is for a JFT model), and
# `vit-cls-ft` on a *second rendering style* of the synthetic shapes (domain 1: grey
# checkerboards, hollow outlines, pixel noise), our stand-in for a distant domain. Each
# fine-tune is compared with `vit-cls` on images of its own domain.

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
# `data_scale` runs the fifteen models (five per training seed) over the images once and
# keeps block *i* vs block *i*, each seed's fractions against that seed's full-data ViT (the
# full block-by-block matrices are in `.arrays["full"]`). There are no public checkpoints of
# the paper's data fractions, so this uses the zoo in both modes: `vit_zoo` is the zoo ViT
# trained on all the data. One line per data fraction, the mean over the three seeds; the
# faint points are the seeds' own values, so you see how much a training seed moves a line.
# In the paper each line starts high at the low blocks and falls towards the top, and the
# lines with more data fall less.

# %%
print(g.results["data_scale"])
g.charts["fig12_data_scale"]

# %% [markdown]
# ## App. G: before vs after fine-tuning, on each domain
#
# One line per fine-tune: CKA of each block of the model before fine-tuning with the same
# block after it, on images of the fine-tuning domain. 1 means the block was left unchanged.
# (timm has no distant-domain fine-tune of the paper's ViT, so `MODELS = "pretrained"` keeps
# the zoo's three models here.)

# %%
print(g.results["finetune"])
g.charts["figG1_finetuning"]

# %% [markdown]
# ## The same analyses on your own models
#
# `reproduce.run_group("07", {"vit_3pct": ..., "vit_10pct": ..., "vit_30pct": ...,
# "vit_60pct": ..., "vit_zoo": ..., "vit_3pct_seed1": ..., ..., "vit_zoo_seed2": ...,
# "vit_ft_base": ..., "vit_ft_near": ..., "vit_ft": ...}, settings)` runs this notebook on
# other models (`reproduce.ROLES` lists every role).
# The calls it makes (`run_scale` in `vitlens/reproduce/groups.py`) are:
#
# ```python
# from vitlens.analyses import data_scale, finetune_similarity
#
# images = vitlens.reproduce.test_images(512)              # or a folder of images
# kw = dict(batch_size=128, progress=False)
# seeds = ["", "-seed1", "-seed2"]  # each seed's fractions against its own full-data ViT
# scale = data_scale({f"{p}%": [f"vitlens/vit-cls-{p}pct{s}" for s in seeds]
#                     for p in (3, 10, 30, 60)},
#                    [f"vitlens/vit-sup{s}" for s in seeds], images, **kw)
# near, distant = "near: domain 0 (new images)", "distant: domain 1"
# ft = finetune_similarity("vitlens/vit-cls",
#                          {near: "vitlens/vit-cls-ft-near", distant: "vitlens/vit-cls-ft"},
#                          {near: images, distant: vitlens.reproduce.test_images(512, domain=1)},
#                          **kw)
# rows = vitlens.findings.data_scale_and_finetuning(scale, ft, near=near, distant=distant)
# ```

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/scale.py`):
#
# 1. Fig 12, low vs high: for the model with the least data, mean CKA over the lower half of
#    the blocks minus the upper half (mean over the training seeds).
# 2. Fig 12, data helps high layers: the top block's CKA, averaged over the three training
#    seeds, rises by at least 0.05 from the least to the most data, and strictly with the
#    amount of data (Spearman's rank correlation 1 over the four fractions). One seed per
#    fraction is not judged: a second seed showed that one seed decides the order.
# 3. App. G, preserved: mean CKA over the lowest third of the blocks, for the near-domain
#    fine-tune (the paper's App. G model is fine-tuned on natural images); the distant one's
#    value is in the note.
# 4. App. G, domains: the mean change (1 − CKA) over blocks is larger for the distant-domain
#    fine-tune than for the near-domain one.
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
