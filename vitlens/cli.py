"""The ``vitlens`` command: ``cka``, ``reproduce`` and ``cache``. Works under ``torchrun``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import VitlensError
from .outputs import CKA_OUTPUTS, OutputFolder


def _layers(value: str | None) -> str | list[str] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 else parts


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        msg = f"must be a whole number >= 1, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return n


def _add_cka(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cka", help="minibatch CKA between the layers of one or two models",
                       description="Compute minibatch CKA and write the result file plus PNG "
                                   "and SVG heatmaps.")
    p.add_argument("--model-a", required=True, help="timm name or vitlens/<zoo name>")
    p.add_argument("--model-b", default=None, help="second model (default: model A itself)")
    p.add_argument("--images", required=True, help="a folder of images, or 'samples'")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace cka.npz/png/svg in --out even if vitlens did not write them")
    p.add_argument("--layers-a", default=None, help="'blocks' (default), 'all', a kind, or names, comma-separated")
    p.add_argument("--layers-b", default=None, help="as --layers-a, for model B")
    p.add_argument("--token-mode", default="flatten",
                   choices=["flatten", "cls", "mean", "tokens", "spatial"])
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--n-images", type=_positive_int, default=None,
                   help="use only the first N images")
    p.add_argument("--samples", type=_positive_int, default=64,
                   help="with --images samples: how many (photos, then random crops)")
    p.add_argument("--random-init", action="store_true",
                   help="timm models with random weights (no download)")
    p.add_argument("--seed", type=int, default=0,
                   help="with --random-init: the seed of the random weights (the same on "
                        "every torchrun rank)")
    p.add_argument("--weights-a", default=None, help="local weights file for model A")
    p.add_argument("--weights-b", default=None, help="local weights file for model B")
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default="float32",
                   choices=["float32", "bfloat16", "float16", "auto"],
                   help="forward-pass precision; 'auto' keeps bfloat16 only if batch 1's CKA "
                        "is within 1e-4 of float32")
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the result cache (see 'vitlens cache')")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_cka)


def _load(name: str, weights: str | None, random_init: bool, seed: int = 0,
          flag: str = "--weights-a"):
    import torch

    from .errors import WeightsUnavailableError
    from .models import load_model

    if random_init and weights is None:
        torch.manual_seed(seed)  # every rank (and every run) builds the same weights
    try:
        return load_model(name, pretrained=not random_init, weights=weights)
    except WeightsUnavailableError as err:
        msg = (f"{err} On the command line, pass the downloaded file with {flag} "
               "/path/to/model.safetensors, or use --random-init, or a vitlens/<zoo name> "
               "model.")
        raise WeightsUnavailableError(msg) from err


def _run_cka(args: argparse.Namespace) -> int:
    from . import distributed
    from .api import cka
    from .datasets import FolderImages, samples
    from .similarity._run_checks import check_device

    folder = OutputFolder(args.out, args.overwrite)
    folder.check(CKA_OUTPUTS)  # before any work
    check_device(args.device, flag="--device")
    # a missing or empty folder fails here, before any model is loaded
    images = samples(args.samples) if args.images == "samples" else FolderImages(args.images)
    model_a = _load(args.model_a, args.weights_a, args.random_init, args.seed)
    model_b = None
    if args.model_b is not None and args.model_b != args.model_a:
        model_b = _load(args.model_b, args.weights_b, args.random_init, args.seed + 1,
                        flag="--weights-b")
    result = cka(model_a, images, model_b, layers_a=_layers(args.layers_a),
                 layers_b=_layers(args.layers_b), token_mode=args.token_mode,
                 batch_size=args.batch_size, device=args.device,
                 progress=not args.no_progress, n_images=args.n_images,
                 cache=not args.no_cache, precision=args.precision)
    if not distributed.is_main():  # under torchrun, rank 0 writes
        return 0
    # each file checked again as it is written, and recorded in the folder's manifest
    path = folder.save_result(result, "cka.npz")
    figs = folder.save_chart(result.chart(), "cka")
    print(f"wrote {path}, {', '.join(str(f) for f in figs)}")
    return 0


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run every analysis of the paper on the offline zoo")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--overwrite", action="store_true",
                   help="replace FINDINGS.md, findings.json, figures/ and results/ in --out even "
                        "if vitlens did not write them")
    p.add_argument("--quick", action="store_true", help="fewer images, for a smoke run")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce

    # reproduce() checks --out before any work (vitlens.outputs)
    reproduce(args.out, quick=args.quick, progress=not args.no_progress,
              overwrite=args.overwrite)
    return 0


def _add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show or empty the result cache",
                       description="The result cache lives in $VITLENS_CACHE_DIR, else "
                                   "$XDG_CACHE_HOME/vitlens, else ~/.cache/vitlens.")
    p.add_argument("action", nargs="?", default="info", choices=["info", "dir", "clear"],
                   help="info (default): where it is and its size; dir: print the folder; "
                        "clear: delete every cached result and checkpoint (only vitlens's "
                        "own entries: other files in the folder are never touched)")
    p.add_argument("--kind", default=None, help="with clear: only this kind (e.g. cka)")
    p.set_defaults(func=_run_cache)


def _run_cache(args: argparse.Namespace) -> int:
    from . import cache

    if args.action == "dir":
        print(cache.cache_dir())
    elif args.action == "clear":
        try:
            removed = cache.clear(args.kind)
        except ValueError as err:  # a --kind that is not a simple name
            print(f"vitlens cache clear: {err}", file=sys.stderr)
            return 2
        print(f"removed {removed} cached file{'s' if removed != 1 else ''} from "
              f"{cache.cache_dir()}")
    else:
        info = cache.info()
        print(f"{info['dir']}: {info['files']} files, {info['bytes'] / 2**20:.1f} MiB")
    return 0


_DISTRIBUTED_COMMANDS = ("cka", "reproduce")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitlens", description="Look inside vision models.")
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"vitlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_cka(sub)
    _add_reproduce(sub)
    _add_cache(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in _DISTRIBUTED_COMMANDS:
            from . import distributed

            with distributed.session():  # joins torchrun's group; a no-op in one process
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except (VitlensError, KeyError, ValueError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"vitlens {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
