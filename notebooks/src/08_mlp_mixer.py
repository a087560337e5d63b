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
g = reproduce.run_group("08_mlp_mixer", M, settings)
comp = g.results["mixer_comparison"]
print(comp)

# %% [markdown]
# ## Within the Mixer, and against the ViT and the ResNet
#
# `mixer_comparison` runs the three models over the images once and returns three CKA
# matrices (every capture point of each model, in depth order) and a summary: for each
# Mixer layer, its best match in the other model. Left: the Mixer against itself (bright
# squares along the diagonal are groups of similar layers); middle and right: Mixer layers
# (rows) against the ViT's and the ResNet's (columns).

# %%
g.charts["figH_mixer"]

# %%
{k: (round(v, 3) if isinstance(v, float) else v) for k, v in comp.summary.items()}

# %% [markdown]
# ## The same analyses on your own models
#
# `reproduce.run_group("08", {"mixer": ..., "vit": ..., "resnet": ...}, settings)` runs this
# notebook on other models. The calls it makes (`run_mixer` in `vitlens/reproduce/groups.py`)
# are:
#
# ```python
# from vitlens.analyses import mixer_comparison
#
# images = vitlens.reproduce.test_images(512)              # or a folder of images
# comp = mixer_comparison("vitlens/mixer", "vitlens/vit-cls", "vitlens/resnet", images,
#                         layers="all", batch_size=128, progress=False)
# rows = vitlens.findings.mixer(comp)
# ```

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/representation.py`):
#
# 1. Distinct blocks: split the Mixer's within-model CKA into the two contiguous groups of
#    layers that maximise the mean CKA within groups minus between them; that contrast.
# 2. Closer to ViT: the mean best-match CKA of Mixer layers with the ViT minus that with the
#    ResNet.
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
