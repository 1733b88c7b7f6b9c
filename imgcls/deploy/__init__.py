"""The deployment side: everything ``pip install imgcls`` (no extras) runs, without torch.

Modules, one concern each:

- ``idx``: IDX files (MNIST's format), read with numpy.
- ``images``: image files, uploads and folders into model-sized uint8 batches.
- ``framing``: pictures of any size framed the way MNIST / Fashion-MNIST images were.
- ``metadata``: the ONNX metadata schema an export writes and the classifier reads.
- ``pixels``: the model input, checked (``to_pixels``).
- ``classifier``: the onnxruntime classifier, its devices and execution providers: the one
  door to onnxruntime (``onnxruntime_compat`` holds the private names it needs).
- ``photos``: MNIST digits re-rendered as photos, to measure a deployment on such pictures.
- ``serve`` (with the ``serve_*`` modules, ``batcher``): the HTTP service (FastAPI on
  uvicorn, the session in the process that answers; ``serve``'s docstring lists the modules)
  and ``web/``, its draw-a-digit page.
- ``site`` (with ``npm``): that page as a static site running the model in the browser.

Nothing here imports torch, torchvision, Lightning, torchmetrics or onnx, nor any module of
the training side (import-linter checks it: ``nox -s lint``; ``tests/deploy/test_torch_free.py``
imports every module in a fresh interpreter where those cannot be imported). This file imports
nothing, so that the export side can import the metadata schema without loading onnxruntime.
"""
