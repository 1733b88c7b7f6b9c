"""Score checkpoints and every ensemble of them on the validation and test images, so that an
ensemble's members are chosen on validation (docs/results.md, "The shipped models").

    python scripts/ensemble_scores.py CKPT CKPT ... [--shifts 0|4|8] [--hflip]

Each checkpoint is read with its own data module and validation split (its recorded
``val_size`` and split ``seed``: the same for every run of a recipe whatever
``--seed_everything`` was); an
ensemble is the average of its members' softmax probabilities, as ``imgcls export --ckpt A
--ckpt B ...`` computes it in one graph. ``--shifts 4`` (or 8) also averages each model's
probabilities over the input moved by 1 pixel in 4 (or 8) directions (test-time shifts, zero
fill). ``--hflip`` also scores each line with every view's mirror image averaged in, as ``imgcls
export --tta hflip`` does inside the graph (Fashion-MNIST; the mirror of a digit is not a
digit). Prints one line per checkpoint and per ensemble (and its ``+ hflip`` line):
validation and test accuracy, each with its negative log-likelihood (less noisy than the
accuracy where a split has only ~25 errors). A run trained without a validation split
(``val_size: 0``) has seen the other runs' validation images: any line with it says ``val -``.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import torch

from imgcls.data import trained_datamodule
from imgcls.data.transforms import translate
from imgcls.training.checkpoint_io import load_checkpoint, load_classifier

MOVES = {0: [], 4: [(1, 0), (-1, 0), (0, 1), (0, -1)]}
MOVES[8] = MOVES[4] + [(1, 1), (1, -1), (-1, 1), (-1, -1)]


def _softmax(model: torch.nn.Module, dm: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model's probabilities for a batch, normalised as in training (GPU-side steps)."""
    return torch.softmax(model(dm.on_after_batch_transfer((x, y), 0)[0]), 1)


Scores = dict[str, dict[str, torch.Tensor]]


def probabilities(ckpt: str, shifts: int, hflip: bool) -> tuple[Scores, tuple[int, int]]:
    """Per split: the probabilities averaged over the views (``plain``), over the views and
    their mirror images (``hflip``, where asked), and the ``labels``; and which validation
    split they are (its size and seed: runs score each other's images only if they match)."""
    model = load_classifier(ckpt).eval()
    raw = load_checkpoint(ckpt)
    dataset = (raw.get("hyper_parameters") or {}).get("dataset", "mnist")
    trained_with = raw.get("datamodule_hyper_parameters") or {}
    # the run's own validation split: val_size 0 (trained on all of it) leaves none to score
    held_out = {k: trained_with[k] for k in ("val_size", "seed") if k in trained_with}
    dm = trained_datamodule(dataset, trained_with, **held_out)
    dm.setup("fit")
    dm.setup("test")
    out: Scores = {}
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        parts: dict[str, list[torch.Tensor]] = {"plain": [], "hflip": [], "labels": []}
        with torch.no_grad():
            for x, y in loader:
                views = [x, *(translate(x, dy, dx) for dx, dy in MOVES[shifts])]
                plain = torch.stack([_softmax(model, dm, v, y) for v in views]).mean(0)
                parts["plain"].append(plain)
                if hflip:
                    mirrored = torch.stack([_softmax(model, dm, v.flip(-1), y) for v in views])
                    mirrored = mirrored.mean(0)
                    parts["hflip"].append((plain + mirrored) / 2)
                parts["labels"].append(y)
        out[split] = {k: torch.cat(v) for k, v in parts.items() if v}  # {}: no such split
    return out, (dm.n_val, dm.seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpts", nargs="+")
    ap.add_argument("--shifts", type=int, choices=sorted(MOVES), default=0)
    ap.add_argument("--hflip", action="store_true", help="average the mirror images too")
    args = ap.parse_args()
    scored = {c: probabilities(c, args.shifts, args.hflip) for c in args.ckpts}
    scores = {c: s for c, (s, _) in scored.items()}
    val_split = {c: v for c, (_, v) in scored.items()}
    name = {c: Path(c).parts[-5] if len(Path(c).parts) >= 5 else c for c in args.ckpts}
    for r in range(1, len(args.ckpts) + 1):
        for combo in itertools.combinations(args.ckpts, r):
            for way in ("plain", "hflip") if args.hflip else ("plain",):
                acc = []
                for split in ("val", "test"):
                    if any(not scores[c][split] for c in combo) or (
                        split == "val" and len({val_split[c] for c in combo}) > 1
                    ):  # a member trained on it (val_size 0), or different validation images
                        acc.append(f"{split} -")
                        continue
                    p = torch.stack([scores[c][split][way] for c in combo]).mean(0)
                    y = scores[combo[0]][split]["labels"]
                    nll = torch.nn.functional.nll_loss(p.clamp_min(1e-12).log(), y).item()
                    hit = (p.argmax(1) == y).float().mean().item() * 100
                    acc.append(f"{split} {hit:.2f} % (nll {nll:.4f})")
                label = " + ".join(name[c] for c in combo) + (" + hflip" if way == "hflip" else "")
                print(f"{label}: {', '.join(acc)}", flush=True)


if __name__ == "__main__":
    main()
