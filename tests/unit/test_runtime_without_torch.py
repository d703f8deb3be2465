"""The embedded demo end to end, and proof that the runtime needs neither torch nor transformers."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from ortgen.cli import main


def test_demo_runs_the_whole_path(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr()
    assert "com.microsoft BeamSearch" in out.out  # the package listing
    assert out.out.count("[0] Aspirin reduces the risk of") == 3
    # beam search in the BeamSearch operator, then the same beams on the step engine, then greedy (engine)
    assert "ran generate_beam.onnx (com.microsoft BeamSearch)" in out.err
    assert out.err.count("ran decoder_engine.onnx (ortgen step engine)") == 2
    beams = [re.sub(r"score -?[0-9.]+", "", block) for block in out.out.split("[0] Aspirin reduces the risk of")[1:3]]
    assert beams[0] == beams[1], "length_penalty 0: both backends find the same beams (texts, lengths, EOS)"
    assert (tmp_path / "demo" / "package" / "ortgen.json").is_file()
    if "stopping before retrieval QA" not in out.out:  # the rag and serve extras are installed: the whole path
        for step in ("5. exporting the all-MiniLM-L6-v2 embedder", "6. indexing the corpus shipped with ortgen",
                     "7. asking:", "8. the HTTP server with the index"):
            assert step in out.out
        assert "sources: demo-aspirin" in out.out  # retrieval works even though the model is random
        assert "[1] " in out.out.split("7. asking:")[1]


def test_runtime_imports_neither_torch_nor_transformers(tmp_path):
    assert main(["demo", "--workdir", str(tmp_path / "demo")]) == 0
    script = textwrap.dedent(f"""
        import os
        import sys
        from ortgen import Generator
        generator = Generator.load({str(tmp_path / "demo" / "package")!r})
        result = generator.generate(["Aspirin is", "Statins"], num_beams=3, max_new_tokens=4)
        assert result.backend_kind == "engine"
        generator.generate(["Aspirin is"], max_new_tokens=4, seed=1)
        generator.generate(["Aspirin is"], max_new_tokens=4, num_beams=3, backend="graph")
        assert "".join(generator.stream("Aspirin is", max_new_tokens=4))
        assert result.sequences[0][0].text is not None
        import importlib.util
        if importlib.util.find_spec("fastapi"):  # the server imports neither
            import ortgen.serve.app
        if importlib.util.find_spec("pymilvus") and os.path.exists({str(tmp_path / "demo" / "index" / "index.json")!r}):
            # nor does retrieval at query time
            from ortgen.rag.index import Index
            with Index.open({str(tmp_path / "demo" / "index")!r}) as index:
                assert index.search("aspirin", k=2)
        heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        assert not heavy, heavy
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
