"""The models and configs shipped in the package: each shipped model against what its export
recorded (test accuracy on the official test set, metadata, sha256, provenance), names wherever
--model and -c are taken, and the wheel that carries them. No training: the models are
trained already (nox -s zoo)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imgcls.__main__ import main
from imgcls.commands import page, serve
from imgcls.commands.models import _made, _net
from imgcls.deploy.classifier import OnnxClassifier
from imgcls.deploy.idx import read_idx
from imgcls.deploy.zoo import (
    DEFAULT_MODEL,
    PROVENANCE_FILE,
    ZOO_DIR,
    recipes_and_seeds,
    resolve_model,
    shipped_info,
    shipped_models,
)
from imgcls.errors import ConfigError
from imgcls.export.model_card import _provenance_lines
from imgcls.shipped import configs_dir, resolve_config, shipped_configs

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = shipped_models()
WHEEL_MAX_MB = 15


MAX_FILE_MB = 5  # each shipped ONNX file (the wheel as a whole: nox -s deploy, 15 MB)


def test_the_default_and_the_named_models_ship() -> None:
    assert DEFAULT_MODEL == "mnist"
    assert {"mnist", "fashion_mnist"} <= set(SHIPPED), SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_match_their_records(name: str) -> None:
    folder = ZOO_DIR / name
    parity = json.loads((folder / "parity.json").read_text())
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    assert parity["passed"] is True and parity["full_test_set"] is True
    for file, digest in parity["model_sha256"].items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, file
    # metadata.json is what model.onnx carries, and the card says how it was made
    clf = OnnxClassifier(folder / "model.onnx", device="cpu")
    recorded = json.loads((folder / "metadata.json").read_text())
    for key in ("dataset", "net", "net_args", "class_names", "mean", "std"):
        assert clf.metadata[key] == recorded[key], key
    card = (folder / "README.md").read_text()
    assert provenance["command"] in card
    members = provenance.get("members") or [provenance]
    recipes, seeds = recipes_and_seeds(provenance)
    for m in members:
        assert str(m["commit"]) in card or str(m["commit"])[:12] in card
    # each recipe exists, and the card's first provenance line names every recipe and seed
    # (an ensemble's whole record names none of its own: no member stands for the rest)
    assert all((ROOT / r).is_file() for r in recipes)
    line = next(x for x in card.splitlines() if x.startswith("- recipe"))
    assert all(f"`{r}`" in line for r in recipes), line
    assert line.split(", seed", 1)[1].split("(")[0].strip(" s") == ", ".join(map(str, seeds))
    if len(members) > 1:
        assert "recipe" not in provenance and "seed" not in provenance
    assert provenance["train_wall_s"] > 0 and isinstance(provenance["parameters"], int)
    if recorded["dataset"] == "mnist" and recorded["net"] != "mlp":
        assert (folder / "model.features.onnx").is_file()  # the page's feature maps
    if name == DEFAULT_MODEL:
        assert provenance["parameters"] <= 100_000
    # model files committed to the repository stay small: a bigger model is not shipped
    for onnx_file in folder.glob("*.onnx"):
        assert onnx_file.stat().st_size <= MAX_FILE_MB * 1e6, f"{onnx_file}: over {MAX_FILE_MB} MB"


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_scores_its_recorded_test_accuracy(name: str, real_data_root: Path) -> None:
    from imgcls.data.provision import raw_dir, verify

    folder = ZOO_DIR / name
    recorded = json.loads((folder / "parity.json").read_text())["fp32"]["onnx_accuracy"]
    clf = OnnxClassifier(folder / "model.onnx", device="cpu")
    dataset = clf.metadata["dataset"]
    verify(real_data_root, dataset)
    raw = raw_dir(real_data_root, dataset)
    images = read_idx(raw / "t10k-images-idx3-ubyte")
    labels = read_idx(raw / "t10k-labels-idx1-ubyte").astype(np.int64)
    assert len(labels) == 10_000
    pred, _ = clf.predict(images)
    correct = int((pred == labels).sum())
    # another CPU's float rounding may flip an image that sits on a decision boundary
    assert abs(correct - round(recorded * 10_000)) <= 2, (correct, recorded)


def test_names_resolve_and_paths_still_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_model("mnist") == ZOO_DIR / "mnist" / "model.onnx"
    assert resolve_model("no/such/model.onnx") == Path("no/such/model.onnx")  # the loader says
    # a local export folder named like a shipped model is the user's
    shutil.copytree(ZOO_DIR / "mnist", tmp_path / "mnist")
    assert resolve_model("mnist") == Path("mnist") / "model.onnx"
    assert resolve_model(tmp_path / "mnist" / "model.onnx") == tmp_path / "mnist" / "model.onnx"
    with pytest.raises(ConfigError, match="did you mean mnist") as e:
        resolve_model("mnst")
    assert "\n" not in str(e.value)


def test_serve_and_page_default_to_mnist_infer_needs_a_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    for command in (serve, page):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        args = parser.parse_args(["--out", "x"] if command is page else [])
        assert args.model == "mnist"
    with pytest.raises(SystemExit) as e:  # argparse's own exit: --model is required
        main(["infer", "x.png"])
    assert e.value.code == 2 and "--model" in capsys.readouterr().err
    assert main(["infer", "--model", "mnst", "x.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean mnist" in err


def test_models_lists_every_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed["models"]] == SHIPPED
    for m in listed["models"]:
        info = shipped_info(m["name"])
        assert m["sha256"] == hashlib.sha256(Path(info["path"]).read_bytes()).hexdigest()
        _, seeds = recipes_and_seeds(m["provenance"])
        assert 0.8 < m["test_accuracy"] <= 1
        assert all(f"--seed_everything {seed}" in m["provenance"]["command"] for seed in seeds)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert f"{name}: configs/" in out


def test_an_ensemble_is_listed_by_its_members_and_their_seeds() -> None:
    resnet = {"net": "resnet", "net_args": {"widths": [16, 32], "blocks": 3}}
    info = {
        "net": "ensemble of 3",
        "net_args": {"members": ["resnet", "resnet", "mlp"], "tta": ["hflip"]},
        "members": [resnet, resnet, {"net": "mlp", "net_args": {"hidden": [128]}}],
    }
    assert _net(info) == "2 x resnet 16-32 x3 + 1 x mlp 128 + hflip"
    assert _net({**resnet, "members": []}) == "resnet 16-32 x3"
    member = {"recipe": "configs/recipes/a.yaml", "seed": 42, "trained_on": "2 cores"}
    ensemble = {"commit": "0123456789abcdef", "train_wall_s": 600.0}
    ensemble["members"] = [member, {**member, "seed": 44}]
    assert _made(ensemble) == (
        "configs/recipes/a.yaml, seeds 42, 44, commit 0123456789ab, trained in 10 min (2 cores)"
    )
    single = {**member, **ensemble, "members": []}
    assert _made(single).startswith("configs/recipes/a.yaml, seed 42, ")
    # two recipes, two commits: each is named once, none stands for the whole
    other = {**member, "recipe": "configs/recipes/b.yaml", "seed": 43, "commit": "fedcba987654321"}
    mixed = {"train_wall_s": 600.0, "members": [{**member, "commit": "0123456789abcdef"}, other]}
    assert _made(mixed).startswith(
        "configs/recipes/a.yaml, configs/recipes/b.yaml, seeds 42, 43, "
        "commits 0123456789ab, fedcba987654, "
    )
    card = "\n".join(_provenance_lines({**mixed, "command": "x"}))
    assert card.startswith(
        "- recipes: `configs/recipes/a.yaml`, `configs/recipes/b.yaml`, seeds 42, 43 "
    )
    assert "the imgcls commit of each training" in card
    # no machine note for the whole: each training's own
    assert "RUN2: `configs/recipes/b.yaml`, seed 43, commit `fedcba987654`, ? (2 cores)" in card
    # a commit with a file beside it keeps saying so; one commit is not "commits"
    dirty = {**other, "commit": "0123456789abcdef+uncommitted changes"}
    mixed["members"] = [{**member, "commit": "0123456789abcdef"}, dirty, dirty]
    assert ", commits 0123456789ab, 0123456789ab+uncommitted changes, " in _made(mixed)
    card = "\n".join(_provenance_lines({**mixed, "command": "x"}))
    assert (
        "RUN3: `configs/recipes/b.yaml`, seed 43, commit `0123456789ab+uncommitted changes`" in card
    )
    mixed["members"] = [dirty, dirty]
    assert ", commit 0123456789ab+uncommitted changes, " in _made(mixed)


def test_configs_resolve_by_name_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    best = str(configs_dir() / "recipes" / "mnist_best.yaml")
    for given in ("recipes/mnist_best", "recipes/mnist_best.yaml", "configs/recipes/mnist_best"):
        assert resolve_config(given) == best
    # a tune file's relative configs: [...] resolve beside the shipped file
    tune = Path(resolve_config("tune/lenet5"))
    assert (tune.parent / "../model/lenet5.yaml").resolve().is_file()
    # a local file of the same name wins
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mnist_best.yaml").write_text("trainer: {max_epochs: 1}\n")
    assert resolve_config("recipes/mnist_best.yaml") == "recipes/mnist_best.yaml"
    assert main(["fit", "-c", "recipes/mnist_bst"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "recipes/mnist_best" in err
    assert main(["tune", "--config=tune/lenet"]) == 2
    assert "tune/lenet5" in capsys.readouterr().err
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "recipes/mnist_best" in out and "Best-net recipe, MNIST" in out
    assert len(shipped_configs()) == len(list((ROOT / "configs").rglob("*.yaml")))


@pytest.mark.slow
def test_the_wheel_carries_configs_and_models_within_its_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "imgcls", src / "imgcls", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "configs", src / "configs")
    for name in ("pyproject.toml", "README.md", "setup.py", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "wheel"), str(src)],
        check=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("imgcls-*.whl")
    assert wheel.stat().st_size <= WHEEL_MAX_MB * 1e6
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in shipped_configs():
        assert f"imgcls/configs/{config}.yaml" in names
    for model in SHIPPED:
        for file in (ZOO_DIR / model).iterdir():
            assert f"imgcls/zoo/{model}/{file.name}" in names
