"""Measure exporting a large checkpoint and running its package: seconds and peak memory per phase.

Each phase runs as its own child process, so each peak resident set size (RSS) is that phase's
alone (the kernel's ru_maxrss of the child, from wait4, plus /proc/<pid>/status sampled while it
runs, for a timeline and the log line it was at when memory peaked):

  export  python -m ortgen export CKPT -o PACKAGE_DIR --quantize int4 (or --weights)
  load    a child that runs Generator.load(PACKAGE_DIR), loads the graph the requests use, then
          generates from a fixed prompt of token ids: greedy (--max-new-tokens, default 8) and
          beam search (--num-beams, default 4); it reports RSS (VmRSS, VmHWM) and seconds after
          each step, and the generated token ids

The results go to a JSON file (machine: CPU model, cores, RAM; command lines; seconds; peak RSS
per phase in GB = 10^9 bytes; RSS after load; weights.bin bytes; generated token ids) and a
markdown table next to it (printed too). The exit status is nonzero when a phase fails; the JSON
is written either way.

examples:
  python scripts/scale_export.py /work/scratch-scale/mistral-7b /work/scratch-scale/mistral-7b-int4
  python scripts/scale_export.py CKPT PKG --weights float32 --phases export --keep-package
  python scripts/scale_export.py CKPT PKG --phases load          # an existing package
  python scripts/scale_export.py CKPT PKG --max-rss-gb 20        # kill a phase that grows past 20 GB
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger("scale_export")

REPO = Path(__file__).resolve().parents[1]
RESULT_MARKER = "SCALE_EXPORT_RESULT "
CHILD_VERB = "_load-child"  # argv[1] of the load phase's child (this script, run again)
GB = 1e9
QUANTIZE = {"int4": "int4", "int8": "int8", "float32": "none"}


# -- measuring a child -----------------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (bytes) of a process, {} once it has exited."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def run_phase(name: str, cmd: list[str], log_path: Path, sample_seconds: float, max_rss_gb: float | None,
              echo: bool) -> dict[str, Any]:
    """Run ``cmd``; its output goes to log_path (each line with seconds since the start) and, with
    echo, to stderr. Returns seconds, exit code, peak RSS (wait4's ru_maxrss and the sampled VmHWM),
    an RSS timeline and the log's tail."""
    log.info("phase %s: %s", name, shlex.join(cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tail: deque[str] = deque(maxlen=40)
    lines: list[tuple[float, str]] = []  # (seconds, line) for finding the stage at the peak
    result_line: list[str] = []
    samples: list[tuple[float, int]] = []
    peak = {"hwm": 0, "rss": 0, "at": 0.0, "line": ""}
    killed: list[str] = []
    done = threading.Event()

    def read_output() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as out:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                now = time.perf_counter() - started
                if line.startswith(RESULT_MARKER):
                    result_line.append(line[len(RESULT_MARKER):])
                    continue
                out.write(f"[{now:8.1f}s] {line}\n")
                out.flush()
                tail.append(line)
                lines.append((now, line.split("\r")[-1]))
                if echo:
                    print(f"  [{name} {now:7.1f}s] {line}", file=sys.stderr, flush=True)

    def sample() -> None:
        while not done.wait(sample_seconds):
            status = proc_status(proc.pid)
            if "VmRSS" not in status:
                continue
            now = time.perf_counter() - started
            samples.append((round(now, 2), status["VmRSS"]))
            if status["VmRSS"] > peak["rss"]:
                peak.update(rss=status["VmRSS"], at=now, line=lines[-1][1] if lines else "")
            peak["hwm"] = max(peak["hwm"], status.get("VmHWM", 0))
            if max_rss_gb is not None and status["VmRSS"] > max_rss_gb * GB and not killed:
                killed.append(f"RSS {status['VmRSS'] / GB:.2f} GB > --max-rss-gb {max_rss_gb}")
                log.error("phase %s: %s: killing it", name, killed[0])
                os.kill(proc.pid, signal.SIGKILL)

    reader = threading.Thread(target=read_output, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except KeyboardInterrupt:
        proc.kill()
        os.wait4(proc.pid, 0)
        raise
    finally:
        done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    seconds = time.perf_counter() - started
    reader.join(timeout=10)
    sampler.join(timeout=10)
    peak_bytes = max(usage.ru_maxrss * 1024, peak["hwm"])
    outcome = {
        "command": cmd,
        "command_line": shlex.join(cmd),
        "exit_code": proc.returncode,
        "ok": proc.returncode == 0 and not killed,
        "seconds": round(seconds, 2),
        "peak_rss_bytes": peak_bytes,
        "peak_rss_gb": round(peak_bytes / GB, 3),
        "peak_rss_source": "wait4 ru_maxrss (max with sampled VmHWM)",
        "cpu_seconds_user": round(usage.ru_utime, 2),
        "cpu_seconds_system": round(usage.ru_stime, 2),
        "sampled_peak_rss_at_seconds": round(peak["at"], 1),
        "log_line_at_sampled_peak": peak["line"],
        "rss_timeline_gb": [[t, round(b / GB, 3)] for t, b in thin(samples, 300)],
        "log": str(log_path),
        "log_tail": list(tail)[-15:],
    }
    if killed:
        outcome["killed"] = killed[0]
    if result_line:
        outcome["child_result"] = json.loads(result_line[-1])
    log.info("phase %s: exit %s in %.1f s, peak RSS %.2f GB (sampled peak at %.0f s: %s)", name, proc.returncode,
             seconds, peak_bytes / GB, peak["at"], peak["line"][:100])
    return outcome


def thin(samples: list[tuple[float, int]], most: int) -> list[tuple[float, int]]:
    """At most ``most`` samples, keeping the highest of each run of dropped ones."""
    if len(samples) <= most:
        return samples
    step = -(-len(samples) // most)
    return [max(samples[i:i + step], key=lambda s: s[1]) for i in range(0, len(samples), step)]


# -- the load phase's child -------------------------------------------------------------------------


def child_main(argv: list[str]) -> int:
    """Load the package, load the graph, generate greedy then beam; print one JSON result line."""
    parser = argparse.ArgumentParser(prog=f"scale_export.py {CHILD_VERB}")
    parser.add_argument("package")
    parser.add_argument("--prompt-ids", required=True)
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--num-beams", type=int, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    steps: list[dict[str, Any]] = []

    def record(step: str, started: float, **extra: Any) -> None:
        status = proc_status()
        entry = {"step": step, "seconds": round(time.perf_counter() - started, 3),
                 "rss_gb": round(status.get("VmRSS", 0) / GB, 3), "hwm_gb": round(status.get("VmHWM", 0) / GB, 3),
                 **extra}
        steps.append(entry)
        log.info("%s: %.2f s, RSS %.2f GB, peak %.2f GB%s", step, entry["seconds"], entry["rss_gb"],
                 entry["hwm_gb"], "".join(f", {k} {v}" for k, v in extra.items()))

    started = time.perf_counter()
    from ortgen.package import contract
    from ortgen.runtime.generator import Generator
    record("import ortgen", started)

    started = time.perf_counter()
    generator = Generator.load(args.package, threads=args.threads)
    record("Generator.load", started)

    prompt = [int(t) for t in args.prompt_ids.split(",")]
    greedy = dict(max_new_tokens=args.max_new_tokens, num_beams=1, do_sample=False, backend=args.backend)
    beam = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=False, backend=args.backend)

    started = time.perf_counter()
    graph = generator.graph_for(generator.settings_for(**greedy))
    if graph == contract.DECODER_ENGINE:
        generator.scheduler  # creates the engine's session and its KV pool
    else:
        generator.session(graph)
    record("load graph", started, graph=graph)

    generated: dict[str, Any] = {}
    for name, options in (("greedy", greedy), ("beam", beam)):
        started = time.perf_counter()
        result = generator.generate(input_ids=[prompt], **options)
        best = result.sequences[0][0]
        generated[name] = {"options": options, "token_ids": best.token_ids, "score": best.score,
                           "stop_reason": best.stop_reason, "backend": result.backend, "reason": result.reason}
        record(f"generate {name}", started, tokens=best.token_ids, backend=result.backend)
    generator.close()
    print(RESULT_MARKER + json.dumps({"prompt_ids": prompt, "steps": steps, "generated": generated,
                                      "graph_loaded": graph}), flush=True)
    return 0


# -- what is measured ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"hostname": platform.node(), "platform": platform.platform(),
                            "python": platform.python_version(), "cores": os.cpu_count(),
                            "cores_usable": len(os.sched_getaffinity(0))}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
        info["avx512"] = " avx512f " in f" {flags.split(':', 1)[-1]} "
        mem = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith(("MemTotal", "MemAvailable", "SwapTotal"))}
        info["ram_gb"] = round(mem.get("MemTotal", 0) / GB, 2)
        info["ram_available_gb_at_start"] = round(mem.get("MemAvailable", 0) / GB, 2)
        info["swap_gb"] = round(mem.get("SwapTotal", 0) / GB, 2)
    except OSError:
        pass
    versions = {}
    for package in ("ortgen", "onnxruntime", "onnx", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    info["versions"] = versions
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        info["git_commit"] = commit + ("+dirty" if dirty else "")
    except OSError:
        pass
    return info


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def checkpoint_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path), "bytes": directory_bytes(path)}
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return info
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "tie_word_embeddings", "dtype", "torch_dtype", "max_position_embeddings"):
        if key in config:
            info[key] = config[key]
    index = path / "model.safetensors.index.json"
    if index.exists():
        metadata = json.loads(index.read_text()).get("metadata", {})
        info["parameters"] = metadata.get("total_parameters")
    return info


def package_info(path: Path) -> dict[str, Any]:
    weights = path / "weights.bin"
    info: dict[str, Any] = {"path": str(path), "bytes": directory_bytes(path),
                            "weights_bin_bytes": weights.stat().st_size if weights.exists() else None,
                            "files": {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}
                            if path.exists() else {}}
    if info["weights_bin_bytes"]:
        info["weights_bin_gb"] = round(info["weights_bin_bytes"] / GB, 3)
    return info


def markdown(report: dict[str, Any]) -> str:
    m, c = report["machine"], report["checkpoint"]
    rows = [f"### {report['name']} -> {report['weights']} ({m.get('cpu', '?')}, {m.get('cores')} cores, "
            f"{m.get('ram_gb')} GB RAM)", "",
            f"checkpoint: {c.get('model_type')} hidden {c.get('hidden_size')}, {c.get('num_hidden_layers')} layers, "
            f"{c.get('parameters') or '?'} parameters, {c['bytes'] / GB:.2f} GB on disk", "",
            "| phase | step | seconds | RSS after (GB) | peak RSS (GB) | notes |", "|---|---|---:|---:|---:|---|"]
    for name, phase in report["phases"].items():
        note = "ok" if phase["ok"] else f"FAILED (exit {phase['exit_code']}{', ' + phase['killed'] if 'killed' in phase else ''})"
        rows.append(f"| {name} | whole process | {phase['seconds']:.1f} | | {phase['peak_rss_gb']:.2f} | {note} |")
        for step in phase.get("child_result", {}).get("steps", []):
            extra = f"`{step['graph']}`" if "graph" in step else (f"{step['tokens']}" if "tokens" in step else "")
            rows.append(f"| | {step['step']} | {step['seconds']:.2f} | {step['rss_gb']:.2f} | {step['hwm_gb']:.2f} | "
                        f"{extra} |")
    p = report.get("package", {})
    if p.get("weights_bin_bytes"):
        rows += ["", f"package: weights.bin {p['weights_bin_bytes'] / GB:.2f} GB, {p['bytes'] / GB:.2f} GB in all"]
    return "\n".join(rows) + "\n"


# -- command line ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scale_export.py", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CKPT", type=Path, help="Hugging Face checkpoint directory")
    parser.add_argument("package", metavar="PACKAGE_DIR", type=Path,
                        help="the package to write (export phase) and load (load phase)")
    parser.add_argument("--weights", choices=sorted(QUANTIZE), default="int4",
                        help="the package's weights: ortgen export --quantize int4 / int8 / none (float32) "
                             "(default: %(default)s)")
    parser.add_argument("--phases", default="export,load",
                        help="comma-separated phases to run, in order: export, load (default: %(default)s)")
    parser.add_argument("--keep-package", action="store_true",
                        help="keep PACKAGE_DIR after the run (default: delete it when this run exported it "
                             "and also ran the load phase)")
    parser.add_argument("--force", action="store_true",
                        help="let the export replace an existing PACKAGE_DIR (ortgen export --force)")
    parser.add_argument("--export-args", default="",
                        help="more options for ortgen export, one shell-quoted string, e.g. \"--block-size 64\"")
    parser.add_argument("--verbose-export", action="store_true", help="run ortgen -v export (more logging)")
    parser.add_argument("--prompt-ids", default="10,20,30,40,50,60,70,80",
                        help="the prompt's token ids, comma-separated (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="tokens generated per search (default: 8)")
    parser.add_argument("--num-beams", type=int, default=4, help="beams of the beam search (default: 4)")
    parser.add_argument("--backend", choices=("auto", "engine", "graph"), default="auto",
                        help="Generator.generate's backend (default: %(default)s: the step engine)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime threads in the load phase (default: ONNX Runtime's)")
    parser.add_argument("--name", default=None,
                        help="the checkpoint's name in the results (default: CKPT's directory name)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: bench-results/scale-export/<name>-<weights>.json in the "
                             "repository); the markdown table goes next to it (.md), the phases' logs too")
    parser.add_argument("--sample-seconds", type=float, default=0.5,
                        help="how often each child's RSS is sampled (default: %(default)s)")
    parser.add_argument("--max-rss-gb", type=float, default=None,
                        help="kill a phase whose RSS passes this many GB (default: no limit)")
    parser.add_argument("--quiet-children", action="store_true",
                        help="do not echo the children's output (it is in the logs either way)")
    args = parser.parse_args(argv)
    args.phase_list = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not args.phase_list or any(p not in ("export", "load") for p in args.phase_list):
        parser.error(f"--phases: choose from export, load (got {args.phases!r})")
    try:
        [int(t) for t in args.prompt_ids.split(",")]
    except ValueError:
        parser.error("--prompt-ids: comma-separated integers")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == CHILD_VERB:
        return child_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    checkpoint, package = args.checkpoint.resolve(), args.package.resolve()
    name = args.name or checkpoint.name
    out = (args.out or REPO / "bench-results" / "scale-export" / f"{name}-{args.weights}.json").resolve()
    logs = out.with_suffix("")
    if "export" in args.phase_list:
        if not (checkpoint / "config.json").exists():
            log.error("%s is not a checkpoint directory (no config.json)", checkpoint)
            return 2
        if package.exists() and not args.force:
            log.error("%s exists: pass --force to replace it", package)
            return 2
    elif not package.exists():
        log.error("%s does not exist: run the export phase first", package)
        return 2

    report: dict[str, Any] = {
        "name": name, "weights": args.weights, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "checkpoint": checkpoint_info(checkpoint), "phases": {},
    }
    log.info("machine: %s, %s cores, %s GB RAM (%s GB available); checkpoint %s: %.2f GB",
             report["machine"].get("cpu"), report["machine"]["cores"], report["machine"].get("ram_gb"),
             report["machine"].get("ram_available_gb_at_start"), checkpoint, report["checkpoint"]["bytes"] / GB)
    failed = False
    exported = False
    for phase in args.phase_list:
        if phase == "export":
            cmd = [sys.executable, "-m", "ortgen"] + (["-v"] if args.verbose_export else []) + [
                "export", str(checkpoint), "-o", str(package), "--quantize", QUANTIZE[args.weights]]
            cmd += (["--force"] if args.force else []) + shlex.split(args.export_args)
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), CHILD_VERB, str(package),
                   "--prompt-ids", args.prompt_ids, "--max-new-tokens", str(args.max_new_tokens),
                   "--num-beams", str(args.num_beams), "--backend", args.backend]
            cmd += ["--threads", str(args.threads)] if args.threads else []
        outcome = run_phase(phase, cmd, Path(f"{logs}.{phase}.log"), args.sample_seconds, args.max_rss_gb,
                            not args.quiet_children)
        report["phases"][phase] = outcome
        if phase == "export" and outcome["ok"]:
            exported = True
            report["package"] = package_info(package)
            log.info("package %s: weights.bin %s bytes, %.2f GB in all", package,
                     f"{report['package']['weights_bin_bytes']:,}" if report["package"]["weights_bin_bytes"] else "?",
                     report["package"]["bytes"] / GB)
        if not outcome["ok"]:
            failed = True
            log.error("phase %s failed (exit %s); last lines:\n%s", phase, outcome["exit_code"],
                      "\n".join(outcome["log_tail"]))
            break
    if "export" not in args.phase_list and package.exists():
        report["package"] = package_info(package)  # the existing package the load phase ran
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["ok"] = not failed

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print(table)
    log.info("results: %s (and %s)", out, out.with_suffix(".md"))

    if exported and "load" in args.phase_list and not args.keep_package:
        log.info("deleting the package %s (--keep-package keeps it)", package)
        shutil.rmtree(package, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
