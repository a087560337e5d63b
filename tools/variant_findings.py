"""Every finding's verdict with a ViT variant in place of the bundled ViTs (docs/ZOO.md 3o, 3p).

    python tools/variant_findings.py OUT --depth 12 [--heads N] [--width W] [--groups 01 02 ...] [--quick] [--notes]

OUT holds weights trained by ``tools/train_vit_variant.py``. The zoo names it has weights for
(``vit-cls``, ``vit-gap``, ``vit-sup``) are built in the variant's shape and read from OUT, for
the trained models and for their random-init controls alike (the zoo's own initialisation);
the compute-matched ``vit_small_data_matched`` and the small-data ViT's further training seeds
are left out (not trained), and every other zoo name keeps its bundled model (Fig 8's no-skip
pair stays the bundled 6-block one). Each group runs through ``vitlens.reproduce.run_group``
with its random-init controls, exactly as FINDINGS.md is made, and one Markdown table row per
finding is printed beside the bundled zoo's verdict (read from docs/FINDINGS.md). The bundled
zoo is not touched.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_vit_variant import shaped  # noqa: E402

VARIANT_NAMES = ("vit-cls", "vit-gap", "vit-sup")
GROUPS = ("01", "02", "03", "04", "05", "06", "08")


def bundled_verdicts(doc: Path) -> dict[tuple[str, str], str]:
    """(figure, paper finding) -> verdict, for every table row of FINDINGS.md."""
    rows = {}
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) == 9 and cells[0].startswith(("Fig", "App")):
            rows[cells[0], cells[1]] = re.sub(r"\*", "", cells[7])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--patch", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--groups", nargs="+", default=list(GROUPS))
    parser.add_argument("--quick", action="store_true", help="QUICK settings (a smoke run)")
    parser.add_argument("--notes", action="store_true", help="print each row's note below it")
    args = parser.parse_args()
    import torch

    from vitlens.reproduce import FULL, QUICK, models, run_group
    from vitlens.reproduce.config import SMALL_DATA_SEED_ROLES
    from vitlens.zoo import registry
    from vitlens.zoo._specs import canonical

    torch.set_num_threads(args.threads)
    variant = {n for n in VARIANT_NAMES if (args.out / "weights" / f"{n}.safetensors").is_file()}
    create, weights_path = registry.create, registry.weights_path

    def variant_create(name: str) -> torch.nn.Module:
        if canonical(name) not in variant:
            return create(name)
        with shaped(args.heads, args.depth, args.patch, args.width):
            return create(name)

    def variant_weights(name: str) -> Path:
        short = canonical(name)
        return args.out / "weights" / f"{short}.safetensors" if short in variant else \
            weights_path(name)

    registry.create, registry.weights_path = variant_create, variant_weights
    print(f"variant models: {sorted(variant)}\n", flush=True)
    M: dict = dict(models("zoo"))
    M["vit_small_data_matched"] = None
    M |= dict.fromkeys(SMALL_DATA_SEED_ROLES)  # the variant's vit-sup has one training seed
    bundled = bundled_verdicts(Path(__file__).parents[1] / "docs" / "FINDINGS.md")
    print("| figure | paper finding | variant value | control (random init) | margin | rule | "
          "verdict | bundled zoo |\n|---|---|---|---|---|---|---|---|", flush=True)
    counts: dict[str, int] = {}
    for nb in args.groups:
        group = run_group(nb, M, QUICK if args.quick else FULL)
        for f in group.findings:
            counts[f.verdict] = counts.get(f.verdict, 0) + 1
            prior = bundled.get((f.figure, f.paper_finding), "?")
            print(f"| {f.figure} | {f.paper_finding} | {f.value:.3f} | {f.control_text()} | "
                  f"{f.margin_text()} | {f.rule} | {f.verdict} | {prior} |", flush=True)
            if args.notes:
                print(f"<!-- {f.figure}: {f.note} -->", flush=True)
    print("\nvariant:", ", ".join(f"{v}: {n}" for v, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
