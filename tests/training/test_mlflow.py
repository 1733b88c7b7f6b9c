"""MLflow against a real tracking server (``mlflow server``, SQLite backend, a local artifact
root, on a free port), read back with ``MlflowClient``: a fit's params, metrics and artifacts,
the exported ONNX model, and a server that is not there."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FAST, ROOT, free_port, run_imgcls

CONFIGS = ROOT / "configs"
TINY = ["--data.val_size", "100", "--data.batch_size", "50", "--model.net", "mlp"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server of the module's own; its URI."""
    pytest.importorskip("mlflow", reason="pip install 'imgcls[train]' (mlflow)")
    work = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
         "--artifacts-destination", str(work / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    pytest.fail(
                        "mlflow server did not start:\n" + (work / "server.log").read_text()
                    )
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def fitted(server: str, tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch tiny run logged to the server: its run folder (cwd: its parent's parent)."""
    data, env = tiny
    work = tmp_path_factory.mktemp("fit")
    run_imgcls(
        "fit", "-c", str(CONFIGS / "logger/mlflow.yaml"), *FAST, *TINY,
        "--data.data_dir", str(data), "--trainer.max_epochs", "2",
        "--trainer.log_every_n_steps", "3",
        cwd=work, env={**env, "MLFLOW_TRACKING_URI": server},
    )  # fmt: skip
    return work / "runs" / "mnist-mlp" / "version_0"


def the_run(server: str, fitted: Path):
    from mlflow import MlflowClient

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.mlflow
def test_the_server_holds_the_fit(server: str, fitted: Path) -> None:
    client, run = the_run(server, fitted)
    assert run.info.run_name == "mnist-mlp/version_0" and run.info.status == "FINISHED"
    assert run.data.tags["imgcls.run_dir"] == str(fitted.resolve())
    params = run.data.params
    assert params["net"] == "mlp" and params["config/model/net"] == "mlp"
    assert params["config/trainer/max_epochs"] == "2"
    with (fitted / "metrics.csv").open() as fh:
        val = [float(r["val/acc"]) for r in csv.DictReader(fh) if r.get("val/acc")]
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(val)
    assert "lr-Adam" in run.data.metrics and "train/loss_epoch" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.yaml", "checkpoints"}
    ckpts = [a for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert [a.path for a in ckpts] == ["checkpoints/best.ckpt"]
    assert ckpts[0].file_size == (fitted / "checkpoints" / "best.ckpt").stat().st_size


@pytest.mark.mlflow
def test_export_logs_the_gated_onnx_model_into_the_runs_mlflow_run(
    server: str, fitted: Path, tiny
) -> None:
    data, env = tiny
    work = fitted.parent.parent.parent
    proc = run_imgcls(
        "export", "--ckpt", str(fitted), "--data_dir", str(data), "--parity_subset", "100",
        "--no-features", "--mlflow", server, "--json", cwd=work, env=env,
    )  # fmt: skip
    summary = json.loads(proc.stdout)
    client, run = the_run(server, fitted)  # the same MLflow run, no new one
    assert summary["mlflow_run_id"] == run.info.run_id
    onnx = {a.path for a in client.list_artifacts(run.info.run_id, "onnx")}
    assert {"onnx/model.onnx", "onnx/parity.json", "onnx/metadata.json"} <= onnx
    assert run.data.metrics["export/onnx_accuracy"] == pytest.approx(summary["onnx_accuracy"])


def test_an_unreachable_server_is_one_line_before_training(tiny, tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="pip install 'imgcls[train]' (mlflow)")
    data, env = tiny
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_imgcls(
        "fit", "-c", str(CONFIGS / "logger/mlflow.yaml"), *FAST, *TINY,
        "--data.data_dir", str(data), cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": uri},
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"imgcls: error: the MLflow tracking server {uri} cannot be reached")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()
    assert os.listdir(tmp_path) == []
