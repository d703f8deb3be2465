"""Retrieval QA end to end: the PubMedQA prompt token for token, `ortgen rag ask`, the HTTP endpoint
(the same answer), re-indexing, and the question page in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from ortgen.cli import main
from ortgen.rag.prompt import QAPromptBuilder, QuestionTooLongError
from ortgen.serve.process import running_server
from tests.conftest import REAL_BIOGPT_TOKENIZER

QUESTION = "Does aspirin lower the risk of myocardial infarction?"
ARTIFACTS = Path(os.environ.get("ORTGEN_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))

needs_real_tokenizer = pytest.mark.skipif(not (REAL_BIOGPT_TOKENIZER / "vocab.json").is_file(),
                                          reason="needs the real BioGPT tokenizer files in ../shared/data")

CORPUS = [
    {"id": "aspirin", "title": "Aspirin in secondary prevention",
     "text": "Low-dose aspirin reduced the risk of myocardial infarction by a quarter in patients with established "
             "cardiovascular disease. Bleeding was the main harm."},
    {"id": "statins", "title": "Statins in heart failure",
     "text": "Rosuvastatin did not reduce cardiovascular mortality in older patients with systolic heart failure."},
    {"id": "metformin", "title": "Metformin",
     "text": "Metformin lowers hepatic glucose output and is the first-line drug for type 2 diabetes."},
    {"id": "brca", "title": "BRCA1 carriers",
     "text": "Women carrying BRCA1 mutations have a lifetime breast cancer risk of about seventy percent."},
]


@pytest.fixture(scope="module")
def pubmedqa_package(tmp_path_factory) -> Path:
    """A PubMedQA-format fine-tune (fairseq, 9 learned prompt tokens, the real BioGPT vocabulary), exported."""
    if not (REAL_BIOGPT_TOKENIZER / "vocab.json").is_file():
        pytest.skip("needs the real BioGPT tokenizer files in ../shared/data")
    pytest.importorskip("torch", reason="the fairseq fixture writes a torch checkpoint")
    from tests.helpers.fairseq import write_fairseq_biogpt

    root = tmp_path_factory.mktemp("pubmedqa")
    write_fairseq_biogpt(root / "fairseq", REAL_BIOGPT_TOKENIZER, hidden=16, heads=2, ffn=32, layers=1,
                         positions=256, learned_prompt=9)
    assert main(["export", str(root / "fairseq"), "-o", str(root / "pkg"), "--no-progress"]) == 0
    return root / "pkg"


@needs_real_tokenizer
def test_the_pubmedqa_prompt_is_the_training_format_token_for_token(pubmedqa_package):
    from transformers import BioGptTokenizer

    from ortgen.runtime.generator import Generator

    generator = Generator.load(pubmedqa_package)
    fmt = generator.prompt_format
    assert fmt is not None and fmt.answers_questions and len(fmt.learned_prompt_ids) == 9
    builder = QAPromptBuilder(generator.tokenizer, fmt, prefix_length=1)
    reference = BioGptTokenizer.from_pretrained(REAL_BIOGPT_TOKENIZER)
    passages = [c["text"] for c in CORPUS]

    def training_format(context: str) -> list[int]:  # fairseq's source: lowercased, a final period, </s> first
        source = f"question: {QUESTION} context: {context}".lower()
        source = source if source.endswith(".") else source + "."
        return reference(source)["input_ids"] + fmt.learned_prompt_ids

    whole = builder.build(QUESTION, passages, 1000)
    assert not whole.truncated and whole.passages_used == 4
    assert whole.ids == training_format(" ".join(passages))

    for budget in (90, 60, 40):  # contexts cut to fit: still the training format of a shorter context
        cut = builder.build(QUESTION, passages, budget)
        assert cut.truncated and len(cut.ids) <= budget
        context = cut.source.split(" context: ", 1)[1].rstrip(".")
        words = " ".join(passages).lower().split()
        kept = context.split()
        assert kept == words[:len(kept)], "cut at a word boundary, from the end"
        assert cut.ids == training_format(" ".join(" ".join(passages).split()[:len(kept)]))
        longer = builder.build(QUESTION, [" ".join(" ".join(passages).split()[:len(kept) + 1])], 10**6)
        assert len(longer.ids) > budget, "one more word would not have fit"
        assert QUESTION.lower().rstrip("?") in cut.source, "the question is always whole"
    with pytest.raises(QuestionTooLongError, match="shorten the question or lower max_new_tokens"):
        builder.build(QUESTION, passages, 15)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "papers.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in CORPUS) + "\n")
    return path


@pytest.fixture(scope="module")
def qa_index(corpus, embedder_dir, tmp_path_factory) -> Path:
    index = tmp_path_factory.mktemp("index") / "idx"
    assert main(["rag", "index", str(corpus), "-o", str(index), "--embedder", str(embedder_dir)]) == 0
    return index


def _ask(capsys, index: Path, package: Path, *extra: str) -> dict:
    assert main(["rag", "ask", str(index), str(package), QUESTION, "-k", "2", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_ask_returns_an_answer_and_its_sources_and_reindexing_embeds_nothing(demo_package, qa_index, corpus,
                                                                              capsys):
    answer = _ask(capsys, qa_index, demo_package, "--max-new-tokens", "12")
    assert answer["text"] and answer["question"] == QUESTION
    assert [s["doc_id"] for s in answer["sources"]][0] == "aspirin"
    assert answer["sources"][0]["title"] == "Aspirin in secondary prevention" and answer["sources"][0]["score"] > 0
    assert answer["prompt"]["passages_used"] >= 1 and answer["timings"]["total_seconds"] > 0
    assert main(["rag", "index", str(corpus), "-o", str(qa_index), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedded"] == 0 and report["unchanged"] == len(CORPUS)


@needs_real_tokenizer
def test_a_pubmedqa_package_gives_a_parsed_answer_and_the_http_endpoint_agrees(pubmedqa_package, qa_index, capsys):
    answer = _ask(capsys, qa_index, pubmedqa_package, "--max-new-tokens", "10")
    assert answer["answer"] in (None, "yes", "no", "maybe")  # random weights: rarely a parsable answer
    with running_server(pubmedqa_package, "--index", str(qa_index)) as server:
        body = {"question": QUESTION, "k": 2, "settings": {"max_new_tokens": 10}}
        response = httpx.post(server.url + "/v1/rag/answer", json=body, timeout=120)
        assert response.status_code == 200, response.text
        served = response.json()
        assert (served["text"], served["answer"]) == (answer["text"], answer["answer"])
        assert [s["chunk_id"] for s in served["sources"]] == [s["chunk_id"] for s in answer["sources"]]
        assert served["sources"][0]["highlights"], "the matched words are marked"
        collections = httpx.get(server.url + "/v1/rag/collections", timeout=30).json()["collections"]
        assert collections[0]["passages"] == len(CORPUS)
        bad = httpx.post(server.url + "/v1/rag/answer", json={"question": "", "k": 2}, timeout=30)
        assert bad.status_code == 400 and "question" in bad.json()["error"]["message"]


def test_the_http_endpoint_refuses_bad_requests_with_a_400_that_names_the_problem(demo_package, qa_index):
    with running_server(demo_package, "--index", str(qa_index)) as server:
        def post(**kwargs) -> httpx.Response:
            return httpx.post(server.url + "/v1/rag/answer", timeout=60, **kwargs)

        bad_filter = post(json={"question": QUESTION, "filters": {"expr": "doc_id ==== )"}})
        assert bad_filter.status_code == 400
        assert "filter expression 'doc_id ==== )': expected a value" in bad_filter.json()["error"]["message"]
        too_many = post(json={"question": QUESTION, "settings": {"max_new_tokens": 100000}})
        assert too_many.status_code == 400
        message = too_many.json()["error"]["message"]
        assert "max_new_tokens 100000 leaves no room" in message and "-" not in message.split("positions")[0]
        no_body = post()
        assert no_body.status_code == 400 and "the request has no body" in no_body.json()["error"]["message"]
        empty = post(json={})
        assert empty.status_code == 400 and "question: required field missing" in empty.json()["error"]["message"]
        good = post(json={"question": QUESTION, "k": 2, "filters": {"expr": 'doc_id in ["aspirin", "brca"]'},
                          "settings": {"max_new_tokens": 4}})
        assert good.status_code == 200 and {s["doc_id"] for s in good.json()["sources"]} <= {"aspirin", "brca"}


def test_the_cli_reports_a_bad_filter_in_one_line(qa_index, capsys):
    assert main(["rag", "search", str(qa_index), QUESTION, "--filter", "doc_id ==== )"]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "filter expression 'doc_id ==== )': expected a value" in err


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_the_page_asks_streams_the_answer_and_shows_the_sources_in_a_real_browser(demo_package, qa_index):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = _chromium()
    key = "page-key"
    with running_server(demo_package, "--index", str(qa_index), "--api-key", key) as server:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1200,900"):
            options.add_argument(flag)
        chrome = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            chrome.set_page_load_timeout(30)
            chrome.get(server.url + "/")
            assert chrome.title == "ortgen: ask demo-biogpt"
            chrome.find_element(By.ID, "key").send_keys(key)
            chrome.find_element(By.ID, "question").send_keys(QUESTION)
            chrome.find_element(By.ID, "submit").click()
            WebDriverWait(chrome, 60).until(
                lambda c: c.find_element(By.ID, "result").get_attribute("data-done") == "true"
                or c.find_element(By.ID, "error").text)
            assert chrome.find_element(By.ID, "error").text == ""
            answer = chrome.find_element(By.ID, "answer").text
            sources = [li.text for li in chrome.find_elements(By.CSS_SELECTOR, "#sources li")]
            marked = [m.text.lower() for m in chrome.find_elements(By.CSS_SELECTOR, "#sources mark")]
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            chrome.save_screenshot(str(ARTIFACTS / "rag-page.png"))
            # a second question that fails: its error stands alone, not under the first question's sources
            chrome.execute_script("const k = document.getElementById('k'); k.add(new Option('999', '999')); k.value = '999'")
            chrome.find_element(By.ID, "submit").click()
            WebDriverWait(chrome, 60).until(lambda c: c.find_element(By.ID, "error").text)
            error_text = chrome.find_element(By.ID, "error").text
            sources_after_error = chrome.find_elements(By.CSS_SELECTOR, "#sources li")
            sources_box_hidden = chrome.find_element(By.ID, "sources-box").get_attribute("hidden")
        finally:
            chrome.quit()
        expected = httpx.post(server.url + "/v1/rag/answer", headers={"Authorization": f"Bearer {key}"},
                              json={"question": QUESTION, "k": 5}, timeout=60).json()
    assert answer == expected["text"].strip() and answer
    assert len(sources) == len(expected["sources"]) >= 1
    assert "Aspirin in secondary prevention" in sources[0]
    assert set(marked) & {"aspirin", "risk", "myocardial", "infarction"}
    assert (ARTIFACTS / "rag-page.png").stat().st_size > 10_000
    assert error_text.startswith("400") and "k" in error_text
    assert sources_after_error == [] and sources_box_hidden is not None

