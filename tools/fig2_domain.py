"""Fig 1 and Fig 2's findings for a ViT/ResNet pair trained on another synthetic domain
(docs/ZOO.md 3u), beside the bundled pair, each with its random-init controls.

    python tools/train_vit_variant.py OUT --domain 1 --models resnet vit-cls
    python tools/fig2_domain.py OUT [--domain 1]

The analysis is notebook 01's (``vitlens.findings.representation_structure`` on every capture
point of both models, ``vitlens reproduce``'s 512 test images and batch size), with the
images drawn from the pair's domain; the random-init copies of both zoo architectures
(``vitlens.findings.controls``, seeds 0-2, built by name as ``vitlens reproduce`` builds
them) see the same images.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _findings(vit, resnet, images, batch_size: int):
    import torch

    from vitlens import findings as F
    from vitlens.api import cka
    from vitlens.findings.controls import control_models
    from vitlens.reproduce import CONTROL_SEEDS

    def run(m):
        torch.manual_seed(0)
        kw = dict(batch_size=batch_size, progress=False, cache=False)
        within_v = cka(m["vit"], images, layers_a="all", **kw)
        within_r = cka(m["resnet"], images, layers_a="all", **kw)
        cross = cka(m["vit"], images, m["resnet"], layers_a="all", layers_b="all", **kw)
        return F.representation_structure(within_v, within_r, cross)

    # the zoo's architectures by name: the same random-init copies as ``vitlens reproduce``'s
    zoo_pair = {"vit": "vitlens/vit-cls", "resnet": "vitlens/resnet"}
    controls = [run(control_models(zoo_pair, seed)) for seed in CONTROL_SEEDS]
    return F.with_controls(run({"vit": vit, "resnet": resnet}), controls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder with weights/resnet and weights/vit-cls")
    parser.add_argument("--domain", type=int, default=1)
    args = parser.parse_args()
    import torch

    from vitlens.models import load_model
    from vitlens.reproduce import FULL, test_images
    from vitlens.zoo import registry

    torch.set_num_threads(1)
    pairs = {
        "bundled pair, domain 0": (load_model("vitlens/vit-cls"), load_model("vitlens/resnet"), 0),
        f"{args.out}, domain {args.domain}": (
            registry.load("vit-cls", args.out / "weights" / "vit-cls.safetensors"),
            registry.load("resnet", args.out / "weights" / "resnet.safetensors"), args.domain),
    }
    print("| pair | finding | value | control (random init) | margin | rule | verdict | note |")
    print("|---|---|---|---|---|---|---|---|")
    for label, (vit, resnet, domain) in pairs.items():
        images = test_images(FULL.n_images, domain=domain)
        for f in _findings(vit, resnet, images, FULL.batch_size):
            print(f"| {label} | {f.figure}: {f.paper_finding} | {f.value:.3f} | "
                  f"{f.control_text()} | {f.margin_text()} | {f.rule} | {f.verdict} | {f.note} |",
                  flush=True)


if __name__ == "__main__":
    main()
