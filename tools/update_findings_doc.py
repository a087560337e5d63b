"""Regenerate docs/FINDINGS.md from a full ``vitlens reproduce`` run.

    python tools/update_findings_doc.py [--out DIR] [--from DIR]

Runs ``vitlens reproduce --out DIR`` (default: a temporary folder) on the offline zoo, or
reads the FINDINGS.md of an earlier full run (``--from DIR``), and writes docs/FINDINGS.md:
the same text, figure links turned into names, and a short guide to reading it. Rebuild the
notebooks too (``python notebooks/build.py``): a test checks that they agree.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GUIDE = """
How to read it. The zoo's models are small (6-block ViTs of width 64, a 3-stage ResNet)
trained on 2 CPU cores on 64x64 synthetic shapes in clutter; `vitlens/vit-cls` was first
pretrained by predicting masked patches of photo crops, our stand-in for the paper's JFT-300M
pretraining (docs/ZOO.md). Findings that the paper ties to scale can therefore fail here,
and the table says so rather than hiding it. Read the control column first: a finding that a
random-init network of the same architecture earns too is a property of the architecture or
of the statistic, not of training, and is marked inconclusive however well the trained value
fits the paper. With internet, every notebook also runs on the paper's timm checkpoints
(`MODELS = "pretrained"`).
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="keep the run's outputs here")
    p.add_argument("--from", dest="src", type=Path, default=None,
                   help="use the FINDINGS.md of an earlier full (not --quick) run")
    args = p.parse_args(argv)
    if args.src is not None:
        path = args.src / "FINDINGS.md"
        out = args.src
    else:
        from vitlens.reproduce import reproduce

        out = args.out or Path(tempfile.mkdtemp(prefix="vitlens-reproduce-"))
        path = reproduce(out, progress=True)
    text = path.read_text()
    if "quick mode" in text:
        msg = f"{path} comes from a --quick run; docs/FINDINGS.md needs a full run"
        raise SystemExit(msg)
    text = re.sub(r"\[([^\]]+)\]\(figures/[^)]+\)", r"`\1`", text)
    text = text.replace(
        "the rules are documented in `vitlens/findings/`.",
        "the rules are documented in `vitlens/findings/`. Run `vitlens reproduce --out out` to "
        "get this file with every figure (PNG and SVG) in `out/figures/`.")
    head, sep, rest = text.partition("\n## ")
    (ROOT / "docs" / "FINDINGS.md").write_text(head + GUIDE + sep + rest)
    print(f"wrote {ROOT / 'docs' / 'FINDINGS.md'} (outputs in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
