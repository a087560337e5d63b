# %% [markdown]
# A notebook executed by ``notebooks/build.py`` (widget state saved), then opened with no
# kernel by tests/ui/test_static.py.

# %%
import vitlens
import vitlens.widgets as vw
from vitlens.analyses import localization, residual_ratio

vit, resnet = vitlens.load_model("vitlens/vit-cls"), vitlens.load_model("vitlens/resnet")
images = vitlens.datasets.synthetic("test", 32)
kw = dict(batch_size=32, progress=False)
cross = vitlens.cka(vit, images, resnet, cache=False, **kw)

# %%
vw.SimilarityExplorer.from_result(cross)

# %%
vw.AttentionExplorer(vit, images, layer=0)

# %%
vw.LocalizationExplorer(vit, results=[localization(vit, images, layer="blocks.5", **kw)])

# %%
vw.ResidualExplorer(vit, result=residual_ratio(vit, images, **kw))
