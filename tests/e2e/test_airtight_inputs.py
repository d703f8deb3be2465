"""Bad input, layer by layer: every case refused before anything runs, with the setting, the value
and what is allowed; on the CLI exit 1, no traceback, nothing written."""

from __future__ import annotations

import os
import stat

import pytest

from ortgen.cli import main
from ortgen.errors import OrtgenError
from ortgen.runtime.generator import Generator

# (generate() options, words of the error)
API_CASES = [
    (dict(do_sample=True, temperature=float("nan")), "temperature must be a finite number > 0, got nan"),
    (dict(repetition_penalty=float("nan")), "repetition_penalty must be a finite number > 0, got nan"),
    (dict(repetition_penalty=float("inf")), "repetition_penalty must be a finite number > 0, got inf"),
    (dict(num_beams=2, length_penalty=float("nan")), "length_penalty must be a finite number, got nan"),
    (dict(do_sample=True, top_p=float("nan")), "top_p must be a number in (0, 1], got nan"),
    (dict(do_sample="yes"), "do_sample must be true or false, got 'yes'"),
    (dict(num_beams="5"), "num_beams must be an integer in [1, 128], got '5'"),
    (dict(min_length=10**6), "min_length must be <= 64 (the model's positions: it could never be reached), got 1000000"),
    (dict(min_new_tokens=20, max_new_tokens=10), "min_new_tokens (20) must not exceed max_new_tokens (10)"),
    (dict(bad_words_ids=[[99999999]]), "bad_words_ids contains token id 99999999, outside the vocabulary [0, 406)"),
    (dict(bad_words_ids=[[5, 99999]]), "bad_words_ids contains token id 99999, outside the vocabulary [0, 406)"),
    (dict(eos_token_id=99999), "eos_token_id contains token id 99999, outside the vocabulary [0, 406)"),
    (dict(max_length=3), "max_length=3 leaves no room for new tokens after a prompt of"),
    (dict(max_length=500), "plus max_length=500 needs 500 positions; the model has 64"),
    (dict(seed=-4), "seed must be an integer in [0, 9223372036854775807], got -4"),
    (dict(beams=4), "unknown generation option(s) beams; allowed:"),
    (dict(backend="graph", do_sample=True), "pass top_k=0 to sample without it"),
    (dict(backend="graph", do_sample=True, top_k=0, temperature=0.5),
     "re-export with `ortgen export --temperature T --top-p P`"),
]


@pytest.mark.parametrize("options, message", API_CASES, ids=[m[:40] for _, m in API_CASES])
def test_api_refuses_with_the_setting_the_value_and_what_is_allowed(zoo, options, message):
    generator = Generator.load(zoo.package("biogpt"))
    with pytest.raises(OrtgenError) as info:  # GenerationSettingsError, or PromptTooLongError for lengths
        generator.generate("Aspirin reduces the risk of", **options)
    assert message in str(info.value)


def test_max_length_is_accepted_in_a_call_and_max_new_tokens_wins(zoo):
    generator = Generator.load(zoo.package("biogpt"))
    prompt = generator.encode(["Aspirin reduces the risk of"])[0]
    result = generator.generate(input_ids=[prompt], max_length=len(prompt) + 3, eos_token_id=[5, 6], bad_words_ids=[[5], [6]])
    assert len(result.sequences[0][0].token_ids) == 3  # EOS can never come: exactly max_length - prompt tokens
    both = generator.generate(input_ids=[prompt], max_length=len(prompt) + 3, max_new_tokens=5, eos_token_id=[5, 6],
                              bad_words_ids=[[5], [6]])
    assert len(both.sequences[0][0].token_ids) == 5


# (CLI arguments after `generate PKG "Aspirin is"`, words of the error)
CLI_CASES = [
    (["--temperature", "nan"], "temperature must be a finite number > 0, got nan"),
    (["--repetition-penalty", "nan"], "repetition_penalty must be a finite number > 0, got nan"),
    (["--repetition-penalty", "inf"], "repetition_penalty must be a finite number > 0, got inf"),
    (["--length-penalty", "nan", "--num-beams", "2"], "length_penalty must be a finite number, got nan"),
    (["--min-length", "1000000"], "min_length must be <= 64"),
    (["--bad-words-ids", "99999999"], "bad_words_ids contains token id 99999999, outside the vocabulary"),
    (["--bad-words-ids", "5,99999"], "bad_words_ids contains token id 99999, outside the vocabulary"),
    (["--eos-token-id", "99999"], "eos_token_id contains token id 99999, outside the vocabulary"),
    (["--num-beams", "0"], "num_beams must be an integer in [1, 128], got 0"),
    (["--max-new-tokens", "0"], "max_new_tokens=0 generates nothing"),
    (["--max-new-tokens", "-1"], "max_new_tokens must be an integer >= 0"),
    (["--seed", "-4"], "seed must be an integer in [0, 9223372036854775807], got -4"),
    (["--backend", "graph", "--do-sample"], "pass top_k=0 to sample without it"),
    (["--backend", "graph", "--temperature", "0.5", "--top-k", "0"], "re-export with `ortgen export --temperature"),
]


@pytest.mark.parametrize("args, message", CLI_CASES, ids=[m[:40] for _, m in CLI_CASES])
def test_cli_exits_1_with_the_message_and_no_traceback(zoo, capsys, args, message):
    code = main(["generate", str(zoo.package("biogpt")), "Aspirin is", *args])
    err = capsys.readouterr().err
    assert code == 1, err
    assert message in err and "Traceback" not in err


def test_cli_context_without_question_says_so(zoo, capsys):
    assert main(["generate", str(zoo.package("biogpt")), "--context", "Aspirin is an NSAID."]) == 1
    assert "--context goes with --question" in capsys.readouterr().err


def test_make_random_model_refuses_a_negative_seed_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["make-random-model", str(out), "--seed", "-4"]) == 1
    err = capsys.readouterr().err
    assert "seed must be an integer >= 0, got -4" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_make_random_model_failing_midway_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "model"
    missing_tokenizer = tmp_path / "no-tokenizer"
    missing_tokenizer.mkdir()
    assert main(["make-random-model", str(out), "--tokenizer", str(missing_tokenizer)]) == 1
    assert "has no vocab.json" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["no-tokenizer"]


def test_packages_get_the_umask_permissions(zoo, tmp_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "pkg"
        assert main(["export", str(zoo.model("gpt2").directory), "-o", str(out), "--no-progress"]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # readable by a Triton container's other uid
    assert stat.S_IMODE((out / "tokenizer").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "ortgen.json").stat().st_mode) == 0o644
