"""``imgcls summary`` and ``imgcls visualize`` on a user's mistake: an option that would be
ignored or replaced by another value (a wrong answer with exit 0), an input too large to build
a net for, a test-image limit the figures did not handle. Each is refused with exit 2 and one
``imgcls: error:`` line naming the option, or works, the way a user runs the command."""

from __future__ import annotations

import re
import resource
from pathlib import Path

import pytest

from imgcls.__main__ import main
from imgcls.insight import InsightError
from imgcls.insight.cost import MAX_INPUT_CHANNELS, MAX_INPUT_SIDE, check_spec, net_from_spec
from tests.helpers import ROOT, run_imgcls


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *names: str) -> str:
    """Run ``imgcls argv``; check exit 2, nothing on stdout, one error line that names every
    one of ``names`` and no traceback; return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("imgcls: error:")]
    assert len(lines) == 1, err
    assert all(name in lines[0] for name in names), lines[0]
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- summary
@pytest.mark.parametrize("stride", ["0", "-2"])
@pytest.mark.parametrize("pool", [[], ["--pool"]], ids=["conv", "pool"])
def test_summary_refuses_a_stride_below_1(
    capsys: pytest.CaptureFixture[str], stride: str, pool: list[str]
) -> None:
    """``--stride 0`` used to print the output size for stride 1 (or K with --pool), exit 0."""
    line = _refused(
        capsys, ["summary", "--size", "28", "--kernel", "5", "--stride", stride, *pool], "--stride"
    )
    assert f"--stride {stride}" in line and ">= 1" in line


@pytest.mark.parametrize(("option", "value"), [("--size", "0"), ("--kernel", "0")])
def test_summary_refuses_a_size_or_kernel_below_1(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    argv = {"--size": "28", "--kernel": "5", option: value}
    _refused(capsys, ["summary", *[x for kv in argv.items() for x in kv]], f"{option} {value}")


def test_summary_stride_that_is_given_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    """The explicit stride, and the defaults (1; K with --pool), are what is computed."""
    for argv, first in [
        (["--size", "28", "--kernel", "5", "--stride", "3"], "28 → 8 "),
        (["--size", "28", "--kernel", "5"], "28 → 24 "),
        (["--size", "28", "--kernel", "2", "--pool"], "28 → 14 "),
        (["--size", "28", "--kernel", "2", "--pool", "--stride", "1"], "28 → 27 "),
    ]:
        capsys.readouterr()
        assert main(["summary", *argv]) == 0
        assert capsys.readouterr().out.startswith(first), argv


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--net", "lenet5", "--stride", "2"], ["--stride", "--size"]),
        (["--net", "lenet5", "--kernel", "3", "--pool"], ["--kernel, --pool", "--size"]),
        (["--net", "lenet5", "--padding", "same"], ["--padding", "--size"]),
        (["--size", "28", "--kernel", "3", "--out", "x"], ["--out"]),
        (["--size", "28", "--kernel", "3", "--input", "1,32,32"], ["--input", "--net"]),
        (["--ckpt", "runs/x", "--input", "3,32,32"], ["--input", "checkpoint"]),
        (["--ckpt", "runs/x", "--num_classes", "5"], ["--num_classes", "checkpoint"]),
        (["--ckpt", "runs/x", "--net_args", "{}"], ["--net_args", "checkpoint"]),
        (["--net", "lenet5", "--which", "last"], ["--which", "--ckpt"]),
    ],
)
def test_summary_refuses_an_option_it_would_ignore(
    capsys: pytest.CaptureFixture[str], argv: list[str], names: list[str]
) -> None:
    """These options used to be dropped without a word: the table printed (exit 0) was not the
    one asked for (a checkpoint's own input instead of --input, no stride at all...)."""
    _refused(capsys, ["summary", *argv], *names)


def _limit_line(shape: str) -> str:
    return (
        f"imgcls: error: --input {shape}: over the limit of {MAX_INPUT_CHANNELS} channels and "
        f"{MAX_INPUT_SIDE}×{MAX_INPUT_SIDE} pixels (the net built for it grows with H·W)"
    )


def test_summary_refuses_an_input_over_the_limit_before_building() -> None:
    """``--input 1,100000,100000`` used to build LeNet-5 for it: 0.9 GB, then a traceback from
    torch asking for 4.8 TB. The limit is checked before any net is built."""
    shape = "1,100000,100000"
    proc = run_imgcls(
        "summary", "--net", "lenet5", "--input", shape, cwd=ROOT, check=False, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("imgcls: error:")]
    assert lines == [_limit_line(shape)], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("shape", ["1,28,257", "5,28,28", "3,300,10"], ids=lambda s: s)
def test_summary_refuses_each_side_over_the_limit(
    capsys: pytest.CaptureFixture[str], shape: str
) -> None:
    assert _refused(capsys, ["summary", "--net", "lenet5", "--input", shape]) == _limit_line(shape)


def test_summary_builds_up_to_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """The largest input allowed still gets its table, with the right first layer."""
    side = MAX_INPUT_SIDE
    assert main(["summary", "--net", "lenet5", "--input", f"1,{side},{side}"]) == 0
    out = capsys.readouterr().out
    assert "input 1×256×256: 7,158,026 parameters" in out
    assert "| features.0 | Conv2d 1→6, 5×5 | 6×252×252 | 156 | 9,525,600 |" in out


def test_summary_refuses_too_many_classes(capsys: pytest.CaptureFixture[str]) -> None:
    _refused(capsys, ["summary", "--net", "lenet5", "--num_classes", "100000"], "--num_classes")


def test_net_from_spec_checks_the_limits_first() -> None:
    """The library refuses the same specs (before allocating: this would need terabytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InsightError, match="over the limit"):
        net_from_spec("lenet5", {}, (1, 100_000, 100_000))
    with pytest.raises(InsightError, match="number of classes"):
        net_from_spec("lenet5", {}, (1, 28, 28), num_classes=10**9)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000  # < 100 MB
    check_spec((MAX_INPUT_CHANNELS, MAX_INPUT_SIDE, MAX_INPUT_SIDE), 10)  # the limit itself


# ----------------------------------------------------------------------------- visualize
@pytest.mark.real_data
def test_visualize_with_one_test_image(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--limit 1`` used to end in an IndexError from the PCA figure (one image has one
    principal component); it draws every figure, the PCA one at the origin."""
    out = tmp_path / "figures"
    capsys.readouterr()
    argv = ["visualize", "--ckpt", str(trained_ckpt), "--limit", "1", "--out", str(out)]
    assert main([*argv, "--data_dir", str(real_data_root), "--no_progress"]) == 0
    stdout, err = capsys.readouterr()
    assert "Traceback" not in err
    assert re.search(r"accuracy (0\.00|100\.00) % on 1 mnist test images", stdout), stdout
    for name in ("filters", "feature_maps", "pca", "confusion", "misclassified"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"[imgcls] {name}: {png}" in stdout


@pytest.mark.real_data
def test_model_figures_pca_of_one_image_is_the_origin(
    trained_ckpt: Path, real_data_root: Path, tmp_path: Path
) -> None:
    from imgcls.insight.testset import load_test_set
    from imgcls.insight.visualize import model_figures
    from imgcls.training.checkpoint_io import load_classifier

    model = load_classifier(trained_ckpt)
    _, facts = model_figures(
        model, load_test_set("mnist", real_data_root, 1), tmp_path, log=lambda _: None
    )
    assert facts["n_images"] == 1 and facts["pca_explained"] == [0.0, 0.0]
    assert sum(map(sum, facts["confusion"])) == 1


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_visualize_refuses_a_limit_below_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, limit: str
) -> None:
    """Refused by name before the checkpoint is read or the output folder made."""
    argv = ["visualize", "--ckpt", str(tmp_path / "none.ckpt"), "--limit", limit]
    line = _refused(capsys, [*argv, "--out", str(tmp_path / "out")], "--limit must be >= 1")
    assert line.endswith(f"got {limit}")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- sweep
@pytest.mark.parametrize("nets", ["", " , ,"], ids=["empty", "commas"])
def test_sweep_refuses_an_empty_net_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, nets: str
) -> None:
    """``sweep subset --nets ''`` used to write an empty table (sweep.md / .csv / .json / .png)
    and exit 0; it is refused, and nothing is written."""
    out = tmp_path / "sweep"
    out.mkdir()
    line = _refused(capsys, ["sweep", "subset", "--nets", nets, "--out", str(out)], "--nets")
    assert line == (
        f"imgcls: error: --nets names no net (got {nets!r}); give comma-separated nets, "
        "e.g. --nets lenet5,mlp-32"
    )
    assert list(out.iterdir()) == []
