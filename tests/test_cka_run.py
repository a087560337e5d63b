"""The one minibatch-CKA run: any number of models, row and column selections, callbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitlens
from tests.tiny_models import make_tiny, random_images
from vitlens.similarity.run import CKARun

KW = dict(batch_size=6, progress=False, cache=False)


def test_a_joint_run_over_three_models_equals_the_pairwise_runs():
    vit, deit, cnn = make_tiny("vit"), make_tiny("deit"), make_tiny("resnet")
    imgs = random_images(18)
    seen = []
    run = CKARun.joint({"vit": vit, "deit": deit, "cnn": cnn}, imgs,
                       rows={"vit": "all", "deit": "blocks"}, cols={"cnn": "blocks", "vit": "blocks"},
                       batch_size=6, on_batch=lambda idx: seen.append((idx.start, idx.stop)))
    blocks = run.run(progress=False).blocks()
    assert seen == [(0, 6), (6, 12), (12, 18)]
    assert set(blocks) == {(r, c) for r in ("vit", "deit") for c in ("cnn", "vit")}
    assert run.layers_a[0].startswith("vit::") and len(run.layers_a) == len(set(run.layers_a))
    for (r, c), res in blocks.items():
        models = {"vit": vit, "deit": deit, "cnn": cnn}
        want = vitlens.cka(models[r], imgs, models[c], layers_a="all" if r == "vit" else "blocks",
                           layers_b="blocks", **KW)
        assert res.layers_a == want.layers_a and res.layers_b == want.layers_b
        np.testing.assert_allclose(res.matrix, want.matrix, rtol=0, atol=1e-12)
        assert res.meta["blocks_b"] == list(range(len(res.layers_b)))


def test_rows_against_themselves_and_a_second_image_set():
    vit = make_tiny("vit")
    imgs, other = random_images(12), random_images(12, seed=5)
    run = CKARun.joint({"vit": vit}, imgs, rows={"vit": "blocks"}, cols=None, batch_size=6)
    assert run.self_only
    np.testing.assert_allclose(run.run(progress=False).matrix(),
                               vitlens.cka(vit, imgs, **KW).matrix, rtol=0, atol=1e-12)
    paired = vitlens.cka(vit, imgs, vit, images_b=other, **KW)  # one module, two image sets
    run = CKARun.joint({"a": vit, "b": vit}, imgs, rows={"a": "blocks"}, cols={"b": "blocks"},
                       images_of={"b": other}, batch_size=6)
    np.testing.assert_allclose(run.run(progress=False).matrix(), paired.matrix, rtol=0, atol=1e-12)
    assert not np.allclose(paired.matrix, vitlens.cka(vit, imgs, **KW).matrix)


def test_joint_runs_refuse_unknown_labels_and_custom_runs_refuse_the_cache():
    vit = make_tiny("vit")
    with pytest.raises(KeyError, match=r"\['cnn'\] that are not in models"):
        CKARun.joint({"vit": vit}, random_images(8), rows={"vit": "blocks"}, cols={"cnn": "all"})
    with pytest.raises(ValueError, match="cannot use the cache"):
        CKARun.joint({"vit": vit}, random_images(8), rows={"vit": "blocks"}, shuffles=1,
                     cache=True)


def test_shuffled_columns_give_a_null_near_zero():
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    run = CKARun.joint({"a": vit, "b": cnn}, random_images(24), rows={"a": "blocks"},
                       cols={"b": "blocks"}, batch_size=12, shuffles=2,
                       generator=torch.Generator().manual_seed(0), gram_in_hooks=False)
    run.run(progress=False)
    real = run.matrix()
    nulls = [e.compute().numpy() for e in run.null_engines]
    assert len(nulls) == 2 and all(n.shape == real.shape for n in nulls)
    assert np.abs(np.mean(nulls)) < np.abs(real).mean()
