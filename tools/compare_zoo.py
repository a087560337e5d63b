"""A retrained zoo against the bundled one: identical weights, and how far the cards moved.

    python tools/compare_zoo.py OUT [--markdown]

OUT is a ``python -m vitlens.zoo.train ... --out OUT`` folder. For every model it holds, this
prints whether each weight tensor equals the bundled one (``torch.equal``), the largest
absolute difference, the card's test accuracy beside the bundled card's, and the card
fields other than wall times that differ (docs/ZOO.md 3n, 3q).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Card fields that record the machine's speed, not the model.
TIMING = ("wall_time_s",)


def compare(out: Path, short: str) -> dict:
    import torch
    from safetensors.torch import load_file

    from vitlens.zoo._specs import CARDS_DIR, WEIGHTS_DIR

    a = load_file(str(WEIGHTS_DIR / f"{short}.safetensors"))
    b = load_file(str(out / "weights" / f"{short}.safetensors"))
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    diff = max((float((a[k].float() - b[k].float()).abs().max()) for k in a if k in b),
               default=float("nan"))
    ca = json.loads((CARDS_DIR / f"{short}.json").read_text())
    cb = json.loads((out / "cards" / f"{short}.json").read_text())
    fields = sorted(k for k in ca.keys() | cb.keys() if k not in TIMING and ca.get(k) != cb.get(k))
    return {"model": short, "identical": same, "max_abs_diff": diff,
            "bundled": ca.get("test_accuracy"), "retrained": cb.get("test_accuracy"),
            "fields": fields}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args()
    from vitlens import zoo

    names = [n for n in zoo.names() if (args.out / "weights" / f"{n}.safetensors").is_file()]
    rows = [compare(args.out, n) for n in names]
    if args.markdown:
        print("| model | weights identical | max abs weight difference | test accuracy, "
              "bundled | retrained | card fields that differ (not wall times) |\n"
              "|---|---|---|---|---|---|")
    for r in rows:
        acc = [f"{v:.4f}" if isinstance(v, float) else "-" for v in (r["bundled"], r["retrained"])]
        if args.markdown:
            print(f"| `{r['model']}` | {'yes' if r['identical'] else 'no'} | "
                  f"{r['max_abs_diff']:.3g} | {acc[0]} | {acc[1]} | "
                  f"{', '.join(r['fields']) or '-'} |")
        else:
            print(f"{r['model']:22s} identical={r['identical']!s:5s} "
                  f"max|diff|={r['max_abs_diff']:.3g} accuracy {acc[0]} -> {acc[1]} "
                  f"differ: {', '.join(r['fields']) or '-'}")
    print(f"\n{sum(r['identical'] for r in rows)} of {len(rows)} weight files identical")


if __name__ == "__main__":
    main()
