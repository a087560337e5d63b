"""Fig 4 and Fig 13 with replicates of ``vit-cls`` (other pretraining and fine-tune seeds)
against every small-data ViT of the zoo (docs/ZOO.md 3s).

    python tools/train_vit_variant.py OUT1 --seed 1 --models vit-mim vit-cls
    python tools/seed_replicates.py 1=OUT1 [2=OUT2 ...]

Uses ``vitlens reproduce``'s settings: 512 test images for the local heads (ratio >= 2 in
the lower half), 10-shot mean-pooled probes at the middle block over 10 probe seeds with the
paired 95% interval of Fig 13. The bundled ``vit-cls`` is measured beside the replicates.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import torch

    from vitlens.analyses import attention_locality, linear_probe
    from vitlens.findings.attention import local_head_count
    from vitlens.findings.probes import paired_interval
    from vitlens.models import load_model
    from vitlens.reproduce.config import Settings, probe_images, test_images
    from vitlens.zoo import registry

    torch.set_num_threads(1)
    s = Settings()
    pretrained = {"vit-cls (bundled)": load_model("vitlens/vit-cls")}
    for arg in argv:
        seed, folder = arg.split("=", 1)
        pretrained[f"vit-cls seed {seed}"] = registry.load(
            "vit-cls", f"{folder}/weights/vit-cls.safetensors")
    small = {n: load_model(f"vitlens/{n}")
             for n in ("vit-sup", "vit-sup-seed1", "vit-sup-seed2", "vit-sup-7k")}
    everything = pretrained | small
    images = test_images(s.n_images)
    for name, model in everything.items():
        loc = attention_locality(model, images, batch_size=s.batch_size, progress=False)
        print(f"Fig 4: {name}: {local_head_count(loc)} local heads in the lower half", flush=True)
    train, test = probe_images(s.probe_train, s.probe_test)
    kw = dict(shots=s.shots, seeds=s.seeds, batch_size=s.batch_size, l2="auto", progress=False)
    probes = {n: linear_probe(m, train, None, test, None, aggregations=("mean",), **kw)
              for n, m in everything.items()}
    layers = next(iter(probes.values())).layers
    mid = len(layers) // 2
    for a in pretrained:
        x = probes[a].per_seed[:, mid, 0]
        for b in small:
            y = probes[b].per_seed[:, mid, 0]
            m, lo, hi = paired_interval(x, y)
            print(f"Fig 13 at {layers[mid]}: {a} ({x.mean():.3f}) - {b} ({y.mean():.3f}): "
                  f"{m:.3f} [{lo:.3f}, {hi:.3f}]", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
