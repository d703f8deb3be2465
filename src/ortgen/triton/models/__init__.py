"""Triton python-backend model files that ``ortgen triton`` copies into repositories as ``model.py``.

They run inside Triton's python-backend stub (``import triton_python_backend_utils``), not in
ortgen: nothing here is imported by ortgen itself. Each converts the backend's request and
response objects to numpy arrays and back; the work is done by ortgen modules that run (and are
tested) without Triton: :mod:`ortgen.triton.serving` and :mod:`ortgen.triton.ensemble`.
"""
