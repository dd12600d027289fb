"""The official OpenAI Python SDK (from PyPI, installed by scripts/setup.sh into .venv) against the
Engine: chat and completions, streaming and not, and an error surfaced as the SDK's exception."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI


@pytest.fixture
def client(engine):
    return OpenAI(base_url=engine.url + "/v1", api_key="sk-test", max_retries=0, timeout=10)


def test_chat(client):
    r = client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=6)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].message.content
    assert r.usage.completion_tokens == 6
    assert r.choices[0].finish_reason == "length"


def test_completions(client):
    r = client.completions.create(model="sim-model", prompt="say something", max_tokens=4)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage.completion_tokens == 4


def test_chat_stream(client):
    stream = client.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 5


def test_completions_stream(client):
    chunks = list(client.completions.create(model="sim-model", prompt="x", max_tokens=3, stream=True))
    assert len([c for c in chunks if c.choices]) == 3
    assert "".join(c.choices[0].text for c in chunks)


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "sim-model" in ids


def test_errors_become_sdk_exceptions(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sim-model", messages=[])
