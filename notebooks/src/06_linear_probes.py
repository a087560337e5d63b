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
IMAGES = None  # unused here: probes need labelled images (the synthetic validation/test splits)
N_IMAGES = 512  # images of the other analyses (unused here)
PROBE_TRAIN = 500  # pool of labelled training images (SHOTS per class are drawn per seed)
PROBE_TEST = 1000  # labelled test images
SHOTS = 10
SEEDS = tuple(range(10))  # one few-shot draw per seed; the intervals need >= 10
BATCH_SIZE = 128

# %% [markdown]
# ## One call runs the notebook's analyses
#
# `reproduce.run_group` runs this notebook's analyses (the same code as `vitlens reproduce`)
# on the trained models and on random-init copies of them (seeds 0, 1, 2: the controls of
# the table at the end), and returns the results, the figures and the findings. Probes need
# labels: they use the synthetic validation split (the few-shot pool) and test split, which
# the zoo never trained on.

# %%
from vitlens import reproduce

reproduce.static_charts()  # compact SVG charts: they display offline, anywhere

M = reproduce.models(MODELS)
settings = reproduce.Settings(n_images=N_IMAGES, batch_size=BATCH_SIZE, folder=IMAGES,
                              probe_train=PROBE_TRAIN, probe_test=PROBE_TEST, shots=SHOTS,
                              seeds=SEEDS)
g = reproduce.run_group("06_linear_probes", M, settings)
for name, result in g.results.items():
    print(f"{name}: {result!r}")

# %% [markdown]
# ## Fig 11: the CLS ViT and the GAP ViT
#
# `linear_probe` captures the features once, fits one probe per layer, aggregation and seed,
# and scores them all in one pass over the test images. `"every"` probes each spatial token
# separately (the accuracy shown is their average). Each line is an aggregation, with a band
# of ± one standard deviation over the few-shot draws; compare the lines at the top layer.

# %%
g.charts["fig11_probes_vit_cls"] | g.charts["fig11_probes_vit_gap"]

# %%
probe_cls = g.results["probes_vit"]
probe_cls.to_dataframe().pivot(index="layer", columns="aggregation", values="accuracy").round(3)

# %% [markdown]
# ## D.4: one probe per token
#
# One panel per layer, one cell per token position: bright cells are tokens from which the
# class can be read. In a GAP model the top panels should be evenly bright.

# %%
g.charts["figD4_token_probes_vit_cls"] & g.charts["figD4_token_probes_vit_gap"]

# %% [markdown]
# ## Fig 13: more pretraining data
#
# The same architecture with less training data (role `vit_small_data`; timm: ImageNet-1k
# instead of 21k), probed on the mean over tokens, against the full model. In the zoo, also
# the same ViT trained for the pretrained ViT's whole step budget (`vit_small_data_matched`,
# `vitlens/vit-sup-7k`), so that the gap cannot be a matter of compute alone, and the
# small-data ViT trained again with training seeds 1 and 2 (`vit_small_data_seed1`,
# `vit_small_data_seed2`: `vitlens/vit-sup-seed1`, `-seed2`), so that it cannot be one lucky
# training run either.

# %%
print("full:", M["vit"], "| small data:", M["vit_small_data"], "| same step budget:",
      M["vit_small_data_matched"], "| other training seeds:", M["vit_small_data_seed1"],
      M["vit_small_data_seed2"])
g.charts["fig13_probes_by_data"]

# %% [markdown]
# ## The same analyses on your own models
#
# `reproduce.run_group("06", {"vit": ..., "vit_gap": ..., "vit_small_data": ...,
# "vit_small_data_matched": ..., "vit_small_data_seed1": ..., "vit_small_data_seed2": ...},
# settings)` runs this notebook on other models (the last three may be `None`). The calls it makes (`run_probes` in
# `vitlens/reproduce/groups.py`) are:
#
# ```python
# from vitlens.analyses import linear_probe
#
# train, test = vitlens.reproduce.probe_images(500, 1000)  # labelled (image, label) pairs
# kw = dict(shots=10, seeds=range(10), batch_size=128, progress=False)
# cls = linear_probe("vitlens/vit-cls", train, None, test, None,
#                    aggregations=("cls", "mean", "every"), **kw)
# gap = linear_probe("vitlens/vit-gap", train, None, test, None,
#                    aggregations=("mean", "every"), **kw)
# small = linear_probe("vitlens/vit-sup", train, None, test, None, aggregations=("mean",), **kw)
# matched = linear_probe("vitlens/vit-sup-7k", train, None, test, None, aggregations=("mean",),
#                        **kw)
# seeds = [linear_probe(f"vitlens/vit-sup-seed{k}", train, None, test, None,
#                       aggregations=("mean",), **kw) for k in (1, 2)]
# rows = vitlens.findings.linear_probes(cls, gap, small, matched, seeds)
# ```

# %% [markdown]
# ## Findings: does our figure show the paper's?
#
# Statistics chosen beforehand (`vitlens/findings/probes.py`), at the top layer unless noted.
# Each is an accuracy difference judged on its paired 95% interval over the probe seeds (each
# seed probes both sides with the same shots), so probe noise cannot pass a rule:
#
# 1. CLS model: CLS accuracy minus single-token accuracy (lower end).
# 2. GAP model: mean-pooled minus single-token accuracy (upper end; small: interchangeable
#    tokens).
# 3. Own aggregation: CLS model, CLS minus mean-pooled accuracy (lower end above 0.05,
#    the band within which row 2 calls two aggregations "about as good").
# 4. Fig 13: at the middle block, the mean-pooled accuracy, full-data minus small-data model
#    (lower end; the lowest against every small-data model there is: both step budgets and
#    every training seed).
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
