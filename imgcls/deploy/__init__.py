"""The deployment side: everything ``pip install imgcls`` (no extras) runs, without torch.

Reading IDX files, decoding and framing images, the ONNX metadata schema, the onnxruntime
classifier, the HTTP service and the draw-a-digit page. Nothing here imports torch,
torchvision, Lightning, torchmetrics or onnx, nor any module of the training side
(import-linter checks it: ``nox -s lint``).
"""
