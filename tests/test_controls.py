"""Random-init controls: seeded copies of the same architectures, and verdicts beside them.

A trained model replaced by a random-init one must not keep a "reproduced" verdict: the
finding is then earned by an untrained network too, and reads "inconclusive".
"""

from __future__ import annotations

import torch

from vitlens import findings as F
from vitlens import reproduce
from vitlens.findings.controls import control_models, random_init

SMALL = reproduce.Settings(n_images=32, batch_size=16, erf_images=2, probe_train=100,
                           probe_test=32, shots=2, seeds=(0,))


def _same_architecture(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(sa[k].shape == sb[k].shape for k in sa)


def test_random_init_is_seeded_same_architecture_and_untrained():
    trained = reproduce.config.models("zoo")["vit"]
    from vitlens import load_model

    real = load_model(trained)
    a, b, c = random_init(trained, 0), random_init(trained, 0), random_init(trained, 1)
    assert _same_architecture(a, real) and not a.training
    w = "blocks.0.attn.qkv.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])  # a control repeats exactly
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])  # another seed, another net
    assert not torch.allclose(a.state_dict()[w], real.state_dict()[w])
    state = torch.random.get_rng_state()
    random_init(trained, 3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    module = random_init(real, 0)  # a module: copied and re-initialised, the original kept
    assert _same_architecture(module, real)
    assert not torch.allclose(module.state_dict()[w], real.state_dict()[w])
    assert torch.equal(load_model(trained).state_dict()[w], real.state_dict()[w])


def test_control_models_share_copies_between_roles_of_one_model():
    M = {"vit": "vitlens/vit-cls", "vit_zoo": "vitlens/vit-cls", "resnet": "vitlens/resnet"}
    C = control_models(M, 0)
    assert C["vit"] is C["vit_zoo"] and C["resnet"] is not C["vit"]
    a, b = random_init("vitlens/vit-cls", 5), random_init("vitlens/vit-cls", 6)
    D = control_models({"x": a, "y": b, "z": a}, 0)  # two modules of one class
    w = "blocks.0.attn.qkv.weight"
    assert D["x"] is D["z"]
    assert not torch.equal(D["x"].state_dict()[w], D["y"].state_dict()[w])
    assert control_models({"vit": "vitlens/vit-cls", "none": None}, 0)["none"] is None


def test_random_init_models_turn_verdicts_inconclusive():
    """The ERF group on the zoo, then with its trained models swapped for random-init ones."""
    M = reproduce.models("zoo")
    trained = reproduce.run_group("03", M, SMALL, controls=(0, 1))
    assert all(r.controlled and len(r.control) == 2 for r in trained.findings)
    untrained = dict(M, **{role: random_init(M[role], 7) for role in ("vit", "resnet")})
    swapped = reproduce.run_group("03", untrained, SMALL, controls=(0, 1))
    verdicts = [r.verdict for r in swapped.findings]
    assert F.REPRODUCED not in verdicts, [str(r) for r in swapped.findings]
    # every row the untrained "model" passes is inconclusive: its controls pass it too
    passing = [r for r in swapped.findings if r.passes]
    assert passing and all(r.verdict == F.INCONCLUSIVE for r in passing)
    table = swapped.table().df
    assert {"control (random init)", "margin", "verdict"} <= set(table.columns)
