"""Score checkpoints and every ensemble of them on the validation and test images, so that an
ensemble's members are chosen on validation (docs/results.md, "The shipped models").

    python scripts/ensemble_scores.py CKPT CKPT ... [--shifts 0|4|8] [--hflip]

Each checkpoint is read with its own data module (the validation split is the data module's
seeded one, the same for every run of a recipe whatever ``--seed_everything`` was); an
ensemble is the average of its members' softmax probabilities, as ``imgcls export --ckpt A
--ckpt B ...`` computes it in one graph. ``--shifts 4`` (or 8) also averages each model's
probabilities over the input moved by 1 pixel in 4 (or 8) directions (test-time shifts, zero
fill). ``--hflip`` also averages each model's probabilities over the mirror image of every
view, as ``imgcls export --tta hflip`` does inside the graph (Fashion-MNIST; the mirror of a
digit is not a digit). Prints one line per checkpoint and per ensemble: validation and test
accuracy.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from imgcls.data import trained_datamodule
from imgcls.data.transforms import translate
from imgcls.training.checkpoint_io import load_checkpoint, load_classifier

MOVES = {0: [], 4: [(1, 0), (-1, 0), (0, 1), (0, -1)]}
MOVES[8] = MOVES[4] + [(1, 1), (1, -1), (-1, 1), (-1, -1)]


def probabilities(
    ckpt: str, shifts: int, hflip: bool
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    model = load_classifier(ckpt).eval()
    raw = load_checkpoint(ckpt)
    dataset = (raw.get("hyper_parameters") or {}).get("dataset", "mnist")
    dm = trained_datamodule(dataset, raw.get("datamodule_hyper_parameters"))
    dm.setup("fit")
    dm.setup("test")
    out = {}
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        probs, labels = [], []
        with torch.no_grad():
            for x, y in loader:
                views = [x, *(translate(x, dy, dx) for dx, dy in MOVES[shifts])]
                views += [v.flip(-1) for v in views] if hflip else []
                p = [
                    torch.softmax(model(dm.on_after_batch_transfer((v, y), 0)[0]), 1) for v in views
                ]
                probs.append(torch.stack(p).mean(0))
                labels.append(y)
        out[split] = (torch.cat(probs), torch.cat(labels))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpts", nargs="+")
    ap.add_argument("--shifts", type=int, choices=sorted(MOVES), default=0)
    ap.add_argument("--hflip", action="store_true", help="average the mirror images too")
    args = ap.parse_args()
    scores = {c: probabilities(c, args.shifts, args.hflip) for c in args.ckpts}
    name = {c: Path(c).parts[-5] if len(Path(c).parts) >= 5 else c for c in args.ckpts}
    for r in range(1, len(args.ckpts) + 1):
        for combo in itertools.combinations(args.ckpts, r):
            acc = []
            for split in ("val", "test"):
                p = torch.stack([scores[c][split][0] for c in combo]).mean(0)
                y = scores[combo[0]][split][1]
                acc.append(f"{split} {(p.argmax(1) == y).float().mean().item() * 100:.2f} %")
            print(" + ".join(name[c] for c in combo) + ": " + ", ".join(acc), flush=True)


if __name__ == "__main__":
    main()
