"""Fig 8's skip cost for replicates of the no-skip pair (docs/ZOO.md 3t).

    python tools/train_vit_variant.py OUT --seed K [--domain 1] --models vit-sup-7k vit-noskip-3
    python tools/skip_cost_replicates.py [LABEL=OUT ...]

Each OUT holds a ``vit-sup-7k`` and a ``vit-noskip-3`` trained by the first command. Both are
classified on the test split their cards record (5,000 images, their own domain), and the cost
is the finding's statistic (``vitlens.findings.skip``): normal minus no-skip correctness in
percentage points with the paired 95% interval over test images. The bundled pair is measured
first, then a summary per domain over the training seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAIR = ("vit-sup-7k", "vit-noskip-3")


def _pair_cost(models: dict, cards: dict) -> dict:
    from vitlens.findings.probes import paired_interval
    from vitlens.zoo.train import correct_by_image

    tests = {n: cards[n]["test"] for n in PAIR}
    if tests[PAIR[0]] != tests[PAIR[1]]:
        msg = f"the pair was tested on different images: {tests}"
        raise ValueError(msg)
    t = tests[PAIR[0]]
    hits = {n: correct_by_image(models[n], n=t["n"], seed=t["seed"], domain=t["domain"],
                                split=t["split"]) for n in PAIR}
    a, b = (hits[n].astype(float) for n in PAIR)
    mean, low, high = (100 * v for v in paired_interval(a, b))
    return {"domain": t["domain"], "normal": 100 * a.mean(), "noskip": 100 * b.mean(),
            "cost": mean, "low": low, "high": high,
            "train": [100 * cards[n]["train_accuracy_last50"] for n in PAIR]}


def main(argv: list[str]) -> None:
    import torch

    from vitlens import zoo
    from vitlens.models import load_model
    from vitlens.zoo import registry

    torch.set_num_threads(1)
    rows = {"bundled (seed 0)": _pair_cost({n: load_model(f"vitlens/{n}") for n in PAIR},
                                           {n: zoo.card(n) for n in PAIR})}
    for arg in argv:
        label, folder = arg.split("=", 1)
        root = Path(folder)
        cards = {n: json.loads((root / "cards" / f"{n}.json").read_text()) for n in PAIR}
        models = {n: registry.load(n, root / "weights" / f"{n}.safetensors") for n in PAIR}
        rows[label] = _pair_cost(models, cards)
    print("| run | domain | normal | no-skip | train accuracy, last 50 steps (normal, no-skip) "
          "| cost (points) [95% interval] |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['domain']} | {r['normal']:.1f}% | {r['noskip']:.1f}% | "
              f"{r['train'][0]:.1f}%, {r['train'][1]:.1f}% | {r['cost']:.2f} [{r['low']:.2f}, {r['high']:.2f}] |")
    for d in sorted({r["domain"] for r in rows.values()}):
        costs = [r["cost"] for r in rows.values() if r["domain"] == d]
        print(f"domain {d}: {len(costs)} runs, mean cost {sum(costs) / len(costs):.2f} points, "
              f"range {min(costs):.2f} to {max(costs):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
