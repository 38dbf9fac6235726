"""Unit tests of the service clients through ``httpx.MockTransport`` (no sockets)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import httpx
import pytest

from prefect_modify_video.errors import (
    AuthenticationError,
    ClipValidationError,
    ContentModerationError,
    InsufficientCreditsError,
    InvalidInputError,
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    ProviderServerError,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from prefect_modify_video.blocks import build_backend
from prefect_modify_video.parameters import BackendSpec
from prefect_modify_video.providers import registry
from prefect_modify_video.providers.base import JobState, ModifyJob, ModifyRequest, wait_for_job
from prefect_modify_video.providers.fal import FalBackend
from prefect_modify_video.providers.http_client import USER_AGENT, check_video_answer
from prefect_modify_video.providers.http_errors import (
    describe_body,
    parse_retry_at,
    raise_for_status,
    request_surely_not_sent,
    translate_transport_errors,
)
from prefect_modify_video.providers.luma import LumaBackend
from prefect_modify_video.providers.replicate import ReplicateBackend
from prefect_modify_video.providers.segmind import SegmindAsyncBackend, SegmindBackend
from prefect_modify_video.providers.uploaders import HttpPutUploader

KEY = "sk-test-SECRET-0123456789"
BASE = "https://api.test"
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
HTML_405 = (
    "<html><head><title>405 Not Allowed</title></head><body><center><h1>405 Not Allowed"
    "</h1></center><hr><center>nginx</center></body></html>"
)


def run(coro):
    """Runs a coroutine to completion (no pytest-asyncio needed)."""
    return asyncio.run(coro)


class Recorder:
    """A MockTransport handler that answers from a list and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    @property
    def calls(self) -> int:
        return len(self.requests)


def make(cls, handler, **options):
    """A backend talking to ``handler``, with fast polls and no retry delays."""
    options.setdefault("poll_interval_seconds", 0.01)
    options.setdefault("retry_backoff_seconds", 0)
    return cls(KEY, BASE, transport=httpx.MockTransport(handler), **options)


@pytest.fixture
def request_(tmp_path: Path) -> ModifyRequest:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(MP4)
    frame = tmp_path / "frame.png"
    frame.write_bytes(PNG)
    return ModifyRequest(clip=clip, prompt="oil painting", mode="flex_2", first_frame=frame)


def video(**headers) -> httpx.Response:
    return httpx.Response(200, content=MP4, headers={"content-type": "video/mp4", **headers})


class FakeUploader:
    """A MediaUploader that pretends each file is on a CDN."""

    def __init__(self):
        self.paths: list[Path] = []

    async def upload(self, path: Path) -> str:
        self.paths.append(path)
        return f"https://cdn.test/{path.name}"


# --------------------------------------------------------------------------- Segmind v1


def test_segmind_submit_sends_multipart_and_saves_the_mp4(request_, tmp_path):
    handler = Recorder(
        video(**{"x-remaining-credits": "123.5", "x-cost": "0.6", "x-request-id": "req-1"})
    )

    async def scenario():
        async with make(SegmindBackend, handler) as backend:
            job = await backend.submit(request_, tmp_path / "work")
            out = await backend.download(job, tmp_path / "out" / "00000.mp4")
            again = await backend.download(job, tmp_path / "out" / "00000.mp4")
            return job, out, again

    job, out, again = run(scenario())
    sent = handler.requests[0]
    assert (sent.method, str(sent.url)) == ("POST", f"{BASE}/v1/modify-video")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("prefect-modify-video/")
    assert sent.headers["content-type"].startswith("multipart/form-data")
    body = sent.content
    assert b'name="video_url"; filename="clip.mp4"' in body and MP4 in body
    assert b'name="first_frame_url"; filename="frame.png"' in body and PNG in body
    assert b"Content-Type: video/mp4" in body and b"Content-Type: image/png" in body
    assert b'name="prompt"\r\n\r\noil painting' in body
    assert b'name="mode"\r\n\r\nflex_2' in body
    assert job.state is JobState.COMPLETED and job.job_id is None
    assert job.result_path.read_bytes() == MP4
    assert (job.request_id, job.cost_usd, job.remaining_credits) == ("req-1", 0.6, 123.5)
    assert out == again and out.read_bytes() == MP4
    assert [p.name for p in out.parent.iterdir()] == ["00000.mp4"]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html><body>Gateway says hi</body></html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json={"status": "error", "message": "something"}),
        httpx.Response(200, content=b"", headers={"content-type": "video/mp4"}),
    ],
    ids=["html", "json-without-url", "empty"],
)
def test_segmind_200_that_is_not_a_video_is_a_clip_validation_error(request_, tmp_path, answer):
    backend = make(SegmindBackend, Recorder(answer))
    with pytest.raises(ClipValidationError, match="not a video"):
        run(backend.submit(request_, tmp_path))
    assert list(tmp_path.glob("*.part")) == [] and list(tmp_path.glob(".*.part")) == []


def test_segmind_200_json_with_an_output_url_is_accepted(request_, tmp_path):
    handler = Recorder(
        httpx.Response(200, json={"output": "https://cdn.test/out.mp4"}, headers={"x-request-id": "r9"}),
        video(),
    )

    async def scenario():
        backend = make(SegmindBackend, handler)
        job = await backend.submit(request_, tmp_path)
        await backend.download(job, tmp_path / "out.mp4")
        return job

    job = run(scenario())
    assert job.result_url == "https://cdn.test/out.mp4" and job.result_path is None
    assert "x-api-key" not in handler.requests[1].headers
    assert (tmp_path / "out.mp4").read_bytes() == MP4


def test_segmind_with_uploader_sends_urls_as_json(request_, tmp_path):
    handler = Recorder(video())
    run(make(SegmindBackend, handler, uploader=FakeUploader()).submit(request_, tmp_path))
    assert json.loads(handler.requests[0].content) == {
        "mode": "flex_2",
        "prompt": "oil painting",
        "video_url": "https://cdn.test/clip.mp4",
        "first_frame_url": "https://cdn.test/frame.png",
    }


RESET = "2030-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "match"),
    [
        (400, {"error": "mode must be one of ..."}, {}, InvalidRequestError, "mode must be one of"),
        (401, {"error": "Invalid API key"}, {}, AuthenticationError, "SegmindCredentials.*SEGMIND_API_KEY"),
        (403, {"message": "Forbidden"}, {}, AuthenticationError, "Forbidden"),
        (404, {"detail": "Not Found"}, {}, InvalidRequestError, "Not Found"),
        (405, HTML_405, {"content-type": "text/html"}, InvalidRequestError, "405 Not Allowed"),
        (406, {"error": "Not enough credits"}, {}, InsufficientCreditsError, "Not enough credits"),
        (406, "", {}, InsufficientCreditsError, "not enough credits"),
        (406, {"error": "Unsupported Content-Type header"}, {}, InvalidRequestError, "Content-Type"),
        (402, {"detail": "Payment required"}, {}, InsufficientCreditsError, "Top up"),
        (403, {"detail": "User is locked. Reason: Exhausted balance."}, {}, InsufficientCreditsError, "Exhausted"),
        (422, {"detail": "video too long"}, {}, InvalidRequestError, "video too long"),
        (400, {"error": "Prompt flagged by content moderation"}, {}, ContentModerationError, "flagged"),
        (429, {"error": "Too many requests"}, {"x-rate-limit-reset-at-utc": RESET}, RateLimitedError, "2030-01-02T03:04:05"),
        (500, {"error": "boom"}, {}, ProviderServerError, "boom"),
        (502, "<html><title>502 Bad Gateway</title></html>", {"content-type": "text/html"}, ProviderServerError, "502 Bad Gateway"),
        (504, "upstream timed out", {"content-type": "text/plain"}, ProviderServerError, "upstream timed out"),
    ],
)
def test_segmind_error_mapping(request_, tmp_path, status, body, headers, error, match):
    content = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    if isinstance(body, dict):
        headers = {"content-type": "application/json", **headers}
    handler = Recorder(
        httpx.Response(status, content=content, headers={"x-request-id": "req-7", **headers})
    )
    with pytest.raises(error, match=match) as info:
        run(make(SegmindBackend, handler).submit(request_, tmp_path))
    assert info.value.provider == "segmind"
    assert info.value.status_code == status
    assert info.value.request_id == "req-7"
    assert "req-7" in str(info.value) and "segmind" in str(info.value)
    assert KEY not in str(info.value)
    assert handler.calls == 1  # a create is never resent after an answer
    if error is RateLimitedError:
        assert info.value.retry_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_create_is_resent_only_when_it_surely_was_not_sent(request_, tmp_path):
    handler = Recorder(httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), video())
    job = run(make(SegmindBackend, handler).submit(request_, tmp_path))
    assert job.state is JobState.COMPLETED and handler.calls == 3


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("read"), httpx.RemoteProtocolError("peer closed"), httpx.ReadError("reset"), httpx.WriteTimeout("w")],
)
def test_ambiguous_create_failure_surfaces_and_is_not_resent(request_, tmp_path, exc):
    handler = Recorder(exc, video())
    with pytest.raises(SubmitOutcomeUnknownError, match="may have accepted and billed") as info:
        run(make(SegmindBackend, handler).submit(request_, tmp_path))
    assert handler.calls == 1
    assert isinstance(info.value.__cause__, type(exc))
    assert not request_surely_not_sent(info.value)


def test_submit_checks_the_request_before_paying(tmp_path):
    handler = Recorder(video())
    backend = make(SegmindBackend, handler)
    missing = ModifyRequest(clip=tmp_path / "nope.mp4", prompt="", mode="adhere_1")
    with pytest.raises(InvalidInputError, match="does not exist"):
        run(backend.submit(missing, tmp_path))
    big = tmp_path / "big.mp4"
    big.write_bytes(MP4)
    backend.max_upload_bytes = 10
    with pytest.raises(InvalidInputError, match="at most 10"):
        run(backend.submit(ModifyRequest(clip=big, prompt="", mode="adhere_1"), tmp_path))
    backend.max_upload_bytes = 100_000_000
    with pytest.raises(InvalidInputError, match="unknown mode"):
        run(backend.submit(ModifyRequest(clip=big, prompt="", mode="wild"), tmp_path))  # type: ignore[arg-type]
    assert handler.calls == 0


# --------------------------------------------------------------------------- Segmind v2


def _v2_submitted(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "request_id": "abc",
            "status": "QUEUED",
            "poll_url": f"{BASE}/v1/requests/abc",
            "status_url": f"{BASE}/v2/requests/abc/status",
            "response_url": f"{BASE}/v2/requests/abc",
        },
    )


@pytest.mark.parametrize(
    "output",
    [
        "https://cdn.test/r.mp4",
        ["https://cdn.test/r.mp4"],
        {"url": "https://cdn.test/r.mp4"},
        json.dumps({"video": "https://cdn.test/r.mp4"}),
    ],
    ids=["string", "list", "dict", "json-string"],
)
def test_segmind_async_submit_poll_download(request_, tmp_path, output):
    handler = Recorder(
        _v2_submitted,
        httpx.Response(200, json={"status": "QUEUED"}),
        httpx.Response(502, text="bad gateway"),  # a poll is retried
        httpx.Response(200, json={"status": "PROCESSING"}),
        httpx.Response(200, json={"status": "COMPLETED", "metrics": {"inference_time": 160}}),
        httpx.Response(200, json={"status": "COMPLETED", "output": output}, headers={"x-cost": "0.61"}),
        video(),
    )

    async def scenario():
        async with make(SegmindAsyncBackend, handler) as backend:
            job = await backend.submit(request_, tmp_path)
            assert (job.job_id, job.state) == ("abc", JobState.QUEUED)
            assert job.extra["status_url"] == f"{BASE}/v2/requests/abc/status"
            done = await wait_for_job(backend, job)
            await backend.download(done, tmp_path / "o.mp4")
            return done

    done = run(scenario())
    first = handler.requests[0]
    assert str(first.url) == f"{BASE}/v2/modify-video"
    assert first.headers["content-type"].startswith("multipart/form-data")
    assert b'name="video_url"; filename="clip.mp4"' in first.content
    assert [str(r.url) for r in handler.requests[1:5]] == [f"{BASE}/v2/requests/abc/status"] * 4
    assert str(handler.requests[5].url) == f"{BASE}/v2/requests/abc"
    assert done.result_url == "https://cdn.test/r.mp4" and done.cost_usd == 0.61
    assert (tmp_path / "o.mp4").read_bytes() == MP4


def test_segmind_async_422_failed_is_a_failed_job(request_, tmp_path):
    job = ModifyJob(provider="segmind-async", state=JobState.QUEUED, job_id="abc")
    handler = Recorder(httpx.Response(422, json={"status": "FAILED", "error": "worker crashed"}))
    backend = make(SegmindAsyncBackend, handler)
    polled = run(backend.poll(job))
    assert polled.state is JobState.FAILED and polled.failure_reason == "worker crashed"
    assert str(handler.requests[0].url) == f"{BASE}/v2/requests/abc/status"
    with pytest.raises(JobFailedError, match="worker crashed"):
        run(wait_for_job(make(SegmindAsyncBackend, handler), job))


def test_segmind_async_moderation_failure_is_fatal(request_, tmp_path):
    job = ModifyJob(provider="segmind-async", state=JobState.QUEUED, job_id="abc")
    handler = Recorder(httpx.Response(422, json={"status": "FAILED", "error": "NSFW content detected"}))
    with pytest.raises(ContentModerationError, match="NSFW content detected") as info:
        run(make(SegmindAsyncBackend, handler).poll(job))
    assert info.value.job_id == "abc"


def test_segmind_async_other_422_is_an_invalid_request(request_, tmp_path):
    job = ModifyJob(provider="segmind-async", state=JobState.QUEUED, job_id="abc")
    handler = Recorder(httpx.Response(422, text="<html>bad</html>"))
    with pytest.raises(InvalidRequestError):
        run(make(SegmindAsyncBackend, handler).poll(job))


# --------------------------------------------------------------------------- Luma


def test_luma_needs_an_uploader(request_, tmp_path):
    handler = Recorder(httpx.Response(201, json={"id": "g"}))
    with pytest.raises(InvalidInputError, match="needs a storage uploader"):
        run(make(LumaBackend, handler).submit(request_, tmp_path))
    assert handler.calls == 0


def test_luma_submit_poll_download(request_, tmp_path):
    uploader = FakeUploader()
    generation = {"id": "gen-1", "state": "queued", "failure_reason": None, "assets": None}
    handler = Recorder(
        httpx.Response(201, json=generation),
        httpx.Response(200, json={**generation, "state": "dreaming"}),
        httpx.Response(200, json={**generation, "state": "completed", "assets": {"video": "https://cdn.test/v.mp4"}}),
        video(),
    )

    async def scenario():
        async with make(LumaBackend, handler, uploader=uploader, model="ray-flash-2") as backend:
            assert backend.max_segment_seconds == 15.0 and backend.max_concurrency == 10
            job = await backend.submit(request_, tmp_path)
            done = await wait_for_job(backend, job)
            await backend.download(done, tmp_path / "o.mp4")
            return job, done

    job, done = run(scenario())
    create = handler.requests[0]
    assert str(create.url) == f"{BASE}/dream-machine/v1/generations/video/modify"
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(create.content) == {
        "generation_type": "modify_video",
        "media": {"url": "https://cdn.test/clip.mp4"},
        "mode": "flex_2",
        "model": "ray-flash-2",
        "prompt": "oil painting",
        "first_frame": {"url": "https://cdn.test/frame.png"},
    }
    assert (job.job_id, job.state) == ("gen-1", JobState.QUEUED)
    assert str(handler.requests[1].url) == f"{BASE}/dream-machine/v1/generations/gen-1"
    assert done.result_url == "https://cdn.test/v.mp4"
    download = handler.requests[3]
    assert download.url.host == "cdn.test" and "authorization" not in download.headers


@pytest.mark.parametrize(
    ("reason", "error"),
    [("Advanced moderation failed", ContentModerationError), ("400: failed to moderate image", ContentModerationError)],
)
def test_luma_moderation_failure_is_fatal(reason, error):
    job = ModifyJob(provider="luma", state=JobState.QUEUED, job_id="g")
    handler = Recorder(httpx.Response(200, json={"id": "g", "state": "failed", "failure_reason": reason}))
    with pytest.raises(error, match=reason):
        run(make(LumaBackend, handler).poll(job))


def test_luma_other_failure_is_a_failed_job():
    job = ModifyJob(provider="luma", state=JobState.QUEUED, job_id="g")
    handler = Recorder(httpx.Response(200, json={"id": "g", "state": "failed", "failure_reason": "internal"}))
    polled = run(make(LumaBackend, handler).poll(job))
    assert (polled.state, polled.failure_reason) == (JobState.FAILED, "internal")


def test_luma_credits_and_price():
    handler = Recorder(httpx.Response(200, json={"credit_balance": 12345.0}))
    backend = make(LumaBackend, handler)
    assert run(backend.get_credits()) == 12345.0
    assert str(handler.requests[0].url) == f"{BASE}/dream-machine/v1/credits"
    assert backend.estimate_cost_usd(5, 1280, 720) == pytest.approx(1.75, abs=0.01)
    assert backend.estimate_cost_usd(5, 1920, 1080) == pytest.approx(1.75, abs=0.01)  # scaled to 1280
    flash = make(LumaBackend, handler, model="ray-flash-2")
    assert flash.estimate_cost_usd(5, 1280, 720) == pytest.approx(0.60, abs=0.01)
    with pytest.raises(InvalidInputError, match="unknown model"):
        make(LumaBackend, handler, model="ray-9")


def test_http_put_uploader(tmp_path):
    clip = tmp_path / "my clip.mp4"
    clip.write_bytes(MP4)
    handler = Recorder(
        httpx.Response(503, text="busy"),
        lambda r: httpx.Response(200, json={"url": f"http://store.test/files/{r.url.path.rsplit('/', 1)[1]}"}),
    )
    uploader = HttpPutUploader(
        "http://store.test/", transport=httpx.MockTransport(handler), retry_backoff_seconds=0
    )
    url = run(uploader.upload(clip))
    put = handler.requests[-1]
    assert put.method == "PUT" and put.content == MP4 and handler.calls == 2
    name = put.url.raw_path.decode().rsplit("/", 1)[1]
    assert put.url.path.startswith("/uploads/") and name.endswith("-my%20clip.mp4")
    assert len(name.split("-", 1)[0]) == 16
    assert url == f"http://store.test/files/{put.url.path.rsplit('/', 1)[1]}"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(200, text="https://cdn.test/files/a.mp4\n"), "https://cdn.test/files/a.mp4"),
        (httpx.Response(201, text="http://cdn.test/a.mp4", headers={"content-type": "text/plain"}), "http://cdn.test/a.mp4"),
        (httpx.Response(200, json={"url": "https://cdn.test/b.mp4"}), "https://cdn.test/b.mp4"),
        (httpx.Response(200, json={"ok": True}), None),
        (httpx.Response(200, text="OK"), None),
        (httpx.Response(204), None),
        (httpx.Response(200, text="stored at https://cdn.test/c.mp4"), None),
    ],
)
def test_http_put_uploader_reads_a_json_or_plain_text_url(tmp_path, answer, expected):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(MP4)
    handler = Recorder(answer)
    uploader = HttpPutUploader("http://store.test", transport=httpx.MockTransport(handler))
    url = run(uploader.upload(clip))
    assert url == (expected or str(handler.requests[0].url))
    assert handler.calls == 1


# --------------------------------------------------------------------------- fal


def test_fal_submit_poll_download(request_, tmp_path):
    urls = {
        "request_id": "f-1",
        "status_url": f"{BASE}/fal-ai/luma-dream-machine/requests/f-1/status",
        "response_url": f"{BASE}/fal-ai/luma-dream-machine/requests/f-1",
        "cancel_url": f"{BASE}/fal-ai/luma-dream-machine/requests/f-1/cancel",
    }
    handler = Recorder(
        httpx.Response(200, json=urls),
        httpx.Response(202, json={"status": "IN_QUEUE", "queue_position": 3}),
        httpx.Response(202, json={"status": "IN_PROGRESS"}),
        httpx.Response(200, json={"status": "COMPLETED"}),
        httpx.Response(200, json={"video": {"url": "https://cdn.test/f.mp4", "content_type": "video/mp4"}}),
        video(),
    )

    async def scenario():
        async with make(FalBackend, handler) as backend:
            job = await backend.submit(request_, tmp_path)
            done = await wait_for_job(backend, job)
            await backend.download(done, tmp_path / "o.mp4")
            return job, done

    job, done = run(scenario())
    create = handler.requests[0]
    assert str(create.url) == f"{BASE}/fal-ai/luma-dream-machine/ray-2/modify"
    assert create.headers["authorization"] == f"Key {KEY}"
    body = json.loads(create.content)
    assert body["video_url"] == "data:video/mp4;base64," + base64.b64encode(MP4).decode()
    assert body["image_url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert (body["prompt"], body["mode"]) == ("oil painting", "flex_2")
    assert job.job_id == "f-1" and job.extra == {k: v for k, v in urls.items() if k != "request_id"}
    assert str(handler.requests[1].url) == urls["status_url"]
    assert str(handler.requests[4].url) == urls["response_url"]
    assert done.result_url == "https://cdn.test/f.mp4"
    assert (tmp_path / "o.mp4").read_bytes() == MP4


def test_fal_flash_endpoint_and_price(request_, tmp_path):
    handler = Recorder(httpx.Response(200, json={"request_id": "x"}))
    backend = make(FalBackend, handler, model="ray-flash-2", uploader=FakeUploader())
    job = run(backend.submit(request_, tmp_path))
    assert str(handler.requests[0].url) == f"{BASE}/fal-ai/luma-dream-machine/ray-2-flash/modify"
    assert json.loads(handler.requests[0].content)["video_url"] == "https://cdn.test/clip.mp4"
    assert backend.estimate_cost_usd(10, 1280, 720) == pytest.approx(1.20)
    assert make(FalBackend, handler).estimate_cost_usd(10, 1280, 720) == pytest.approx(3.50)
    # Without URLs in the answer, the app-level queue routes are used.
    handler.answers = [httpx.Response(200, json={"status": "IN_PROGRESS"})]
    run(backend.poll(job))
    assert str(handler.requests[-1].url) == f"{BASE}/fal-ai/luma-dream-machine/requests/x/status"


@pytest.mark.parametrize(
    ("detail", "error"),
    [
        ([{"loc": ["body"], "msg": "The content could not be processed", "type": "content_policy_violation"}], ContentModerationError),
        ([{"loc": ["body", "video_url"], "msg": "Video too long", "type": "value_error"}], InvalidRequestError),
    ],
)
def test_fal_result_fetch_error_is_mapped(detail, error):
    job = ModifyJob(provider="fal", state=JobState.RUNNING, job_id="f-1", extra={})
    handler = Recorder(
        httpx.Response(200, json={"status": "COMPLETED"}),
        httpx.Response(422, json={"detail": detail}),
    )
    with pytest.raises(error, match=detail[0]["msg"]):
        run(make(FalBackend, handler).poll(job))


# --------------------------------------------------------------------------- Replicate


def test_replicate_submit_poll_download(request_, tmp_path):
    prediction = {
        "id": "p-1",
        "status": "starting",
        "urls": {"get": f"{BASE}/v1/predictions/p-1", "cancel": f"{BASE}/v1/predictions/p-1/cancel"},
    }
    handler = Recorder(
        httpx.Response(201, json=prediction),
        httpx.Response(200, json={**prediction, "status": "processing"}),
        httpx.Response(200, json={**prediction, "status": "succeeded", "output": ["https://cdn.test/p.mp4"]}),
        video(),
    )

    async def scenario():
        async with make(ReplicateBackend, handler, uploader=FakeUploader()) as backend:
            job = await backend.submit(request_, tmp_path)
            done = await wait_for_job(backend, job)
            await backend.download(done, tmp_path / "o.mp4")
            return job, done

    job, done = run(scenario())
    create = handler.requests[0]
    assert str(create.url) == f"{BASE}/v1/models/luma/modify-video/predictions"
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(create.content) == {
        "input": {
            "video": "https://cdn.test/clip.mp4",
            "first_frame": "https://cdn.test/frame.png",
            "prompt": "oil painting",
            "mode": "flex_2",
        }
    }
    assert job.job_id == "p-1" and job.extra["get_url"] == f"{BASE}/v1/predictions/p-1"
    assert str(handler.requests[1].url) == f"{BASE}/v1/predictions/p-1"
    assert done.result_url == "https://cdn.test/p.mp4"


@pytest.mark.parametrize(
    ("prediction", "state", "reason"),
    [
        ({"status": "failed", "error": "CUDA out of memory"}, JobState.FAILED, "CUDA out of memory"),
        ({"status": "canceled"}, JobState.FAILED, "prediction canceled"),
        ({"status": "aborted"}, JobState.FAILED, "prediction aborted"),
        ({"status": "succeeded", "output": "https://cdn.test/a.mp4"}, JobState.COMPLETED, None),
    ],
)
def test_replicate_statuses(prediction, state, reason):
    job = ModifyJob(provider="replicate", state=JobState.QUEUED, job_id="p-1")
    handler = Recorder(httpx.Response(200, json={"id": "p-1", **prediction}))
    polled = run(make(ReplicateBackend, handler).poll(job))
    assert (polled.state, polled.failure_reason) == (state, reason)


def test_replicate_flagged_prediction_is_moderation():
    job = ModifyJob(provider="replicate", state=JobState.QUEUED, job_id="p-1")
    handler = Recorder(httpx.Response(200, json={"id": "p-1", "status": "failed", "error": "Input flagged as sensitive (E005)"}))
    with pytest.raises(ContentModerationError, match="E005"):
        run(make(ReplicateBackend, handler).poll(job))


def test_replicate_429_body_gives_retry_at(request_, tmp_path):
    body = {"title": "Request was throttled.", "detail": "Request was throttled. Expected available in 1 second.", "status": 429}
    handler = Recorder(httpx.Response(429, json=body))
    before = datetime.now(timezone.utc)
    with pytest.raises(RateLimitedError, match="throttled") as info:
        run(make(ReplicateBackend, handler).submit(request_, tmp_path))
    assert handler.calls == 1
    assert before + timedelta(seconds=0.9) <= info.value.retry_at <= datetime.now(timezone.utc) + timedelta(seconds=1.1)


def test_replicate_documented_429_body_gives_retry_at(request_, tmp_path):
    body = {"detail": "Request was throttled. Your rate limit resets in ~30s."}
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_at(httpx.Response(429, json=body), now=now) == now + timedelta(seconds=30)
    handler = Recorder(httpx.Response(429, json=body))
    before = datetime.now(timezone.utc)
    with pytest.raises(RateLimitedError, match="resets in ~30s") as info:
        run(make(ReplicateBackend, handler).submit(request_, tmp_path))
    assert handler.calls == 1  # 30 s is within MAX_RETRY_WAIT_SECONDS, but a create is not resent
    assert before + timedelta(seconds=29) <= info.value.retry_at <= datetime.now(timezone.utc) + timedelta(seconds=31)


def test_poll_waits_out_a_short_rate_limit():
    job = ModifyJob(provider="replicate", state=JobState.QUEUED, job_id="p-1")
    handler = Recorder(
        httpx.Response(429, json={"detail": "Expected available in 0.05 seconds"}),
        httpx.Response(200, json={"id": "p-1", "status": "processing"}),
    )
    assert run(make(ReplicateBackend, handler).poll(job)).state is JobState.RUNNING
    assert handler.calls == 2


# --------------------------------------------------------------------------- downloads


def _completed(url: str = "https://cdn.test/r.mp4") -> ModifyJob:
    return ModifyJob(provider="fal", state=JobState.COMPLETED, job_id="j", result_url=url)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<!doctype html><html>Access denied</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json={"error": "expired"}),
        httpx.Response(200, content=b"hello world, not a video", headers={"content-type": "application/octet-stream"}),
    ],
    ids=["html", "json", "bytes"],
)
def test_download_refuses_what_is_not_a_video(tmp_path, answer):
    destination = tmp_path / "o.mp4"
    destination.write_bytes(b"old")
    handler = Recorder(answer)
    with pytest.raises(ClipValidationError, match="not a video"):
        run(make(FalBackend, handler, max_retries=1).download(_completed(), destination))
    assert handler.calls == 2  # retried once: a CDN hiccup may pass
    assert destination.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]


def test_download_retries_a_dropped_connection_and_replaces_atomically(tmp_path):
    destination = tmp_path / "o.mp4"
    destination.write_bytes(b"old")
    handler = Recorder(httpx.RemoteProtocolError("peer closed"), httpx.Response(503), video())
    out = run(make(FalBackend, handler).download(_completed(), destination))
    assert out.read_bytes() == MP4 and handler.calls == 3
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]


def test_download_follows_redirects_without_leaking_the_key(tmp_path):
    handler = Recorder(
        httpx.Response(302, headers={"location": "https://s3.test/bucket/r.mp4?sig=1"}),
        video(),
    )
    run(make(SegmindAsyncBackend, handler).download(_completed(f"{BASE}/files/r.mp4"), tmp_path / "o.mp4"))
    first, second = handler.requests
    assert first.headers["x-api-key"] == KEY  # same host as the API
    assert str(second.url) == "https://s3.test/bucket/r.mp4?sig=1"
    assert "x-api-key" not in second.headers


@pytest.mark.parametrize("status", [404, 410, 403])
def test_download_of_an_expired_result_is_a_failed_job(tmp_path, status):
    handler = Recorder(httpx.Response(status, text="<Error>AccessDenied / NoSuchKey</Error>"))
    with pytest.raises(JobFailedError, match="no longer available"):
        run(make(ReplicateBackend, handler).download(_completed(), tmp_path / "o.mp4"))
    assert handler.calls == 1


def test_download_without_a_result_url_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="no result"):
        run(make(FalBackend, Recorder(video())).download(
            ModifyJob(provider="fal", state=JobState.RUNNING, job_id="j"), tmp_path / "o.mp4"
        ))


# --------------------------------------------------------------------------- helpers


def test_retry_at_formats():
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def at(headers=None, text=""):
        return parse_retry_at(httpx.Response(429, headers=headers or {}, text=text), now=now)

    assert at({"x-rate-limit-reset-at-utc": "2030-01-01T00:00:30"}) == now + timedelta(seconds=30)
    assert at({"x-rate-limit-reset-at-utc": str(int((now + timedelta(seconds=5)).timestamp()))}) == now + timedelta(seconds=5)
    assert at({"x-rate-limit-reset-at-utc": str(int((now + timedelta(seconds=5)).timestamp() * 1000))}) == now + timedelta(seconds=5)
    assert at({"retry-after": "7"}) == now + timedelta(seconds=7)
    assert at({"retry-after": "Tue, 01 Jan 2030 00:01:00 GMT"}) == now + timedelta(minutes=1)
    assert at(text="Expected available in 3 seconds.") == now + timedelta(seconds=3)
    assert at(text="Expected available in 500ms") == now + timedelta(seconds=0.5)
    assert at(text="Your rate limit resets in ~30s.") == now + timedelta(seconds=30)
    assert at(text="Your rate limit resets in 2 minutes") == now + timedelta(minutes=2)
    assert at({"retry-after": "soon"}) is None and at() is None


def test_describe_body_is_safe_and_short():
    html_body = "<html><head><style>x{}</style><title>Oops</title></head><body><p>Bad &amp; worse</p></body></html>"
    assert describe_body(httpx.Response(500, text=html_body)) == "Oops: Bad & worse"
    assert describe_body(httpx.Response(405, text=HTML_405)) == "405 Not Allowed nginx"
    assert describe_body(httpx.Response(400, json={"detail": "Too long."})) == "Too long"
    assert describe_body(httpx.Response(500, content=b"\xff\xfe\x00garbage")).startswith("garbage") is False
    assert describe_body(httpx.Response(400, json={"error": {"message": f"bad key {KEY}"}}), redact=[KEY]) == "bad key ***"
    assert len(describe_body(httpx.Response(500, text="x" * 5000))) == 300
    assert describe_body(httpx.Response(500)) == ""


def test_raise_for_status_without_a_request_and_on_redirect():
    with pytest.raises(ProviderServerError, match="fal: server error: oops"):
        raise_for_status(httpx.Response(500, text="oops"), "fal")
    with pytest.raises(ProviderError, match="unexpected answer 302"):
        raise_for_status(httpx.Response(302, text=""), "fal")
    raise_for_status(httpx.Response(204), "fal")


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("x"), ProviderUnavailableError),
        (httpx.ConnectTimeout("x"), ProviderUnavailableError),
        (httpx.PoolTimeout("x"), ProviderUnavailableError),
        (httpx.ReadTimeout("x"), ProviderUnavailableError),
        (httpx.WriteTimeout("x"), ProviderUnavailableError),
        (httpx.ReadError("x"), ProviderUnavailableError),
        (httpx.WriteError("x"), ProviderUnavailableError),
        (httpx.CloseError("x"), ProviderUnavailableError),
        (httpx.RemoteProtocolError("x"), ProviderUnavailableError),
        (httpx.LocalProtocolError("x"), ProviderUnavailableError),
        (httpx.ProxyError("x"), ProviderUnavailableError),
        (httpx.UnsupportedProtocol("x"), InvalidRequestError),
        (httpx.InvalidURL("x"), InvalidRequestError),
        (httpx.DecodingError("x"), ProviderServerError),
        (httpx.TooManyRedirects("x"), ProviderServerError),
    ],
)
def test_every_httpx_error_is_translated(exc, error):
    with pytest.raises(error) as info:
        with translate_transport_errors("luma", what="poll"):
            raise exc
    assert info.value.__cause__ is exc and info.value.provider == "luma"


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("x"), ProviderUnavailableError),
        (httpx.PoolTimeout("x"), ProviderUnavailableError),
        (httpx.ReadTimeout("x"), SubmitOutcomeUnknownError),
        (httpx.RemoteProtocolError("x"), SubmitOutcomeUnknownError),
        (httpx.DecodingError("x"), SubmitOutcomeUnknownError),
    ],
)
def test_create_errors_after_sending_are_outcome_unknown(exc, error):
    with pytest.raises(error) as info:
        with translate_transport_errors("fal", what="submit", creates_job=True):
            raise exc
    assert request_surely_not_sent(info.value) is (error is ProviderUnavailableError)


def test_check_video_answer():
    check_video_answer("video/mp4", MP4[:64], provider="x")
    check_video_answer("application/octet-stream", MP4[:64], provider="x")
    check_video_answer("video/webm", b"\x1a\x45\xdf\xa3rest", provider="x")
    with pytest.raises(ClipValidationError):
        check_video_answer("video/mp4", b"<html>", provider="x")
    with pytest.raises(ClipValidationError):
        check_video_answer("application/octet-stream", b"\x00\x01\x02\x03\x04\x05\x06\x07", provider="x")


def test_backend_starts_once_and_hides_its_key():
    backend = make(FalBackend, Recorder(video()))
    assert KEY not in repr(backend)

    async def scenario():
        async with backend:
            pass
        async with backend:
            pass

    with pytest.raises(RuntimeError, match="only once"):
        run(scenario())


def test_no_key_in_logs(request_, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    job = ModifyJob(provider="fal", state=JobState.RUNNING, job_id="j")
    handler = Recorder(httpx.Response(500, text=f"echo {KEY}"))
    with pytest.raises(ProviderServerError) as info:
        run(make(FalBackend, handler, max_retries=2).poll(job))
    assert handler.calls == 3
    assert "retry 2 of 2" in caplog.text
    assert KEY not in caplog.text and KEY not in str(info.value)


# --------------------------------------------------------------------------- registry


def test_registry_names_and_keys(monkeypatch):
    assert registry.BACKEND_NAMES == (
        "local", "segmind", "segmind-async", "luma", "fal", "replicate", "runway", "luma-agents", "lucy"
    )
    for name, env_var, block in [
        ("segmind", "SEGMIND_API_KEY", "SegmindCredentials"),
        ("segmind-async", "SEGMIND_API_KEY", "SegmindCredentials"),
        ("luma", "LUMAAI_API_KEY", "LumaCredentials"),
        ("fal", "FAL_KEY", "FalCredentials"),
        ("replicate", "REPLICATE_API_TOKEN", "ReplicateCredentials"),
        ("runway", "RUNWAYML_API_SECRET", "RunwayCredentials"),
        ("luma-agents", "LUMA_AGENTS_API_KEY", "LumaAgentsCredentials"),
        ("lucy", "FAL_KEY", "FalCredentials"),
    ]:
        monkeypatch.delenv(env_var, raising=False)
        assert registry.backend_class(name).api_key_env == env_var
        with pytest.raises(InvalidInputError, match=f"{env_var}.*{block}"):
            build_backend(BackendSpec(name=name))
        monkeypatch.setenv(env_var, " from-env ")
        backend = build_backend(BackendSpec(name=name, base_url="http://127.0.0.1:9"))
        assert backend.name == name and backend.base_url == "http://127.0.0.1:9"
        assert backend._auth_headers()  # the key from the environment is used
        assert "from-env" in "".join(backend._auth_headers().values())
    assert registry.backend_class(" FAL ") is FalBackend
    assert type(build_backend(BackendSpec(name="fal", model="ray-2-flash"), api_key="k")).__name__ == "FalBackend"
    with pytest.raises(InvalidInputError, match="unknown backend"):
        registry.backend_class("kling")


def test_registry_builds_the_local_backend_without_a_key():
    backend = build_backend(BackendSpec(name="local"))
    assert backend.name == "local"


@pytest.mark.parametrize("cls, extra", [
    (FalBackend, {"status_url": "https://collector.example/fal/status", "response_url": "https://collector.example/r"}),
    (SegmindAsyncBackend, {"status_url": "https://api.test.evil.example/v2/requests/j1/status",
                           "response_url": "https://api.test.evil.example/v2/requests/j1"}),
])
def test_a_saved_job_naming_another_host_never_gets_the_key(cls, extra):
    from prefect_modify_video.errors import ForeignOriginError

    recorder = Recorder(httpx.Response(200, json={"status": "IN_QUEUE"}))
    job = ModifyJob(provider=cls.name, state=JobState.QUEUED, job_id="j1", extra=extra)

    async def poll():
        async with make(cls, recorder) as backend:
            await backend.poll(job)

    with pytest.raises(ForeignOriginError, match="refused to send the API key"):
        run(poll())
    assert recorder.calls == 0, "nothing may be sent to another host with the key"


def test_every_service_client_and_uploader_of_a_process_shares_one_tls_context():
    """Each segment builds its service's client; a client loading the CA bundle itself cost 50-200 ms of CPU,
    which was all of the time from a freed generation slot to the next create (``bench/fleet.py``)."""

    def context_of(client: httpx.AsyncClient) -> object:
        return client._transport._pool._ssl_context

    first = SegmindBackend(api_key="k1", base_url="https://api.example")
    second = LumaBackend(api_key="k2", base_url="https://api.example")
    uploader = HttpPutUploader("https://files.example")
    assert context_of(first._client) is context_of(second._client) is context_of(uploader._client)
    assert context_of(first._client) is not context_of(httpx.AsyncClient())
