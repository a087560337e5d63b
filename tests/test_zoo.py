"""The offline zoo: names and cards, loading, accuracy against the cards, the no-skip block,
bad input, and a smoke test that trains a few steps of every architecture."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from vitlens.errors import WeightsUnavailableError
from vitlens.zoo import ZooNameError, card, names, registry
from vitlens.zoo._specs import NOSKIP_BLOCK, SPECS, WEIGHTS_DIR

EXPECTED = [
    "vit-mim", "vit-cls", "vit-gap", "vit-sup", "resnet", "mixer", "vit-cls-3pct",
    "vit-cls-10pct", "vit-cls-30pct", "vit-cls-60pct", "vit-sup-7k", f"vit-noskip-{NOSKIP_BLOCK}",
    "vit-cls-ft", "vit-cls-ft-near",
    "vit-sup-seed1", "vit-cls-3pct-seed1", "vit-cls-10pct-seed1", "vit-cls-30pct-seed1",
    "vit-cls-60pct-seed1",
    "vit-sup-seed2", "vit-cls-3pct-seed2", "vit-cls-10pct-seed2", "vit-cls-30pct-seed2",
    "vit-cls-60pct-seed2",
]  # fmt: skip
PRETRAINED = ("vit-mim",)  # self-supervised: no classifier, a masked-patch test loss instead


def test_names_and_cards():
    assert names() == EXPECTED
    for name in names():
        c = card(name)
        assert c["name"] == name and card(f"vitlens/{name}") == c
        assert c["stands_in_for"] == SPECS[name]["stands_in_for"]  # what retraining writes
        if name in PRETRAINED:
            assert c["test_accuracy"] is None
            assert c["test"]["loss"] < 0.8 * c["test"]["zero_predictor"]  # it learned
            log = c["locality_log"]
            assert log[0]["step"] < log[-1]["step"] == c["steps"]
            continue
        for key in ("architecture", "params", "dataset", "steps", "wall_time_s", "test"):
            assert key in c, (name, key)
        assert 0.0 <= c["test_accuracy"] <= 1.0
        assert c["test"]["seed"] not in (c["dataset"]["seed"], 20_000)


def test_import_is_cheap():
    code = "import sys, vitlens.zoo as z; z.names(); z.card('vit-cls'); print(sorted(m for m in sys.modules if m.startswith('vitlens.zoo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "vitlens.zoo.train" not in out.stdout and "vitlens.zoo.registry" not in out.stdout


def test_cards_show_the_expected_orderings():
    acc = {n: card(n)["test_accuracy"] for n in names() if n not in PRETRAINED}
    for full in ("vit-cls", "vit-gap", "vit-sup", "resnet", "mixer"):
        assert acc[full] > 0.5, (full, acc[full])  # chance is 0.1
    fractions = ("vit-cls-3pct", "vit-cls-10pct", "vit-cls-30pct", "vit-cls-60pct", "vit-sup")
    for sfx in ("", "-seed1", "-seed2"):  # more data, more accuracy, with every training seed
        pct = [acc[n + sfx] for n in fractions[:-1]]
        assert pct == sorted(pct), sfx
        # 60% and 100% lie within a seed's noise of each other (seed 1: 0.920 and 0.900)
        assert acc["vit-sup" + sfx] >= pct[-1] - 0.03, sfx
        for n in fractions:  # a replicate differs from seed 0 in the seed alone
            rep, base = card(n + sfx), card(n)
            assert rep["seed"] == (int(sfx[-1]) if sfx else 0)
            for key in ("dataset", "steps", "batch_size", "optimizer", "architecture"):
                assert rep[key] == base[key], (n + sfx, key)
    noskip, ref = card(f"vit-noskip-{NOSKIP_BLOCK}"), card("vit-sup-7k")
    assert acc[noskip["name"]] < acc[ref["name"]]  # removing skips costs some accuracy
    for key in ("dataset", "steps", "batch_size", "optimizer", "seed"):  # the same recipe
        assert noskip[key] == ref[key], key
    assert noskip["train_accuracy_last50"] > 0.9  # it fit its training set (no plateau)
    # the compute-matched supervised ViT: vit-cls's pretraining + fine-tuning step budget
    assert ref["steps"] == card("vit-mim")["steps"] + card("vit-cls")["steps"]
    for name in ("vit-cls", "vit-gap"):  # same data and steps, from the pretrained backbone
        c = card(name)
        assert c["init_from"] == "vit-mim" and c["steps"] == card("vit-sup")["steps"]
        assert c["dataset"] == card("vit-sup")["dataset"]
    ft = card("vit-cls-ft")["test_accuracy_by_domain"]
    base = card("vit-cls")["test_accuracy_by_domain"]
    assert ft["1"] > base["1"]  # fine-tuning helped on the new domain
    near = card("vit-cls-ft-near")
    assert near["init_from"] == "vit-cls" and near["dataset"]["domain"] == 0
    assert near["dataset"]["seed"] != card("vit-cls")["dataset"]["seed"]  # new images
    assert near["steps"] == card("vit-cls-ft")["steps"]  # the same recipe as the distant one


def test_bundled_weights_fit_the_budget():
    files = sorted(WEIGHTS_DIR.glob("*.safetensors"))
    assert sorted(f.stem for f in files) == sorted(names())
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20


def test_every_model_matches_its_card_on_a_fresh_test_split():
    """A test split with a seed no card used (n=1000 per model) agrees within 3 points."""
    from vitlens.zoo.train import evaluate

    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    for name in names():
        if name in PRETRAINED:
            continue
        c = card(name)
        model = registry.load(name)
        acc = evaluate(model, n=1000, seed=20_000, domain=c["test"]["domain"])
        assert abs(acc - c["test_accuracy"]) <= 0.03, (name, acc, c["test_accuracy"])
    assert time.perf_counter() - t0 < 300


def test_load_gives_eval_model_with_data_config():
    import timm.data

    model = registry.load("vitlens/vit-cls")
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (3, 64, 64) and cfg["mean"] == (0.5, 0.5, 0.5)
    assert cfg["crop_pct"] == 1.0
    assert "hf_hub_id" not in model.pretrained_cfg
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_architectures_are_timm_models():
    from timm.models.mlp_mixer import MlpMixer
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer import VisionTransformer

    vit, gap = registry.create("vit-cls"), registry.create("vit-gap")
    assert isinstance(vit, VisionTransformer) and vit.patch_embed.grid_size == (8, 8)
    assert vit.cls_token is not None and gap.cls_token is None and gap.global_pool == "avg"
    rn = registry.create("resnet")
    assert isinstance(rn, ResNetV2) and len(rn.stages) >= 3
    assert all(len(s.blocks) >= 2 for s in rn.stages)
    assert isinstance(registry.create("mixer"), MlpMixer)


def test_noskip_block_drops_both_residuals():
    from timm.models.vision_transformer import Block

    from vitlens.zoo.architectures import NoSkipBlock

    model = registry.create(f"vit-noskip-{NOSKIP_BLOCK}").eval()
    kinds = [type(b) for b in model.blocks]
    assert kinds[NOSKIP_BLOCK] is NoSkipBlock and kinds.count(Block) == len(kinds) - 1
    assert 0 < NOSKIP_BLOCK < len(kinds) - 1  # a middle block
    blk = model.blocks[NOSKIP_BLOCK]
    for attr in ("norm1", "attn", "ls1", "norm2", "mlp", "ls2"):
        assert hasattr(blk, attr)
    x = torch.randn(2, 65, model.embed_dim)
    with torch.no_grad():
        h = blk.attn(blk.norm1(x))
        torch.testing.assert_close(blk(x), blk.mlp(blk.norm2(h)))
        torch.testing.assert_close(Block.forward(blk, x), x + h + blk.mlp(blk.norm2(x + h)))


@pytest.mark.parametrize("bad", ["vit-clss", "vitlens/vit-gapp", "resnet50"])
def test_unknown_name_lists_the_zoo(bad):
    for fn in (card, registry.create, registry.load):
        with pytest.raises(KeyError) as info:
            fn(bad)
        assert isinstance(info.value, ValueError) and isinstance(info.value, ZooNameError)
        assert "vit-cls" in str(info.value) and "mixer" in str(info.value)
    with pytest.raises(KeyError, match="Did you mean 'vit-cls'"):
        card("vit-clss")


def test_corrupt_or_missing_weights_name_the_file(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    with pytest.raises(WeightsUnavailableError, match="broken.safetensors"):
        registry.load("vit-cls", bad)
    with pytest.raises(WeightsUnavailableError, match="nothing.safetensors"):
        registry.load("vit-cls", tmp_path / "nothing.safetensors")
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        registry.load("vit-cls", registry.weights_path("mixer"))


def test_smoke_train_every_architecture_and_reload(tmp_path):
    from vitlens.zoo.train import main, train_model

    kw = dict(steps=2, n_train=64, test_n=32, batch_size=16, progress=False, out=tmp_path)
    from vitlens.zoo.pretrain import STAGES

    c = train_model("vit-mim", steps=2, progress=False, out=tmp_path)  # 2 steps per stage
    assert c["steps"] == 2 * len(STAGES) and c["test_accuracy"] is None
    # the machine is on the card: threads and the CPU kernels' instruction set (docs/ZOO.md 3q)
    isa = torch.backends.cpu.get_cpu_capability()
    assert c["device"] == f"cpu ({torch.get_num_threads()} threads, {isa})"
    assert c["versions"]["torch"] == torch.__version__
    assert [s["seed"] for s in c["pretraining"]["stages"]] == [s["seed"] for s in STAGES]
    for name in (
        "vit-cls",
        "vit-gap",
        "resnet",
        "mixer",
        f"vit-noskip-{NOSKIP_BLOCK}",
        "vit-cls-10pct",
        "vit-cls-ft",
    ):
        c = train_model(name, **kw)
        saved = json.loads((tmp_path / "cards" / f"{name}.json").read_text())
        assert saved == c and c["steps"] == 2 and c["device"].endswith(f", {isa})")
        model = registry.load(name, tmp_path / "weights" / f"{name}.safetensors")
        with torch.no_grad():
            assert torch.isfinite(model(torch.zeros(1, 3, 64, 64))).all()
    cards = {
        n: json.loads((tmp_path / "cards" / f"{n}.json").read_text())
        for n in ("vit-cls", "vit-cls-10pct")
    }
    assert cards["vit-cls-10pct"]["dataset"]["n_used"] < cards["vit-cls"]["dataset"]["n_used"]
    # seeded: the same run gives the same weights; the CLI runs too
    first = registry.load("vit-gap", tmp_path / "weights" / "vit-gap.safetensors").state_dict()
    train_model("vit-gap", **kw)
    again = registry.load("vit-gap", tmp_path / "weights" / "vit-gap.safetensors").state_dict()
    for k, v in first.items():  # same seed, same weights (up to float16 rounding)
        torch.testing.assert_close(again[k], v, atol=2e-3, rtol=2e-3)
    argv = ["resnet", "--steps", "1", "--n-train", "32", "--test-n", "16", "--out", str(tmp_path)]
    assert main([*argv, "--no-progress"]) == 0
    assert json.loads((tmp_path / "cards" / "resnet.json").read_text())["steps"] == 1


def test_a_backbone_replicate_seed_changes_the_run_and_is_on_its_card(tmp_path, monkeypatch):
    """train_backbone(seed=k) is another training run (its own init, crops and masks; every
    stage's seed shifted by k), recorded on the card; seed 0 repeats the bundled recipe."""
    from safetensors.torch import load_file

    from vitlens.zoo.pretrain import STAGES, train_backbone
    from vitlens.zoo.train import DEFAULTS, train_model

    runs = {}
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        card = train_backbone("vit-mim", steps=1, out=out, progress=False, seed=seed)
        assert card["seed"] == seed
        assert [s["seed"] for s in card["pretraining"]["stages"]] == [
            s["seed"] + seed for s in STAGES]
        runs[seed] = load_file(str(out / "weights" / "vit-mim.safetensors"))
    assert runs[0].keys() == runs[1].keys()
    assert not torch.equal(runs[0]["pos_embed"], runs[1]["pos_embed"])
    # train_model passes its training seed on to the backbone (tools/train_vit_variant.py --seed)
    monkeypatch.setitem(DEFAULTS, "seed", 1)
    card = train_model("vit-mim", steps=1, out=tmp_path / "via", progress=False)
    via = load_file(str(tmp_path / "via" / "weights" / "vit-mim.safetensors"))
    assert card["seed"] == 1 and torch.equal(via["pos_embed"], runs[1]["pos_embed"])


def test_cli_trains_a_backbone_then_its_fine_tune(tmp_path, capsys):
    """`train all` starts with the masked-patch backbone, whose card has no accuracy: the CLI
    reports its loss and goes on to the models fine-tuned from it."""
    from vitlens.zoo.train import main

    argv = ["vit-cls", "vit-mim", "--steps", "1", "--n-train", "32", "--test-n", "16",
            "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("vit-mim: masked-patch test_loss=")
    assert lines[1].startswith("vit-cls: test_accuracy=")
    assert json.loads((tmp_path / "cards" / "vit-cls.json").read_text())["init_from"] == "vit-mim"


def test_training_never_replaces_a_users_file_in_out(tmp_path, capsys):
    """A --out folder may be the user's: a weights file or card vitlens did not write there is
    refused before any training (nothing written), replaced with --overwrite; re-running into
    a folder vitlens wrote replaces its own files."""
    from vitlens.zoo.train import main, train_model

    user = tmp_path / "weights" / "resnet.safetensors"
    user.parent.mkdir()
    user.write_bytes(b"the user's own weights")
    argv = ["resnet", "--steps", "1", "--n-train", "32", "--test-n", "16", "--out",
            str(tmp_path), "--no-progress"]
    with pytest.raises(ValueError, match="resnet.safetensors.*vitlens did not write"):
        main(argv)
    with pytest.raises(ValueError, match="vitlens did not write"):
        train_model("resnet", steps=1, n_train=32, test_n=16, progress=False, out=tmp_path)
    assert user.read_bytes() == b"the user's own weights"
    assert not (tmp_path / "cards").exists()  # refused before training: nothing written
    assert main([*argv, "--overwrite"]) == 0
    assert registry.load("resnet", user) is not None
    before = user.read_bytes()
    assert main([*argv[:2], "2", *argv[3:]]) == 0  # vitlens's own files now: replaced
    assert json.loads((tmp_path / "cards" / "resnet.json").read_text())["steps"] == 2
    assert user.read_bytes() != before
    card = tmp_path / "cards" / "resnet.json"
    card.write_text("{}")  # edited by the user since: theirs now
    with pytest.raises(ValueError, match="cards/resnet.json"):
        main(argv)
    assert card.read_text() == "{}"


def test_vit_position_embeddings_start_large_and_without_spatial_structure():
    """The zoo ViTs draw position embeddings at std 0.2 (docs/ZOO.md, 3g), independent random
    vectors: neighbouring patches' embeddings are no more alike than distant ones'."""
    from vitlens.zoo.architectures import POS_INIT_STD, build

    assert POS_INIT_STD == 0.2
    for arch in ("vit-cls", "vit-gap", "vit-mim", "vit-noskip"):
        torch.manual_seed(1)
        pos = build(arch).pos_embed.detach()[0, -64:].double()  # the 8x8 grid's embeddings
        assert 0.18 < float(pos.std()) < 0.22, arch
        unit = pos / pos.norm(dim=1, keepdim=True)
        cos = unit @ unit.T
        yx = torch.stack(torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij"), -1)
        cheb = (yx.reshape(-1, 1, 2) - yx.reshape(1, -1, 2)).abs().amax(-1)
        near, far = cos[cheb == 1].mean(), cos[cheb >= 4].mean()
        assert abs(float(near - far)) < 0.05, (arch, float(near), float(far))


def test_compare_zoo_tells_identical_weights_from_changed_ones(tmp_path):
    """tools/compare_zoo.py, which README and docs/ZOO.md 3q cite, must catch one changed value."""
    import shutil

    from safetensors.torch import load_file, save_file

    from vitlens.zoo._specs import CARDS_DIR

    sys.path.insert(0, str(WEIGHTS_DIR.parents[2] / "tools"))
    try:
        import compare_zoo
    finally:
        sys.path.pop(0)
    (tmp_path / "weights").mkdir()
    (tmp_path / "cards").mkdir()
    for short in ("mixer", "vit-sup"):
        shutil.copy(WEIGHTS_DIR / f"{short}.safetensors", tmp_path / "weights")
        c = json.loads((CARDS_DIR / f"{short}.json").read_text())
        c["wall_time_s"] += 1.0
        (tmp_path / "cards" / f"{short}.json").write_text(json.dumps(c))
    same = compare_zoo.compare(tmp_path, "mixer")
    assert same["identical"] and same["max_abs_diff"] == 0.0 and same["fields"] == []
    w = load_file(str(tmp_path / "weights" / "vit-sup.safetensors"))
    key = sorted(w)[0]
    w[key] = w[key].clone()
    w[key].view(-1)[0] += 0.25
    save_file(w, str(tmp_path / "weights" / "vit-sup.safetensors"))
    c = json.loads((tmp_path / "cards" / "vit-sup.json").read_text())
    c["test_accuracy"] = 0.5
    (tmp_path / "cards" / "vit-sup.json").write_text(json.dumps(c))
    moved = compare_zoo.compare(tmp_path, "vit-sup")
    assert not moved["identical"] and moved["fields"] == ["test_accuracy"]
    assert moved["max_abs_diff"] == pytest.approx(0.25, rel=0.01)
    assert moved["retrained"] == 0.5 and moved["bundled"] == card("vitlens/vit-sup")["test_accuracy"]
