"""A checkpoint's generation_config.json becomes the package's defaults, applied as transformers
applies them: max_length counts the prompt, max_new_tokens wins, a call's value wins over both."""

from __future__ import annotations

import json
import shutil

import torch

from ortgen.export.package import ExportOptions, export_package
from ortgen.runtime.generator import Generator


def test_max_length_from_generation_config_is_applied_like_transformers(zoo, tmp_path):
    model = zoo.model("gpt2")
    directory = tmp_path / "hf"
    shutil.copytree(model.directory, directory)
    config_path = directory / "generation_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.update({"max_length": 30, "bad_words_ids": [[model.eos_token_id]]})  # no EOS: lengths are exact
    config_path.write_text(json.dumps(config))
    package = tmp_path / "pkg"
    manifest = export_package(str(directory), package, ExportOptions(show_progress=False))
    assert manifest.generation_defaults.get("max_length") == 30

    generator = Generator.load(package)
    prompt = [5, 9, 14, 3, 7]
    ours = generator.generate(input_ids=[prompt]).sequences[0][0].token_ids
    network = model.load()
    network.generation_config.max_length = 30
    network.generation_config.bad_words_ids = [[model.eos_token_id]]
    theirs = network.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, 5, dtype=torch.long),
                              do_sample=False)[0, 5:].tolist()
    assert len(ours) == len(theirs) == 25
    assert ours == theirs
    assert len(generator.generate(input_ids=[prompt], max_new_tokens=4).sequences[0][0].token_ids) == 4
    assert len(generator.generate(input_ids=[prompt], max_length=9).sequences[0][0].token_ids) == 4
