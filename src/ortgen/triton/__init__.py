"""Triton Inference Server: model repositories for a package, their server environment, a local server.

- :mod:`~ortgen.triton.repository`: ``ortgen triton PACKAGE -o REPO`` (``--backend python``: ortgen's
  Generator in one decoupled python-backend model; ``--backend onnxruntime``: the in-graph operators
  on Triton's onnxruntime backend in an ensemble with python pre/postprocessing), README, Kubernetes
  manifests; every config.pbtxt checked against Triton's schema.
- :mod:`~ortgen.triton.tensors`, :mod:`~ortgen.triton.serving`, :mod:`~ortgen.triton.ensemble`: what
  the python-backend models do, without Triton (the copied ``models/*.py`` only convert tensors).
- :mod:`~ortgen.triton.env`: ``ortgen triton-env DIR``, the Python environment those models run in.
- :mod:`~ortgen.triton.server`: start the environment's Triton on loopback and always stop it.

Builds on ortgen.runtime and ortgen.package (and the framework-free ortgen.serve.trtllm); imports
nothing of it at ``import ortgen.triton``.
"""
