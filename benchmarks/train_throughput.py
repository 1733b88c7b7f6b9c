"""Training throughput: imgcls fit against a plain PyTorch loop and the conventional pipeline.

Measured in ONE run on ONE machine, with the same net, memory format (ImageClassifier's
default, NHWC), batch size, optimiser and epochs:

  (a) a plain PyTorch loop over in-memory tensors (the reference floor);
  (b) ``imgcls fit`` (the LightningCLI, its DataModule and ImageClassifier, as a user runs it);
  (c) the conventional Lightning pipeline: torchvision ``MNIST`` with per-sample
      ``ToTensor`` + ``Normalize``, a standard DataLoader, the same Trainer.

Seconds per training epoch exclude validation and checkpointing (``EpochTimer``); the first
epoch is a warm-up and is not counted. The three take turns for ``--rounds`` rounds (3), so a
slow spell of a shared machine hits them alike. Noise only ever slows an epoch down, so each
pipeline's figure is its fastest counted epoch (timeit's reasoning); medians are printed
beside it, and the ratios paired by round (each round's ratio of median epochs, then the
median over rounds). Prints images/s and the ratios b/a, c/b and c/a: b trains the same net
as a with more machinery around it, so c/a is the ceiling of c/b.

The plain loop gathers a batch the textbook way, ``images[idx]``; imgcls uses
``index_select``, which gathers a uint8 batch much faster than fancy indexing on a CPU.

Then, separately, time to 99 % MNIST test accuracy with ``imgcls fit`` and the fast LeNet-5
recipe (configs/recipes/mnist_lenet5_fast.yaml): training seconds only (start-up, the
per-epoch test evaluations and checkpointing excluded).

    python benchmarks/train_throughput.py          # full: 3 rounds of 3 epochs, then time-to-99%
    python benchmarks/train_throughput.py --quick  # CI smoke test: tiny subset, 1+1 epochs
    python benchmarks/train_throughput.py --speedrun  # speed-run vs fast LeNet-5, 5 seeds each

``--speedrun`` runs configs/recipes/mnist_speedrun.yaml and the fast LeNet-5 recipe in full
(their fixed epoch counts, no stopping on the test set), taking turns seed by seed, and prints
each one's training seconds and final test accuracy, min / median / max over the seeds.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgcls.data import MNISTDataModule  # noqa: E402
from imgcls.data.provision import default_root, ensure_dataset  # noqa: E402
from imgcls.models import create_model  # noqa: E402
from imgcls.training.callbacks import EpochTimer  # noqa: E402
from imgcls.training.cli import ImgclsCLI  # noqa: E402
from imgcls.training.lightning_module import ImageClassifier  # noqa: E402

MEAN, STD = 0.1307, 0.3081


def _build_cli(args: list[str]) -> ImgclsCLI:
    """``imgcls fit`` as the command line builds it, without running it (sys.argv kept clean)."""
    old = sys.argv
    sys.argv = ["imgcls"]
    try:
        return ImgclsCLI(args=args, run=False)
    finally:
        sys.argv = old


def _timer(cli: ImgclsCLI) -> EpochTimer:
    """The EpochTimer that `imgcls fit` always runs."""
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, EpochTimer))


def _default_channels_last() -> bool:
    return bool(inspect.signature(ImageClassifier).parameters["channels_last"].default)


def plain_loop(
    net_name: str, batch: int, epochs: int, subset: int | None, data_dir: Path
) -> list[float]:
    """(a) The reference: tensors in memory, a hand-written loop, nothing else."""
    torch.manual_seed(0)
    dm = MNISTDataModule(data_dir=str(data_dir), val_size=0, train_subset=subset)
    dm.setup("fit")
    assert dm.train_set is not None
    images, labels = dm.train_set.images, dm.train_set.labels
    # The memory format ImageClassifier trains in by default, so that b/a measures the pipeline's
    # overhead and not a layout's speed.
    layout = torch.channels_last if _default_channels_last() else torch.contiguous_format
    net = create_model(net_name).to(memory_format=layout)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(labels))
        for i in range(0, len(labels), batch):
            idx = perm[i : i + batch]
            x = ((images[idx].float() / 255 - MEAN) / STD).contiguous(memory_format=layout)
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def imgcls_fit(
    net_name: str, batch: int, epochs: int, subset: int | None, data_dir: Path, workdir: Path
) -> list[float]:
    """(b) ``imgcls fit`` exactly as the CLI builds it (progress bar, logging, checkpoints)."""
    # The CLI's defaults (no config), with the one-cycle schedule switched off: a and c train with
    # a constant learning rate, and the comparison is of pipelines, not of optimisers.
    args = [
        "--model.net",
        net_name,
        "--model.scheduler",
        "null",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--data.init_args.data_dir",
        str(data_dir),
        "--data.init_args.batch_size",
        str(batch),
        "--data.init_args.val_size",
        "0",
        "--trainer.default_root_dir",
        str(workdir / "runs"),
        "--trainer.logger.init_args.save_dir",
        str(workdir / "runs"),
    ]
    if subset:
        args += ["--data.init_args.train_subset", str(subset)]
    cli = _build_cli(args)
    timer = _timer(cli)
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer.epoch_seconds


class ConventionalMNIST(L.LightningDataModule):
    """(c) The textbook pipeline: a PIL image per sample, ToTensor + Normalize, default collate."""

    def __init__(self, data_dir: Path, batch: int, subset: int | None) -> None:
        super().__init__()
        self.data_dir, self.batch, self.subset = data_dir, batch, subset

    def setup(self, stage: str) -> None:
        from torchvision import datasets, transforms

        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
        ds = datasets.MNIST(str(self.data_dir), train=True, transform=tf, download=False)
        self.ds = torch.utils.data.Subset(ds, range(self.subset)) if self.subset else ds

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.ds, batch_size=self.batch, shuffle=True, num_workers=0
        )


def conventional(
    net_name: str, batch: int, epochs: int, subset: int | None, data_dir: Path, workdir: Path
) -> list[float]:
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[timer],
        logger=False,
        default_root_dir=str(workdir / "conventional"),
        enable_checkpointing=False,
    )
    trainer.fit(ImageClassifier(net=net_name), ConventionalMNIST(data_dir, batch, subset))
    return timer.epoch_seconds


def time_to_accuracy(
    target: float, data_dir: Path, workdir: Path, recipe: Path, accelerator: str = "cpu"
) -> tuple[float | None, int, float]:
    """Training seconds until test accuracy >= target, with the fast LeNet-5 recipe."""

    class TestEachEpoch(L.Callback):
        def __init__(self) -> None:
            self.train_s = 0.0
            self.hit: float | None = None
            self.epochs = 0
            self.acc = 0.0

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.train_s += timer.epoch_seconds[-1]
            self.epochs += 1
            self.acc = _test_accuracy(pl_module, trainer.datamodule)
            print(
                f"  epoch {self.epochs}: test acc {self.acc:.4f} "
                f"after {self.train_s:.1f} s of training",
                flush=True,
            )
            if self.acc >= target and self.hit is None:
                self.hit = self.train_s
                trainer.should_stop = True

    # The recipe's own epoch count: its one-cycle schedule is laid out over exactly those epochs.
    cli = _build_cli(_recipe_args(recipe, data_dir, workdir, accelerator))
    timer = _timer(cli)  # registered before the test callback, so its epoch time is ready
    probe = TestEachEpoch()
    cli.trainer.callbacks.append(probe)
    cli.datamodule.setup("test")
    cli.trainer.fit(cli.model, cli.datamodule)
    return probe.hit, probe.epochs, probe.acc


def _recipe_args(recipe: Path, data_dir: Path, workdir: Path, accelerator: str) -> list[str]:
    """A recipe on one device, its runs under ``workdir``, without a progress bar."""
    runs = str(workdir / "runs")
    return [
        *("--config", str(recipe), "--trainer.accelerator", accelerator),
        *("--trainer.devices", "1", "--data.init_args.data_dir", str(data_dir)),
        *("--trainer.default_root_dir", runs, "--trainer.logger.init_args.save_dir", runs),
        *("--trainer.enable_progress_bar", "false"),
    ]


def _test_accuracy(pl_module: L.LightningModule, dm: MNISTDataModule) -> float:
    """Accuracy on the 10,000 test images, in the module's own forward (layout included)."""
    was_training = pl_module.training
    pl_module.eval()
    correct = 0
    with torch.no_grad():
        images, labels = dm.test_set.images, dm.test_set.labels
        for i in range(0, len(labels), 2000):
            x = (images[i : i + 2000].to(pl_module.device).float() / 255 - MEAN) / STD
            correct += int((pl_module(x).argmax(1).cpu() == labels[i : i + 2000]).sum())
    pl_module.train(was_training)
    return correct / len(labels)


def recipe_run(recipe: Path, seed: int, data_dir: Path, workdir: Path) -> tuple[float, float]:
    """One full run of a recipe, all its epochs (no stopping on the test set).

    Returns:
        (training seconds, summed over epochs as EpochTimer measures them; test accuracy at
        the end).
    """
    args = _recipe_args(recipe, data_dir, workdir, "cpu")
    args += ["--seed_everything", str(seed), "--trainer.enable_checkpointing", "false"]
    cli = _build_cli([*args, "--trainer.enable_model_summary", "false"])
    timer = _timer(cli)
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.datamodule.setup("test")
    return sum(timer.epoch_seconds), _test_accuracy(cli.model, cli.datamodule)


def compare_recipes(recipes: list[Path], seeds: int, data_dir: Path, workdir: Path) -> None:
    """Each recipe over seeds 1..``seeds``, taking turns seed by seed: training seconds and
    final test accuracy, min / median / max."""
    results: dict[Path, list[tuple[float, float]]] = {r: [] for r in recipes}
    for seed in range(1, seeds + 1):
        for recipe in recipes:
            train_s, acc = recipe_run(recipe, seed, data_dir, workdir)
            results[recipe].append((train_s, acc))
            print(f"  {recipe.stem} seed {seed}: {train_s:.2f} s, test acc {acc:.4f}", flush=True)
    print(
        f"\n| recipe ({seeds} seeds) | train s min / median / max "
        "| test acc min / median / max | mean acc |\n|---|---|---|---|"
    )
    for recipe, runs in results.items():
        t = sorted(r[0] for r in runs)
        a = sorted(r[1] for r in runs)
        print(
            f"| {recipe.stem} | {t[0]:.2f} / {statistics.median(t):.2f} / {t[-1]:.2f} "
            f"| {a[0]:.4f} / {statistics.median(a):.4f} / {a[-1]:.4f} "
            f"| {statistics.mean(a):.4f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--net", default="lenet5")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument(
        "--epochs", type=int, default=3, help="epochs per pipeline; the first is warm-up"
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds in which a, b and c take turns")
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke test: 2,000 images, 2 epochs, 1 round, no time-to-99%%",
    )
    p.add_argument("--data_dir", type=Path, default=None)
    p.add_argument(
        "--recipe",
        type=Path,
        default=ROOT / "configs/recipes/mnist_lenet5_fast.yaml",
        help="config for the time-to-99%% run",
    )
    p.add_argument("--only_tta", action="store_true", help="only the time-to-99%% run")
    p.add_argument(
        "--speedrun",
        action="store_true",
        help="only the speed-run recipe beside the fast LeNet-5 recipe, full runs over --seeds "
        "seeds: training seconds and final test accuracy, min / median / max",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds 1..N for --speedrun")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/imgcls-bench"))
    args = p.parse_args()
    data_dir = args.data_dir or default_root()
    ensure_dataset("mnist", data_dir)
    subset = 2000 if args.quick else None
    epochs = 2 if args.quick else args.epochs
    rounds = 1 if args.quick else args.rounds
    torch.set_num_threads(torch.get_num_threads())
    print(
        f"# train throughput: {args.net}, batch {args.batch}, Adam, "
        f"{epochs} epochs (first = warm-up) x {rounds} rounds, "
        f"{'2,000' if subset else '60,000'} images, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    if args.speedrun:
        recipes = [ROOT / "configs/recipes/mnist_speedrun.yaml", args.recipe]
        compare_recipes(recipes, args.seeds, data_dir, args.workdir)
        return
    if args.only_tta:
        hit, ep, acc = time_to_accuracy(0.99, data_dir, args.workdir, args.recipe)
        print(f"time to 99%: {hit} s of training ({ep} epochs, test acc {acc:.4f})")
        return
    pipelines = (
        (
            "a) plain PyTorch loop",
            lambda: plain_loop(args.net, args.batch, epochs, subset, data_dir),
        ),
        (
            "b) imgcls fit",
            lambda: imgcls_fit(args.net, args.batch, epochs, subset, data_dir, args.workdir),
        ),
        (
            "c) conventional pipeline",
            lambda: conventional(args.net, args.batch, epochs, subset, data_dir, args.workdir),
        ),
    )
    # The pipelines take turns, round after round, so a slow spell of a shared machine hits all
    # three alike instead of one.
    epochs_of: dict[str, list[float]] = {name: [] for name, _ in pipelines}
    rounds_of: dict[str, list[float]] = {name: [] for name, _ in pipelines}
    for r in range(rounds):
        for name, fn in pipelines:
            times = fn()
            counted = times[1:] if len(times) > 1 else times
            epochs_of[name] += counted
            rounds_of[name].append(statistics.median(counted))
            print(
                f"  round {r + 1}/{rounds} {name}: epochs {[round(t, 2) for t in times]}",
                flush=True,
            )
    # Noise on a shared machine only ever slows an epoch down, so the fastest counted epoch is the
    # best estimate of a pipeline's cost (timeit's reasoning); the medians are printed beside it.
    best = {name: min(t) for name, t in epochs_of.items()}
    median = {name: statistics.median(t) for name, t in epochs_of.items()}
    n = subset or 60000
    print(
        "\n| pipeline | s / epoch (best) | s / epoch (median) | images / s (best) |"
        "\n|---|---|---|---|"
    )
    for name in epochs_of:
        print(f"| {name} | {best[name]:.2f} | {median[name]:.2f} | {n / best[name]:,.0f} |")
    a, b, c = best.values()
    ma, mb, mc = median.values()
    # Paired: the ratio of the two pipelines' median epochs within each round (they ran back to
    # back, so a slow spell of the machine mostly hits both sides of it), then its median over
    # the rounds.
    ra, rb, rc = rounds_of.values()
    pba = statistics.median(y / x for x, y in zip(ra, rb, strict=True))
    pcb = statistics.median(y / x for x, y in zip(rb, rc, strict=True))
    pca = statistics.median(y / x for x, y in zip(ra, rc, strict=True))
    print(
        f"\nb/a = {b / a:.3f}   (target <= 1.10; medians {mb / ma:.3f}; paired by round {pba:.3f})"
        f"\nc/b = {c / b:.2f}   (target >= 2.2; medians {mc / mb:.2f}; paired by round {pcb:.2f})"
        # b trains the same net as a, so it cannot beat a: c/a is the most c/b could be.
        f"\nc/a = {c / a:.2f}   (the ceiling of c/b; medians {mc / ma:.2f}; "
        f"paired by round {pca:.2f})"
    )
    if not args.quick:
        hit, ep, acc = time_to_accuracy(0.99, data_dir, args.workdir, args.recipe)
        if hit is None:
            print(f"\ntime to 99% test accuracy: not reached in {ep} epochs (best {acc:.4f})")
        else:
            print(
                f"\ntime to 99% test accuracy: {hit:.1f} s of training "
                f"({ep} epochs, test acc {acc:.4f})   (target <= 20 s)"
            )


if __name__ == "__main__":
    main()
