"""The deployment side imports in an interpreter where the training stack cannot be imported.

``pip install imgcls`` (no extras) has no torch, torchvision, Lightning, torchmetrics, onnx or
onnxscript. Every module under ``imgcls.deploy`` is found with ``pkgutil.walk_packages``, so a
new file is covered without editing this test, and imported in a fresh interpreter where a
finder placed first on ``sys.meta_path`` refuses those names: a module that imports one of
them, even lazily at import time, fails here rather than in a user's deployment. The command
modules of the deployment install (``infer``, ``serve``, ``evaluate-onnx``, ``data``) are
imported the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT

FORBIDDEN = ("torch", "torchvision", "lightning", "torchmetrics", "onnx", "onnxscript")

SCRIPT = """
import importlib, json, pkgutil, sys

FORBIDDEN = set(sys.argv[1].split(","))


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in FORBIDDEN:
            raise ImportError(f"{name} is not installed (refused by the torch-free test)")
        return None


sys.meta_path.insert(0, Refuse())
import imgcls.deploy

from imgcls.__main__ import COMMANDS, TORCH_FREE_COMMANDS

names = ["imgcls.deploy"] + [
    m.name for m in pkgutil.walk_packages(imgcls.deploy.__path__, "imgcls.deploy.")
]
# the commands of the deployment install, `imgcls data fetch` among them
names += [COMMANDS[c][0] for c in sorted(TORCH_FREE_COMMANDS | {"data"})]
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in FORBIDDEN)
print(json.dumps({"modules": names, "failed": failed, "loaded": loaded}))
"""


def test_every_deploy_module_imports_without_the_training_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(FORBIDDEN)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The walk found the package's modules (not an empty list that would pass vacuously).
    assert {
        "imgcls.deploy.classifier",
        "imgcls.deploy.images",
        "imgcls.deploy.serve",
        "imgcls.commands.infer",
        "imgcls.commands.serve",
        "imgcls.commands.evaluate_onnx",
        "imgcls.commands.data",
    } <= set(result["modules"]), result["modules"]
    assert result["failed"] == {}, result["failed"]
    assert result["loaded"] == [], result["loaded"]
