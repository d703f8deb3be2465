"""HTTP serving: ``ortgen serve`` (OpenAI and KServe v2 protocols over the step engine's scheduler).

Importing this package is cheap; the web framework is imported by the modules that need it
(:mod:`~ortgen.serve.app` and the protocol modules), so :mod:`~ortgen.serve.trtllm` can be used
where FastAPI is not installed (Triton's python-backend models).
"""
