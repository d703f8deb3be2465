"""What the python-backend models do, without Triton: the decoupled generator model's service with a
recording sender, and the tensors TensorRT-LLM clients send."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ortgen.errors import GenerationSettingsError
from ortgen.triton.serving import GeneratorService
from ortgen.triton.tensors import read_prompts


class Recorder:
    def __init__(self) -> None:
        self.responses: list[tuple[dict | None, str | None, bool]] = []
        self.codes: list[str | None] = []
        self.done = threading.Event()

    def send(self, outputs=None, *, error=None, code="internal", final=False):
        self.responses.append((outputs, error, final))
        self.codes.append(code if error is not None else None)
        if final:
            self.done.set()


@pytest.fixture(scope="module")
def service(generator):
    service = GeneratorService(generator)
    yield service
    service.loop.call_soon_threadsafe(service.loop.stop)


def _run(service, tensors) -> Recorder:
    recorder = Recorder()
    service.start(tensors, recorder)
    assert recorder.done.wait(60)
    return recorder


def _texts(array) -> list[list[str]]:
    return [[t.decode() for t in row] for row in array]


def test_one_final_response_without_stream(service, generator):
    recorder = _run(service, {"text_input": np.array([[b"Aspirin is"], [b"The cell"]], dtype=object),
                              "beam_width": np.array([[3]], dtype=np.int32),
                              "num_return_sequences": np.array([[2]], dtype=np.int32),
                              "max_tokens": np.array([[6]], dtype=np.int32),
                              "return_log_probs": np.array([[True]])})
    [(outputs, error, final)] = recorder.responses
    assert final and error is None
    result = generator.generate(["Aspirin is", "The cell"], num_beams=3, num_return_sequences=2, max_new_tokens=6)
    assert _texts(outputs["text_output"]) == result.texts
    # beam search: the score without its length normalisation (EOS counted as the score counts it)
    expected = [[s.score * (len(s.token_ids) + (s.stop_reason == "eos")) for s in group] for group in result.sequences]
    np.testing.assert_allclose(outputs["cum_log_probs"], expected, rtol=1e-5)


def test_streamed_deltas_add_up_and_the_last_response_is_final(service, generator):
    recorder = _run(service, {"text_input": np.array([[b"Aspirin is"]], dtype=object),
                              "max_tokens": np.array([[30]], dtype=np.int32), "stream": np.array([[True]])})
    *deltas, (last, error, final) = recorder.responses
    assert final and error is None and last is None  # flags only: nothing asked for log-probabilities
    assert all(not f for _, _, f in deltas)
    assert "".join(o["text_output"][0, 0].decode() for o, _, _ in deltas) == \
        generator.generate("Aspirin is", max_new_tokens=30).texts[0][0]


def test_stop_words_and_bad_words(service, generator):
    recorder = _run(service, {"text_input": np.array([[b"Aspirin is"]], dtype=object),
                              "max_tokens": np.array([[12]], dtype=np.int32),
                              "bad_words": np.array([[b"is"]], dtype=object),
                              "stop_words": np.array([[b"of"]], dtype=object)})
    [(outputs, error, final)] = recorder.responses
    assert error is None
    expected = generator.generate("Aspirin is", max_new_tokens=12, stop_strings=["of"],
                                  bad_words_ids=[generator.tokenizer.encode_plain("is")]).texts
    assert _texts(outputs["text_output"]) == expected
    assert expected != generator.generate("Aspirin is", max_new_tokens=12).texts


@pytest.mark.parametrize("tensors, message", [
    ({"text_input": np.array([[b""]], dtype=object)}, "text_input[0] is empty"),
    ({}, "the request has no text_input"),
    ({"text_input": np.array([[b"x"]], dtype=object), "top_p": np.array([[float("nan")]], dtype=np.float32)},
     "top_p must be a finite number"),
    ({"text_input": np.array([[b"x"], [b"y"]], dtype=object), "max_tokens": np.array([[1], [2], [3]], dtype=np.int32)},
     "max_tokens must have shape [1, k] or [2, k]"),
    ({"text_input": np.array([[b"x"]], dtype=object), "bogus": np.array([[1]])}, "unknown input(s) bogus"),
])
def test_errors_are_one_final_response(service, tensors, message):
    recorder = _run(service, tensors)
    [(outputs, error, final)] = recorder.responses
    assert final and outputs is None and message in error
    assert recorder.codes == ["invalid_argument"]  # the client's to fix: Triton answers 400 / INVALID_ARGUMENT


def test_settings_per_prompt(generator):
    prompts = read_prompts({"text_input": np.array([[b"a"], [b"b"]], dtype=object),
                            "max_tokens": np.array([[3], [4]], dtype=np.int32),
                            "stop_words": np.array([[b"x", b""]], dtype=object)})
    assert [p.values for p in prompts] == [{"max_tokens": 3, "stop_words": ["x"]}, {"max_tokens": 4, "stop_words": ["x"]}]
    with pytest.raises(GenerationSettingsError, match="not UTF-8"):
        read_prompts({"text_input": np.array([[b"\xff"]], dtype=object)})
