"""The server's Python environment: a virtual environment the python-backend models run in.

Triton's python backend runs each model in a stub process with an embedded Python; that Python
finds its packages through the environment the model's ``EXECUTION_ENV_PATH`` parameter names (or
the ``python3`` first on PATH). :func:`ensure_env` builds one, reusing it when it is already
complete:

    DIR/                          a venv (python -m venv) with
      numpy<2, onnxruntime, tokenizers, sacremoses   ortgen's runtime dependencies, numpy pinned below
                                                     2 (Triton 2.51's stub crashes on BYTES tensors
                                                     with numpy 2)
      ortgen                      a copy installed with pip, or (--link) a .pth pointing at this
                                  ortgen's source, for developing ortgen
      nvidia-pytriton==0.7.0      (with_server) Triton 2.51 with the python backend, for hosts
                                  without the Triton container
      bin/ortgen-tritonserver     (with_server) that tritonserver with its backend and cache
                                  directories and its libraries set; other options pass through
      ortgen-triton-env.json      written last: what was installed (reuse key)

A second call with the same requirements reuses the environment (a copied ortgen is reinstalled
only when its source changed). Builds of the same directory from several processes wait for each
other (a lock file beside it). A venv cannot be moved, so it is built in place; a directory without
the completion record is rebuilt from scratch, and a directory that is not a venv is never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ortgen import __version__
from ortgen.errors import OrtgenError

log = logging.getLogger(__name__)

PYTRITON = "nvidia-pytriton==0.7.0"  # Triton server 2.51.0 with the python backend
NUMPY = "numpy<2"
# ortgen's runtime dependencies (pyproject's `dependencies`), read from the installed metadata when
# available so the two cannot drift; this list is the fallback
RUNTIME_REQUIREMENTS = ("numpy>=1.24", "onnx>=1.16", "onnxruntime>=1.20", "tokenizers>=0.19", "sacremoses>=0.1")
RECORD = "ortgen-triton-env.json"
LAUNCHER = "ortgen-tritonserver"
PIP_TIMEOUT = 1800


class TritonEnvError(OrtgenError):
    """The server environment could not be built (pip failed, no such Python, ...)."""


@dataclass(frozen=True)
class TritonEnv:
    """A complete environment (see the module docstring)."""

    path: Path
    python_version: str  # "3.11"
    with_server: bool

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return site_packages(self.path, self.python_version)

    @property
    def server_root(self) -> Path:
        """The wheel's ``pytriton/tritonserver`` (bin, backends, caches)."""
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def tritonserver(self) -> Path:
        return self.server_root / "bin" / "tritonserver"

    @property
    def backend_directory(self) -> Path:
        return self.server_root / "backends"

    @property
    def cache_directory(self) -> Path:
        return self.server_root / "caches"

    @property
    def launcher(self) -> Path:
        return self.path / "bin" / LAUNCHER

    def library_path(self) -> str:
        """LD_LIBRARY_PATH for the wheel's tritonserver: its bundled libraries and libpython."""
        libdir = _base_libdir(self.python)
        return ":".join(p for p in (str(self.site_packages / "nvidia_pytriton.libs"), libdir) if p)

    def server_environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment variables for running the wheel's tritonserver with this env's Python."""
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (self.library_path(), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = f"{self.path / 'bin'}:{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
        env.pop("PYTHONPATH", None)
        return env


def site_packages(venv: Path, python_version: str) -> Path:
    return venv / "lib" / f"python{python_version}" / "site-packages"


def _base_libdir(python: Path) -> str:
    """The directory holding the base interpreter's libpython (the stub links against it)."""
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def _checkout_root() -> Path | None:
    """The project root when ortgen runs from a source checkout (pyproject.toml above src/)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "ortgen").is_dir() else None


def _source_digest() -> str:
    """A digest of this ortgen's files: a copied ortgen is reinstalled when it changes."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc",):
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def runtime_requirements() -> list[str]:
    """ortgen's runtime dependencies plus numpy<2 (and nothing of the extras: no torch)."""
    try:
        from importlib.metadata import PackageNotFoundError, requires

        declared = [r for r in (requires("ortgen") or []) if "extra ==" not in r]
    except PackageNotFoundError:
        declared = []
    return sorted(set(declared or RUNTIME_REQUIREMENTS) | {NUMPY})


def _requirements(with_server: bool) -> list[str]:
    return runtime_requirements() + ([PYTRITON] if with_server else [])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(f"{path.name}.lock")  # beside it: building replaces the directory itself
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise TritonEnvError(f"{what} took more than {PIP_TIMEOUT} s; gave up") from None
    except OSError as exc:
        raise TritonEnvError(f"{what} could not start: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise TritonEnvError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _python_version(python: str) -> str:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TritonEnvError(f"cannot run {python}: {exc}") from None
    if out.returncode != 0:
        raise TritonEnvError(f"cannot run {python}: {out.stderr.strip()}")
    return out.stdout.strip()


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads((path / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_env(path: Path, *, with_server: bool = True, link: bool = False, python: str | None = None,
               rebuild: bool = False) -> TritonEnv:
    """Build (or reuse) the server environment at ``path``; see the module docstring.

    ``with_server``: also install the nvidia-pytriton wheel (Triton 2.51 with the python backend)
    and the ``ortgen-tritonserver`` launcher; not needed inside the Triton container, which has its
    own server. ``link``: import ortgen from this source instead of installing a copy.
    ``python``: the interpreter the venv is made from (default: the one running ortgen); the
    python backend's stub must be built for its version (the wheel has stubs for 3.8-3.13).
    Raises TritonEnvError with pip's last lines when an install fails.
    """
    path = Path(path).absolute()
    python = python or sys.executable
    version = _python_version(python)
    requirements = _requirements(with_server)
    root = _checkout_root()
    if link and root is None:
        raise TritonEnvError("--link needs ortgen running from a source checkout (pyproject.toml above src/ortgen); "
                             "this ortgen is installed: build the environment without --link")
    ortgen_install = {"version": __version__, "mode": "link" if link else "copy",
                      "source": str(root / "src") if link and root else _source_digest()}
    with _locked(path):
        record = _read_record(path)
        reusable = (not rebuild and record is not None and record.get("requirements") == requirements
                    and record.get("python") == version and (path / "bin" / "python").exists())
        if not reusable:
            _create(path, python)
            _run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements],
                 f"installing {', '.join(requirements)} into {path}")
            record = None
        env = TritonEnv(path, version, with_server)
        if record is None or record.get("ortgen") != ortgen_install:
            _install_ortgen(env, link)
        if with_server:
            _prepare_server(env)
        (path / RECORD).write_text(json.dumps({"requirements": requirements, "python": version,
                                               "ortgen": ortgen_install}, indent=2) + "\n", encoding="utf-8")
    return env


def open_env(path: Path) -> TritonEnv:
    """An environment :func:`ensure_env` completed earlier (raises TritonEnvError otherwise)."""
    path = Path(path).absolute()
    record = _read_record(path)
    if record is None:
        raise TritonEnvError(f"{path} is not a complete ortgen Triton environment (no {RECORD}); build it with "
                             f"`ortgen triton-env {path}`")
    return TritonEnv(path, record["python"], any(r.startswith("nvidia-pytriton") for r in record["requirements"]))


def _create(path: Path, python: str) -> None:
    if path.exists():
        if not (path / "pyvenv.cfg").is_file() and any(path.iterdir()):
            raise TritonEnvError(f"{path} exists and is not a virtual environment; choose another directory "
                                 "(it is never deleted)")
        shutil.rmtree(path)
    _run([python, "-m", "venv", str(path)], f"creating a virtual environment at {path}")
    _run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], "upgrading pip")


def _install_ortgen(env: TritonEnv, link: bool) -> None:
    target = env.site_packages
    (target / "ortgen-source.pth").unlink(missing_ok=True)
    if link:
        with contextlib.suppress(TritonEnvError):
            _run([str(env.python), "-m", "pip", "uninstall", "--quiet", "--yes", "ortgen"], "removing a copied ortgen")
        (target / "ortgen-source.pth").write_text(f"{_checkout_root() / 'src'}\n", encoding="utf-8")  # type: ignore[operator]
        return
    root = _checkout_root()
    spec = str(root) if root is not None else f"ortgen=={__version__}"
    _run([str(env.python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", spec],
         f"installing ortgen ({spec}) into {env.path}")


def _prepare_server(env: TritonEnv) -> None:
    """Put the stub for this Python beside the python backend, and write the launcher."""
    stub = env.server_root / "python_backend_stubs" / env.python_version / "triton_python_backend_stub"
    if not stub.is_file():
        versions = sorted(p.name for p in (env.server_root / "python_backend_stubs").iterdir())
        raise TritonEnvError(f"the Triton wheel has no python backend stub for Python {env.python_version}; "
                             f"it has: {', '.join(versions)} (pass --python with one of them)")
    target = env.backend_directory / "python" / "triton_python_backend_stub"
    if not target.is_file() or target.read_bytes() != stub.read_bytes():
        partial = target.with_name(f".{target.name}.partial")  # a running stub's file cannot be overwritten
        shutil.copy2(stub, partial)
        os.replace(partial, target)
    launcher = env.launcher
    launcher.write_text(
        "#!/bin/sh\n"
        "# Triton 2.51 (nvidia-pytriton wheel) with the python backend and this environment's Python.\n"
        "# Usage: ortgen-tritonserver --model-repository=REPO [other tritonserver options]\n"
        f'export LD_LIBRARY_PATH="{env.library_path()}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
        f'export PATH="{env.path / "bin"}:$PATH"\n'
        "unset PYTHONHOME PYTHONPATH\n"
        f'exec "{env.tritonserver}" --backend-directory="{env.backend_directory}" '
        f'--cache-directory="{env.cache_directory}" "$@"\n', encoding="utf-8")
    launcher.chmod(0o755)
