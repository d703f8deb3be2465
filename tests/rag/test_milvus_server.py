"""A real Milvus server of an unsupported version (2.3.5, the `milvus` package's embedded server: it
accepts ortgen's schema, sparse field included, and would fail later, one raw error at a time): the
connection is refused at once with the versions that work, in one line, and nothing is left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ortgen.cli import main
from ortgen.rag.indexer import IndexSettings, index_documents
from ortgen.rag.store import StoreError

SERVER = shutil.which("milvus-server")
pytestmark = pytest.mark.skipif(SERVER is None, reason="needs the milvus package (Milvus 2.3.5's embedded server), "
                                                       "installed by the dev extra")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def old_milvus(tmp_path_factory):
    """Milvus 2.3.5 on a loopback port; stopped (its whole process group) however the tests end."""
    port = _free_port()
    data = tmp_path_factory.mktemp("milvus-2.3")
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([SERVER, "--data", str(data), "--proxy-port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.skip(f"milvus-server exited ({proc.returncode}): {(data / 'server.log').read_text()[-500:]}")
            try:
                client = MilvusClient(f"http://127.0.0.1:{port}", timeout=3)
                version = client.get_server_version()
                client.close()
                break
            except Exception:  # not up yet
                if time.monotonic() > deadline:
                    pytest.fail("Milvus 2.3.5 did not answer within 180 s")
                time.sleep(2)
        assert version.startswith("v2.3"), version
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_an_unsupported_milvus_is_refused_at_connect(old_milvus, tmp_path: Path, embedder, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "Aspirin thins the blood."}) + "\n", encoding="utf-8")
    with pytest.raises(StoreError, match=r"Milvus at .* is version v2\.3\.5.*; ortgen needs Milvus 2\.5 or newer"):
        index_documents([docs], tmp_path / "idx", IndexSettings(uri=old_milvus, progress=False), embedder=embedder)
    assert not (tmp_path / "idx").exists()
    assert main(["rag", "index", str(docs), "-o", str(tmp_path / "idx2"), "--uri", old_milvus, "--embedder",
                 str(embedder.directory)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "ortgen needs Milvus 2.5 or newer" in err
    from pymilvus import MilvusClient

    client = MilvusClient(old_milvus, timeout=10)
    try:
        assert client.list_collections() == []  # nothing was created on the server
    finally:
        client.close()
