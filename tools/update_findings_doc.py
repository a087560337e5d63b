"""Regenerate docs/FINDINGS.md from a full ``vitlens reproduce`` run.

    python tools/update_findings_doc.py [--out DIR]

Runs ``vitlens reproduce --out DIR`` (default: a temporary folder) on the offline zoo, then
copies its FINDINGS.md to docs/FINDINGS.md, with the figure links pointing at where
``vitlens reproduce`` writes them.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="keep the run's outputs here")
    args = p.parse_args(argv)
    from vitlens.reproduce import reproduce

    out = args.out or Path(tempfile.mkdtemp(prefix="vitlens-reproduce-"))
    path = reproduce(out, progress=True)
    text = path.read_text()
    text = re.sub(r"\[([^\]]+)\]\(figures/[^)]+\)", r"`\1`", text)
    text = text.replace(
        "step; the thresholds are documented in `vitlens/findings/`.",
        "step; the thresholds are documented in `vitlens/findings/`. Run `vitlens reproduce "
        "--out out` to get this file with every figure (PNG and SVG) in `out/figures/`.")
    (ROOT / "docs" / "FINDINGS.md").write_text(text)
    print(f"wrote {ROOT / 'docs' / 'FINDINGS.md'} (outputs in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
