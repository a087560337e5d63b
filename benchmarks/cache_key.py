"""What the cache key costs per call: the model fingerprint, rehashed on every call.

    python benchmarks/cache_key.py

The weights' bytes (SHA-256), the module tree's attributes and the classes' code are hashed
on every ``vitlens.cka(..., cache=True)`` call, so that no edit is missed; ``cache=False``
computes no key. Prints the mean time per fingerprint of a ViT-B/16 (86M parameters, random
init) and of the zoo's ``vit-cls``.
"""

from __future__ import annotations

import time

import timm

import vitlens
from vitlens.cache_keys import model_fingerprint


def per_call(model, repeats: int) -> float:
    model_fingerprint(model)  # warm: imports, page cache
    t = time.perf_counter()
    for _ in range(repeats):
        model_fingerprint(model)
    return (time.perf_counter() - t) / repeats


def main() -> None:
    vit_b = timm.create_model("vit_base_patch16_224", pretrained=False)
    zoo = vitlens.load_model("vitlens/vit-cls")
    print(f"vit_base_patch16_224: {per_call(vit_b, 5):.3f} s per fingerprint; "
          f"vitlens/vit-cls: {per_call(zoo, 20) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
