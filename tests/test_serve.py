"""`locomlx serve` on a loopback port with the real embedded model and the shipped library, asked by the real
`openai` client, by raw HTTP for the errors, and by a real headless browser for the web page."""

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key"
REVIEW = "Is this movie review positive or negative? A gorgeous, moving film with a wonderful cast."
SPAM = ("Is this message spam or not spam? WINNER!! You have been selected for a FREE cruise. "
        "Click here to claim your prize now!")
pytestmark = pytest.mark.real


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_from_a_terminal() -> None:
    """Ctrl-C reaches the server as it does in a terminal, also when the tests were started in the background
    (a non-interactive shell's `&` starts its job with SIGINT ignored, and a child inherits that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def served(real_model, tmp_path_factory):
    """The server as a student starts it, in its own process: 4 rows decode together, 12 more may wait."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("serve")
    log = folder / "serve.log"
    library = folder / "adapters"  # a copy: verdicts (POST /v1/feedback) are stored in the library
    shutil.copytree(ROOT / "adapters", library)
    env = {**os.environ, "LOCOMLX_API_KEY": KEY}
    with open(log, "w") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "locomlx"), "serve", "--port", str(port),
                                    "--adapters-dir", str(library), "--max-batch", "4",
                                    "--max-queue", "12"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   preexec_fn=_as_from_a_terminal)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"locomlx serve exited: {log.read_text()}")
            time.sleep(0.2)
    yield url, library
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(30) == 0, log.read_text()
    assert "stopped." in log.read_text()


@pytest.fixture(scope="module")
def server(served):
    return served[0]


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


def _post(url: str, body, key: str | None = KEY, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _ask(client, model: str, question: str, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                          max_tokens=kwargs.pop("max_tokens", 8), **kwargs)


def test_models_lists_auto_base_and_every_adapter_with_its_domain(client):
    models = {m.id: m for m in client.models.list().data}
    assert {"auto", "base", "sentiment-rt", "sentiment-rt-spring", "spam-assassin"} <= set(models)
    spring = models["sentiment-rt-spring"].model_dump()
    assert spring["domain"] == "sentiment" and spring["active"] is True and spring["parent"] == "smollm2-135m"
    assert models["sentiment-rt"].model_dump()["active"] is False


def test_auto_routes_a_review_to_the_sentiment_adapter_and_says_so(client):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": REVIEW}], max_tokens=8)
    answer = raw.parse()
    info = answer.model_dump()["locomlx"]
    assert info["adapter"] == "sentiment-rt-spring" and info["domain"] == "sentiment" and info["confidence"] > 0.5
    assert raw.headers["x-locomlx-adapter"] == "sentiment-rt-spring"
    assert answer.choices[0].message.content.strip().lower().startswith("positive")
    assert answer.usage.prompt_tokens > 10 and answer.usage.completion_tokens >= 1


def test_streamed_chat_equals_the_plain_answer_and_ends_with_usage(client):
    plain = _ask(client, "base", "What is the capital of France?", max_tokens=16)
    chunks = list(_ask(client, "base", "What is the capital of France?", max_tokens=16, stream=True,
                       stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and "Paris" in text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason


def test_completions_stop_n_seed_and_composition(client):
    text = client.completions.create(model="base", prompt="The capital of France is", max_tokens=6)
    assert text.choices[0].text.strip()
    stopped = _ask(client, "base", "What is the capital of France?", max_tokens=16, stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"
    sampled = [_ask(client, "base", "Write a word.", max_tokens=8, temperature=1.0, seed=5, n=2) for _ in range(2)]
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]
    composed = _ask(client, "sentiment-rt-spring:0.7+spam-assassin:0.3", REVIEW)
    assert composed.model_dump()["locomlx"]["adapter"] == "sentiment-rt-spring:0.7+spam-assassin:0.3"
    voted = _ask(client, "sentiment-rt-spring", REVIEW, extra_body={"votes": 3, "reread": True})
    assert "/3" in voted.model_dump()["locomlx"]["note"]


def test_sixteen_concurrent_clients_with_mixed_adapters_get_their_answers_alone(client):
    jobs = [("auto", REVIEW), ("sentiment-rt-spring", REVIEW), ("spam-assassin", SPAM), ("auto", SPAM),
            ("base", "What is the capital of France?"), ("math-chainsum", "What is 12 plus 30?"),
            ("summary-xsum", "Summarize in one sentence: The city council voted on Monday to build a new "
                             "bridge across the river, which will open in 2028."), ("sentiment-rt", REVIEW)] * 2
    alone = {(m, q): _ask(client, m, q, max_tokens=12).choices[0].message.content for m, q in set(jobs)}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda job: _ask(client, *job, max_tokens=12), jobs))
    assert [a.choices[0].message.content for a in answers] == [alone[job] for job in jobs]
    assert answers[3].model_dump()["locomlx"]["adapter"] == "spam-assassin"
    assert answers[0].choices[0].message.content.strip().lower().startswith("positive")


def test_errors_are_openai_json_and_the_server_lives_on(server, client):
    chat = server + "/v1/chat/completions"
    hi = [{"role": "user", "content": "hi"}]
    status, body = _post(chat, {"model": "nope", "messages": hi})
    assert status == 404 and body["error"]["code"] == "model_not_found" and "sentiment-rt" in body["error"]["message"]
    status, body = _post(chat, None, raw=b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = _post(chat, {"model": "auto"})
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = _post(chat, {"model": "auto", "messages": [{"role": "user", "content": 5}]})
    assert status == 400 and body["error"]["param"] == "messages[0].content"
    status, body = _post(chat, {"model": "auto", "messages": hi, "max_tokens": "many"})
    assert status == 400 and body["error"]["param"] == "max_tokens"
    status, body = _post(chat, {"model": "auto", "messages": [{"role": "user", "content": "word " * 9000}]})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded" and "8192" in body["error"]["message"]
    assert _post(chat, {"model": "auto", "messages": hi}, key=None)[0] == 401
    assert _post(chat, {"model": "auto", "messages": hi}, key="wrong")[0] == 401
    assert _post(server + "/v1/nowhere", {})[0] in (404, 405)
    assert "Paris" in _ask(client, "base", "What is the capital of France?", max_tokens=16).choices[0].message.content


def test_a_full_queue_gets_429_and_disconnected_clients_free_their_rows(server, client):
    from openai import RateLimitError

    streams = [_ask(client, "base", "Tell me a long story about a dragon.", max_tokens=2000, stream=True)
               for _ in range(16)]  # 4 decoding + 12 waiting = full
    with pytest.raises(RateLimitError) as refused:
        _ask(client, "base", "hi")
    assert refused.value.status_code == 429
    for stream in streams:
        next(iter(stream), None)
        stream.close()  # the client goes away mid-answer
    for _ in range(100):
        health = json.loads(urllib.request.urlopen(server + "/health").read())
        if health["in_flight"] == 0:
            break
        time.sleep(0.2)
    assert health["in_flight"] == 0 and health["decoding"] == 0
    assert _ask(client, "base", "hi").choices[0].message.content


def test_the_web_page_chats_and_shows_the_adapter_in_a_real_browser(served, tmp_path):
    from locomlx.router.feedback import read_feedback

    server, library = served
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing: scripts/setup.sh installs them")
        pytest.skip("chromium/chromedriver not installed (scripts/setup.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,800"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(server + "/")
        browser.execute_script(f"localStorage.setItem('locomlx-key', '{KEY}')")
        browser.get(server + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) > 3)
        browser.find_element(By.ID, "question").send_keys(REVIEW)
        browser.find_element(By.CSS_SELECTOR, "button.send").click()
        wait.until(lambda b: " token" in b.find_element(By.CSS_SELECTOR, ".assistant .who").text)  # the usage chunk
        answer = browser.find_element(By.CSS_SELECTOR, ".assistant .text").text
        footer = browser.find_element(By.CSS_SELECTOR, ".assistant .who").text
        assert "positive" in answer.lower()
        assert "adapter: sentiment-rt-spring" in footer and "confidence" in footer
        shots = Path(os.environ.get("LOCOMLX_SCREENSHOTS", tmp_path))  # docs/images keeps one for the docs
        shots.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shots / "serve-chat.png"))
        verdicts = browser.find_element(By.CSS_SELECTOR, ".assistant .verdict")
        assert "general" in verdicts.text and "sentiment" in verdicts.text  # the wrong-domain choices
        verdicts.find_element(By.XPATH, ".//button[text()='good']").click()
        wait.until(lambda b: "thanks: recorded" in b.find_element(By.CSS_SELECTOR, ".assistant .verdict").text)
        stored = [r for r in read_feedback(library) if r.query == REVIEW]
        assert [(r.verdict, r.source, r.routed_domain) for r in stored] == [("good", "serve", "sentiment")]
        browser.find_element(By.ID, "tab-board").click()
        wait.until(lambda b: "spam-assassin" in b.find_element(By.ID, "board").text)
    finally:
        browser.quit()


def test_feedback_on_a_response_is_stored_with_its_routing_decision(served, client):
    from locomlx.router.feedback import read_feedback

    server, library = served
    answer = _ask(client, "auto", SPAM)
    info = answer.model_dump()["locomlx"]
    assert info["domain"] == "spam" and info["chain"][0]["domain"] == "spam" and info["chain"][0]["taken"]
    status, body = _post(server + "/v1/feedback", {"id": answer.id, "verdict": "wrong", "domain": "general"})
    assert status == 200, body
    assert (body["object"], body["verdict"], body["domain"], body["routed_domain"]) == (
        "feedback", "wrong", "general", "spam")
    status, _ = _post(server + "/v1/feedback", {"id": answer.id, "verdict": "good"})
    assert status == 200
    stored = [r for r in read_feedback(library) if r.response_id == answer.id]
    assert [(r.source, r.response_id, r.verdict) for r in stored] == [("serve", answer.id, "wrong"),
                                                                      ("serve", answer.id, "good")]
    assert stored[0].query == SPAM and stored[0].answer == answer.choices[0].message.content
    assert stored[0].adapter == info["adapter"] and stored[0].router == "embedding"
    for body, status, param in [({"id": "chatcmpl-nope", "verdict": "good"}, 404, "id"),
                                ({"id": answer.id, "verdict": "meh"}, 400, "verdict"),
                                ({"id": answer.id, "verdict": "wrong"}, 400, "domain"),
                                ({"id": answer.id, "verdict": "wrong", "domain": "poetry"}, 400, "domain"),
                                ({"id": answer.id, "verdict": "good", "index": 3}, 400, "index")]:
        code, error = _post(server + "/v1/feedback", body)
        assert (code, error["error"]["param"]) == (status, param), error
    assert _post(server + "/v1/feedback", {"id": answer.id, "verdict": "good"}, key=None)[0] == 401
    assert len([r for r in read_feedback(library) if r.response_id == answer.id]) == 2  # refused: nothing stored
