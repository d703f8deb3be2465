"""Every registered architecture has a tiny fixture, hence decoder and generation parity tests."""

from ortgen.arch import get_spec, supported_model_types
from ortgen.errors import UnsupportedModelError
from tests.helpers.models import ARCHS, MODEL_TYPE


def test_every_registered_architecture_is_tested():
    tested = {MODEL_TYPE[arch] for arch in ARCHS}
    untested = set(supported_model_types()) - tested
    assert not untested, f"registered but without parity fixtures: {sorted(untested)}"


def test_unknown_model_type_lists_the_supported_ones():
    try:
        get_spec("gemma2")
    except UnsupportedModelError as exc:
        assert str(exc) == "no exporter for model_type 'gemma2'; supported: biogpt, gpt2, llama, mistral, opt, qwen2"
    else:
        raise AssertionError("expected UnsupportedModelError")
