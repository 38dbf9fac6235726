"""Tests of the fake modify-video server, with plain httpx (no project clients, no Prefect)."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest

from prefect_modify_video.testing import FakeModifyServer, Fault, FaultKind
from prefect_modify_video.testing.fake import MODES

KEY = "fake-key-123"
SEGMIND = {"x-api-key": KEY}
LUMA = {"Authorization": f"Bearer {KEY}"}
FAL = {"Authorization": f"Key {KEY}"}
REPLICATE = {"Authorization": f"Bearer {KEY}"}
LUMA_CREATE = "/dream-machine/v1/generations/video/modify"
REPLICATE_CREATE = "/v1/models/luma/modify-video/predictions"


# ----------------------------------------------------------------- fixtures and helpers


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        check=True,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s, 30 fps, 320x180 clip with audio."""
    path = tmp_path_factory.mktemp("media") / "input.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=2",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def clip(clip_path: Path) -> bytes:
    return clip_path.read_bytes()


@pytest.fixture(scope="session")
def clip_uri(clip: bytes) -> str:
    return "data:video/mp4;base64," + base64.b64encode(clip).decode()


@pytest.fixture(scope="session")
def frame_png(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("media") / "first.png"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180", "-frames:v", "1", str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def server():
    with FakeModifyServer(
        polls_to_complete=2,
        rate_limit_reset_seconds=1.0,
        timeout_seconds=2.0,
        replicate_max_wait_seconds=10.0,
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest):
    """Gives each test that uses the server fresh counters, credits and options."""
    if "server" not in request.fixturenames:
        yield
        return
    fake: FakeModifyServer = request.getfixturevalue("server")
    fake.reset()
    yield
    fake.wait_idle(10)
    fake.output_size = None
    fake.api_key = None
    fake.reset()


@pytest.fixture
def client(server: FakeModifyServer):
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        yield http


def probe(data: bytes, tmp_path: Path) -> dict:
    """Frame rate, size, frame count, duration and audio presence of an MP4."""
    path = tmp_path / f"probe-{time.monotonic_ns()}.mp4"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
         "stream=codec_type,codec_name,pix_fmt,width,height,r_frame_rate,nb_read_packets"
         ":format=duration,format_name", "-of", "json", str(path)],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    info = json.loads(out)
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    num, den = video[0]["r_frame_rate"].split("/")
    return {
        "format": info["format"]["format_name"],
        "codec": video[0]["codec_name"],
        "pix_fmt": video[0]["pix_fmt"],
        "fps": int(num) / int(den),
        "size": (video[0]["width"], video[0]["height"]),
        "frames": int(video[0]["nb_read_packets"]),
        "duration": float(info["format"]["duration"]),
        "audio": any(s["codec_type"] == "audio" for s in info["streams"]),
    }


def mean_rgb(data: bytes, tmp_path: Path) -> np.ndarray:
    """The mean R, G, B of every pixel of every frame."""
    path = tmp_path / f"mean-{time.monotonic_ns()}.mp4"
    path.write_bytes(data)
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path),
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, 3).mean(axis=0)


def assert_modified(
    result: bytes, source: bytes, tmp_path: Path, *, duration: float = 2.0
) -> None:
    """The answer is a 24 fps silent H.264 MP4 of the source's size and length, recoloured."""
    info = probe(result, tmp_path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert "mp4" in info["format"]
    assert info["fps"] == 24
    assert not info["audio"]
    assert info["size"] == (320, 180)
    assert info["duration"] == pytest.approx(duration, abs=1 / 24 + 1e-3)
    assert info["frames"] == round(duration * 24)
    assert np.abs(mean_rgb(result, tmp_path) - mean_rgb(source, tmp_path)).max() > 10


def poll_until(get, done, limit: int = 10) -> list:
    """Calls ``get()`` until ``done(body)``; returns every body seen."""
    seen = []
    for _ in range(limit):
        seen.append(get())
        if done(seen[-1]):
            return seen
    raise AssertionError(f"not done after {limit} polls: {seen[-1]}")


# ----------------------------------------------------------------- happy paths


def test_segmind_v1_json_returns_a_modified_clip(server, client, clip, clip_uri, tmp_path):
    response = client.post(
        "/v1/modify-video",
        headers=SEGMIND,
        json={"video_url": clip_uri, "prompt": "pastel", "mode": "flex_1"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert float(response.headers["x-remaining-credits"]) == pytest.approx(100.0 - 0.6)
    assert float(response.headers["x-cost"]) == pytest.approx(0.6)
    assert float(response.headers["x-generation-time"]) >= 0
    assert response.headers["x-request-id"]
    assert_modified(response.content, clip, tmp_path)
    stats = server.stats("segmind")
    assert (stats.calls, stats.billed, stats.credits) == (1, 1, pytest.approx(99.4))
    [call] = server.received("segmind")
    assert call.params == {"prompt": "pastel", "mode": "flex_1", "video_source": "data"}


def test_segmind_v1_multipart_files_round_trip(server, client, clip, frame_png, tmp_path):
    response = client.post(
        "/v1/modify-video",
        headers=SEGMIND,
        files={
            "video_url": ("clip.mp4", clip, "video/mp4"),
            "first_frame_url": ("first.png", frame_png, "image/png"),
        },
        data={"prompt": "ink wash", "mode": "reimagine_2"},
    )

    assert response.status_code == 200, response.text
    assert_modified(response.content, clip, tmp_path)
    [call] = server.received("segmind")
    assert call.video_bytes == len(clip)
    assert call.first_frame_bytes == len(frame_png)
    assert call.params["mode"] == "reimagine_2"
    assert call.params["video_source"] == call.params["first_frame_source"] == "file"


def test_segmind_v2_queue_then_result(server, client, clip, clip_uri, tmp_path):
    created = client.post(
        "/v2/modify-video", headers=SEGMIND, json={"video_url": clip_uri, "mode": "adhere_1"}
    )
    assert created.status_code == 200
    body = created.json()
    assert body["status"] == "QUEUED"
    assert body["poll_url"] == body["status_url"]
    assert body["status_url"].startswith(server.base_url)

    statuses = poll_until(
        lambda: client.get(body["status_url"], headers=SEGMIND).json()["status"],
        lambda status: status == "COMPLETED",
    )
    result = client.get(body["response_url"], headers=SEGMIND)
    video = client.get(result.json()["output"])

    assert statuses == ["PROCESSING", "COMPLETED"]
    assert result.status_code == 200
    assert result.json()["output"].startswith(f"{server.base_url}/files/")
    assert_modified(video.content, clip, tmp_path)
    stats = server.stats("segmind")
    assert (stats.calls, stats.billed, stats.polls, stats.downloads) == (1, 1, 2, 1)


def test_luma_upload_generation_and_credits(server, client, clip, frame_png, tmp_path):
    media = client.put("/uploads/clip.mp4", content=clip, headers={"Content-Type": "video/mp4"})
    frame = client.put("/uploads/first.png", content=frame_png)
    assert media.status_code == 200
    assert client.get(media.json()["url"]).content == clip

    created = client.post(
        LUMA_CREATE,
        headers=LUMA,
        json={
            "generation_type": "modify_video",
            "media": {"url": media.json()["url"]},
            "first_frame": {"url": frame.json()["url"]},
            "mode": "flex_2",
            "model": "ray-2",
            "prompt": "oil painting",
        },
    )
    assert created.status_code == 201
    generation = created.json()
    assert generation["state"] == "queued"
    assert generation["assets"] is None and generation["failure_reason"] is None

    url = f"/dream-machine/v1/generations/{generation['id']}"
    states = poll_until(
        lambda: client.get(url, headers=LUMA).json(),
        lambda g: g["state"] in ("completed", "failed"),
    )
    assert [g["state"] for g in states] == ["dreaming", "completed"]
    assert_modified(client.get(states[-1]["assets"]["video"]).content, clip, tmp_path)
    credits = client.get("/dream-machine/v1/credits", headers=LUMA).json()
    assert credits == {"credit_balance": pytest.approx(50_000 - 175)}
    assert server.received("luma")[0].first_frame_bytes == len(frame_png)


@pytest.mark.parametrize("field", ["generation_type", "media", "mode", "model"])
def test_luma_rejects_missing_required_fields(server, client, clip_uri, field):
    body = {
        "generation_type": "modify_video",
        "media": {"url": clip_uri},
        "mode": "adhere_1",
        "model": "ray-flash-2",
    }
    del body[field]

    response = client.post(LUMA_CREATE, headers=LUMA, json=body)

    assert response.status_code == 400
    assert field.split("_")[0] in response.json()["detail"]
    assert (server.stats("luma").calls, server.stats("luma").billed) == (1, 0)


@pytest.mark.parametrize("variant", ["ray-2", "ray-2-flash"])
def test_fal_queue_for_both_models(server, client, clip, clip_uri, tmp_path, variant):
    created = client.post(
        f"/fal-ai/luma-dream-machine/{variant}/modify",
        headers=FAL,
        json={"video_url": clip_uri, "prompt": "neon", "mode": "flex_1"},
    )
    assert created.status_code == 200
    body = created.json()
    root = f"{server.base_url}/fal-ai/luma-dream-machine/requests/{body['request_id']}"
    assert body["status_url"] == f"{root}/status"
    assert body["response_url"] == root
    assert body["cancel_url"] == f"{root}/cancel"

    statuses = poll_until(
        lambda: client.get(body["status_url"], headers=FAL).json()["status"],
        lambda status: status == "COMPLETED",
    )
    result = client.get(body["response_url"], headers=FAL).json()

    assert statuses == ["IN_PROGRESS", "COMPLETED"]
    assert_modified(client.get(result["video"]["url"]).content, clip, tmp_path)
    assert server.received("fal")[0].params["model"] == variant
    assert server.stats("fal").billed == 1


def test_replicate_prefer_wait_answers_the_finished_prediction(
    server, client, clip, clip_uri, tmp_path
):
    response = client.post(
        REPLICATE_CREATE,
        headers={**REPLICATE, "Prefer": "wait=10"},
        json={"input": {"video": clip_uri, "prompt": "comic", "mode": "adhere_3"}},
    )

    assert response.status_code == 201
    prediction = response.json()
    assert prediction["status"] == "succeeded"
    assert isinstance(prediction["output"], str)
    assert prediction["urls"]["get"] == f"{server.base_url}/v1/predictions/{prediction['id']}"
    assert_modified(client.get(prediction["output"]).content, clip, tmp_path)
    assert server.stats("replicate").billed == 1


def test_replicate_polling_with_older_field_names(
    server, client, clip, clip_uri, frame_png, tmp_path
):
    frame_uri = "data:image/png;base64," + base64.b64encode(frame_png).decode()
    created = client.post(
        REPLICATE_CREATE,
        headers=REPLICATE,
        json={"input": {"video_url": clip_uri, "first_frame_url": frame_uri, "mode": "flex_3"}},
    )
    assert created.status_code == 201
    prediction = created.json()
    assert prediction["status"] == "starting"
    assert prediction["output"] is None and prediction["error"] is None
    assert prediction["input"]["video_url"] == "data:video/mp4;base64,..."

    seen = poll_until(
        lambda: client.get(prediction["urls"]["get"], headers=REPLICATE).json(),
        lambda p: p["status"] in ("succeeded", "failed", "canceled"),
    )

    assert [p["status"] for p in seen] == ["processing", "succeeded"]
    assert_modified(client.get(seen[-1]["output"]).content, clip, tmp_path)
    assert server.received("replicate")[0].first_frame_bytes == len(frame_png)


def test_output_size_option(server, client, clip_uri, tmp_path):
    server.output_size = (160, 96)

    response = client.post("/v1/modify-video", headers=SEGMIND, json={"video_url": clip_uri})

    assert probe(response.content, tmp_path)["size"] == (160, 96)


def test_modes_match_the_backend_protocol():
    from prefect_modify_video.providers.base import MODES as BACKEND_MODES

    assert MODES == BACKEND_MODES


# ----------------------------------------------------------------- auth


AUTH_CASES = {
    "segmind": ("POST", "/v1/modify-video", "x-api-key", "{key}"),
    "luma": ("POST", LUMA_CREATE, "Authorization", "Bearer {key}"),
    "fal": ("POST", "/fal-ai/luma-dream-machine/ray-2/modify", "Authorization", "Key {key}"),
    "replicate": ("POST", REPLICATE_CREATE, "Authorization", "Bearer {key}"),
}


@pytest.mark.parametrize("provider", list(AUTH_CASES))
def test_missing_wrong_scheme_or_wrong_key_is_401(server, client, provider):
    method, path, header, template = AUTH_CASES[provider]
    server.api_key = KEY
    attempts = [
        {},
        {header: template.format(key="someone-else")},
        {"Authorization": f"Basic {KEY}"} if header == "Authorization" else {"x-api-key": ""},
    ]
    for headers in attempts:
        response = client.request(method, path, headers=headers, json={})
        assert response.status_code == 401
        assert response.json()

    stats = server.stats(provider)
    assert (stats.calls, stats.billed) == (3, 0)


def test_polls_need_auth_too(server, client, clip_uri):
    created = client.post(LUMA_CREATE, headers=LUMA, json={
        "generation_type": "modify_video", "media": {"url": clip_uri},
        "mode": "adhere_1", "model": "ray-2",
    }).json()  # fmt: skip

    assert client.get(f"/dream-machine/v1/generations/{created['id']}").status_code == 401


# ----------------------------------------------------------------- credits


NO_CREDITS = {
    "segmind": (406, "Not enough credits"),
    "luma": (400, "Insufficient credits"),
    "fal": (403, "Exhausted balance"),
    "replicate": (402, "insufficient credit"),
}


def _create(client: httpx.Client, provider: str, clip_uri: str) -> httpx.Response:
    if provider == "segmind":
        return client.post("/v1/modify-video", headers=SEGMIND, json={"video_url": clip_uri})
    if provider == "luma":
        return client.post(LUMA_CREATE, headers=LUMA, json={
            "generation_type": "modify_video", "media": {"url": clip_uri},
            "mode": "adhere_1", "model": "ray-2",
        })  # fmt: skip
    if provider == "fal":
        return client.post(
            "/fal-ai/luma-dream-machine/ray-2/modify", headers=FAL, json={"video_url": clip_uri}
        )
    return client.post(REPLICATE_CREATE, headers=REPLICATE, json={"input": {"video": clip_uri}})


@pytest.mark.parametrize("provider", list(NO_CREDITS))
def test_exhausted_credits_answer_the_services_no_credit_error(server, client, clip_uri, provider):
    server.set_credits(provider, server.costs[provider] / 2)

    refused = _create(client, provider, clip_uri)
    server.restore_credits(provider)
    accepted = _create(client, provider, clip_uri)

    status, words = NO_CREDITS[provider]
    assert refused.status_code == status
    assert words.lower() in refused.text.lower()
    assert accepted.status_code in (200, 201)
    assert server.stats(provider).calls == 2
    assert server.wait_idle(10)  # queued jobs bill when their work is done, polled or not
    assert server.credits(provider) == pytest.approx(
        server.initial_credits[provider] - server.costs[provider]
    )


def test_no_credits_fault_is_406_and_not_billed(server, client, clip_uri):
    server.script("segmind", [Fault.NO_CREDITS])

    response = _create(client, "segmind", clip_uri)

    assert response.status_code == 406
    assert response.json() == {"error": "Not enough credits"}
    assert server.stats("segmind").billed == 0
    assert server.credits("segmind") == 100.0


# ----------------------------------------------------------------- faults


def test_server_500_is_not_billed_and_the_next_call_works(server, client, clip_uri):
    server.script("segmind", [Fault.SERVER_500, None])

    first = _create(client, "segmind", clip_uri)
    second = _create(client, "segmind", clip_uri)
    third = _create(client, "segmind", clip_uri)

    assert first.status_code == 500 and "error" in first.json()
    assert second.status_code == third.status_code == 200
    stats = server.stats("segmind")
    assert (stats.calls, stats.billed) == (3, 2)


@pytest.mark.parametrize("fault, status", [(Fault.SERVER_502, 502), (Fault.SERVER_504, 504)])
def test_gateway_errors_have_html_bodies(server, client, clip_uri, fault, status):
    server.script("fal", [fault])

    response = _create(client, "fal", clip_uri)

    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert server.stats("fal").billed == 0


def test_segmind_429_gives_a_reset_time_about_one_second_ahead(server, client, clip_uri):
    server.script("segmind", [Fault.RATE_LIMITED])

    response = _create(client, "segmind", clip_uri)

    assert response.status_code == 429
    assert "retry-after" not in response.headers
    reset_at = datetime.fromisoformat(response.headers["x-rate-limit-reset-at-utc"])
    ahead = (reset_at - datetime.now(timezone.utc)).total_seconds()
    assert 0 < ahead <= 1.0
    assert server.stats("segmind").billed == 0


def test_replicate_429_says_when_it_is_available(server, client, clip_uri):
    server.script("replicate", [Fault.rate_limited(3)])

    response = _create(client, "replicate", clip_uri)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json() == {
        "detail": "Request was throttled. Your rate limit resets in ~3s.",
        "status": 429,
    }


def test_luma_429_is_json(server, client, clip_uri):
    server.script("luma", [Fault.RATE_LIMITED])

    response = _create(client, "luma", clip_uri)

    assert response.status_code == 429
    assert "detail" in response.json()


def test_dropped_connection_raises_and_is_not_billed(server, client, clip_uri):
    server.script("segmind", [Fault.DROPPED_CONNECTION])

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        _create(client, "segmind", clip_uri)
    after = _create(client, "segmind", clip_uri)

    assert after.status_code == 200
    assert (server.stats("segmind").calls, server.stats("segmind").billed) == (2, 1)


def test_dropped_connection_after_accept_is_billed(server, client, clip_uri):
    server.script("segmind", [Fault.dropped_connection(after_accept=True)])

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        _create(client, "segmind", clip_uri)

    assert server.stats("segmind").billed == 1


def test_html_200(server, client, clip_uri):
    server.script("segmind", [Fault.HTML_200])

    response = _create(client, "segmind", clip_uri)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<!DOCTYPE html>")
    assert server.stats("segmind").billed == 0


def test_timeout_outlasts_the_client_but_the_work_is_still_billed(server, clip_uri):
    server.script("segmind", [Fault.timeout(1.0)])

    with httpx.Client(base_url=server.base_url, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            _create(impatient, "segmind", clip_uri)

    deadline = time.monotonic() + 10
    while server.stats("segmind").billed == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stats("segmind").billed == 1


def test_latency_delays_a_normal_answer(server, client, clip_uri):
    server.script("segmind", [Fault.latency(0.5)])

    started = time.monotonic()
    response = _create(client, "segmind", clip_uri)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.5
    assert server.stats("segmind").billed == 1


def test_wrong_length_returns_half_the_clip_and_bills(server, client, clip, clip_uri, tmp_path):
    server.script("segmind", [Fault.wrong_length(0.5)])

    response = _create(client, "segmind", clip_uri)

    assert response.status_code == 200
    assert_modified(response.content, clip, tmp_path, duration=1.0)
    assert server.stats("segmind").billed == 1


def test_moderation_segmind_v1_is_400(server, client, clip_uri):
    server.script("segmind", [Fault.MODERATION])

    response = _create(client, "segmind", clip_uri)

    assert response.status_code == 400
    assert "moderation" in response.json()["error"].lower()
    assert server.stats("segmind").billed == 0


def test_moderation_luma_fails_the_job(server, client, clip_uri):
    server.script("luma", [Fault.MODERATION])
    generation = _create(client, "luma", clip_uri).json()

    url = f"/dream-machine/v1/generations/{generation['id']}"
    seen = poll_until(
        lambda: client.get(url, headers=LUMA).json(),
        lambda g: g["state"] in ("completed", "failed"),
    )

    assert seen[-1]["state"] == "failed"
    assert seen[-1]["failure_reason"] == "Advanced moderation failed"
    assert seen[-1]["assets"] is None
    assert server.stats("luma").billed == 0


def test_moderation_fal_result_is_422(server, client, clip_uri):
    server.script("fal", [Fault.MODERATION])
    body = _create(client, "fal", clip_uri).json()

    poll_until(
        lambda: client.get(body["status_url"], headers=FAL).json()["status"],
        lambda status: status == "COMPLETED",
    )
    result = client.get(body["response_url"], headers=FAL)

    assert result.status_code == 422
    assert result.json()["detail"][0]["type"] == "content_policy_violation"
    assert server.stats("fal").billed == 0


def test_moderation_replicate_prediction_fails_flagged(server, client, clip_uri):
    server.script("replicate", [Fault.MODERATION])
    prediction = _create(client, "replicate", clip_uri).json()

    seen = poll_until(
        lambda: client.get(prediction["urls"]["get"], headers=REPLICATE).json(),
        lambda p: p["status"] in ("succeeded", "failed"),
    )

    assert seen[-1]["status"] == "failed"
    assert "flagged" in seen[-1]["error"] and seen[-1]["output"] is None
    assert server.stats("replicate").billed == 0


def test_segmind_v2_failed_job_answers_422_and_is_not_billed(server, client, clip_uri):
    server.script("segmind", [Fault.JOB_FAILED])
    body = client.post("/v2/modify-video", headers=SEGMIND, json={"video_url": clip_uri}).json()

    statuses = poll_until(
        lambda: client.get(body["status_url"], headers=SEGMIND).json()["status"],
        lambda status: status in ("COMPLETED", "FAILED"),
    )
    result = client.get(body["response_url"], headers=SEGMIND)

    assert statuses == ["PROCESSING", "FAILED"]
    assert result.status_code == 422
    assert result.json()["status"] == "FAILED" and result.json()["error"]
    assert (server.stats("segmind").calls, server.stats("segmind").billed) == (1, 0)


def test_stuck_job_never_completes(server, client, clip_uri):
    server.script("fal", [Fault.STUCK])
    body = _create(client, "fal", clip_uri).json()

    statuses = [client.get(body["status_url"], headers=FAL).json()["status"] for _ in range(4)]

    assert statuses == ["IN_PROGRESS"] * 4
    assert client.get(body["response_url"], headers=FAL).status_code == 400
    assert server.stats("fal").billed == 0


def test_poll_faults_hit_status_requests_only(server, client, clip_uri):
    server.script("luma", [Fault.SERVER_502], on="poll")
    generation = _create(client, "luma", clip_uri).json()
    url = f"/dream-machine/v1/generations/{generation['id']}"

    first = client.get(url, headers=LUMA)
    second = client.get(url, headers=LUMA)

    assert first.status_code == 502
    assert second.status_code == 200 and second.json()["state"] == "dreaming"


def test_job_faults_cannot_be_scripted_on_polls(server):
    with pytest.raises(ValueError, match="create"):
        server.script("fal", [Fault.MODERATION], on="poll")
    with pytest.raises(ValueError, match="provider"):
        server.script("kling", [None])


def test_fault_constructors_carry_parameters():
    assert Fault.latency(2.0) == Fault(FaultKind.LATENCY, seconds=2.0)
    assert Fault.timeout(5).seconds == 5
    assert Fault.wrong_length(0.25).factor == 0.25
    assert Fault.rate_limited(3).kind is FaultKind.RATE_LIMITED
    assert Fault.SERVER_500.kind is FaultKind.SERVER_500
    assert all(isinstance(getattr(Fault, kind.name), Fault) for kind in FaultKind)


def test_concurrent_calls_are_counted_exactly(server, clip_uri):
    server.script("segmind", [Fault.SERVER_500, Fault.SERVER_500])
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as own:
            status = _create(own, "segmind", clip_uri).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 4 + [500] * 2
    stats = server.stats("segmind")
    assert (stats.calls, stats.billed) == (6, 4)
    assert stats.credits == pytest.approx(100 - 4 * 0.6)


def test_reset_clears_counters_and_restores_credits(server, client, clip_uri):
    _create(client, "segmind", clip_uri)
    server.script("segmind", [Fault.SERVER_500])

    server.reset()

    stats = server.stats("segmind")
    assert (stats.calls, stats.billed, stats.credits) == (0, 0, 100.0)
    assert _create(client, "segmind", clip_uri).status_code == 200


def test_api_keys_are_not_logged(server, client, clip_uri, caplog):
    caplog.set_level("DEBUG", logger="prefect_modify_video")
    _create(client, "segmind", clip_uri)
    _create(client, "luma", clip_uri)

    assert caplog.records
    assert KEY not in caplog.text


def test_context_manager_stops_the_server():
    with FakeModifyServer() as fake:
        url = fake.base_url
        assert httpx.get(f"{url}/health").json() == {"ok": True}

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_segmind_wrong_content_type_is_406(server, client):
    response = client.post(
        "/v1/modify-video", headers={**SEGMIND, "Content-Type": "text/plain"}, content=b"hello"
    )

    assert response.status_code == 406
    assert "content-type" in response.json()["error"].lower()
    assert server.stats("segmind").billed == 0


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_run_fake_server_serves_until_interrupted(stop_signal):
    import signal
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c",
         "from prefect_modify_video.testing import run_fake_server; run_fake_server(0)"],
        stdout=subprocess.PIPE, text=True,
        # Started with SIGINT ignored, as a shell's background job is: Ctrl-C must stop it all the same.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        url = line.split(" on ")[1].split()[0]
        assert httpx.get(f"{url}/health", timeout=5).json() == {"ok": True}
    finally:
        process.send_signal(getattr(signal, stop_signal))
        assert process.wait(timeout=30) == 0


# ----------------------------------------------------------------- dialects


def test_services_come_from_the_dialect_registry(server):
    from prefect_modify_video.testing import DIALECTS
    from prefect_modify_video.testing.fake.server import DEFAULT_COSTS, PROVIDERS

    assert list(DIALECTS) == ["segmind", "luma", "fal", "replicate", "runway", "luma-agents"]
    assert all(cls.service == name for name, cls in DIALECTS.items())
    assert PROVIDERS == tuple(DIALECTS) and set(DEFAULT_COSTS) == set(DIALECTS)
    assert [server.stats(name).calls for name in DIALECTS] == [0] * 6


# ----------------------------------------------------------------- upload store answers


def test_upload_store_answers_json_by_default(server, client, clip):
    response = client.put("/uploads/plain.mp4", content=clip)

    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"url": f"{server.base_url}/uploads/plain.mp4"}


def test_upload_store_can_answer_the_url_as_plain_text(clip):
    with FakeModifyServer(upload_answer="text") as fake:
        base_url = fake.base_url
        response = httpx.put(f"{base_url}/uploads/a%20clip.mp4", content=clip)
        stored = httpx.get(response.text)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == f"{base_url}/uploads/a%20clip.mp4"
    assert stored.content == clip


def test_upload_answer_must_be_json_or_text():
    with pytest.raises(ValueError, match="upload_answer"):
        FakeModifyServer(upload_answer="xml")


# ----------------------------------------------------------------- rate-limit hints


def test_luma_and_fal_429_carry_no_hint_unless_asked(server, client, clip_uri):
    server.script("luma", [Fault.rate_limited(2)])
    server.script("fal", [Fault.rate_limited(1.2, retry_after=True)])

    plain = _create(client, "luma", clip_uri)
    hinted = _create(client, "fal", clip_uri)

    assert plain.status_code == hinted.status_code == 429
    assert "retry-after" not in plain.headers
    assert hinted.headers["retry-after"] == "2"
    assert hinted.json() == {"detail": "Too many requests: rate limit exceeded"}


def test_replicate_429_rounds_the_reset_up(server, client, clip_uri):
    server.script("replicate", [Fault.rate_limited(0.2), Fault.rate_limited(29.5)])

    short = _create(client, "replicate", clip_uri)
    long = _create(client, "replicate", clip_uri)

    assert short.json()["detail"] == "Request was throttled. Your rate limit resets in ~1s."
    assert long.json()["detail"] == "Request was throttled. Your rate limit resets in ~30s."
    assert server.stats("replicate").billed == 0


# ----------------------------------------------------------------- per-job faults


def _fal_job(client: httpx.Client, clip_uri: str) -> dict:
    created = _create(client, "fal", clip_uri)
    assert created.status_code == 200
    return created.json()


def test_each_job_answers_its_first_polls_429(server, client, clip, clip_uri, tmp_path):
    before = _fal_job(client, clip_uri)
    server.script_each_job("fal", [Fault.rate_limited(1, retry_after=True)] * 3, on="poll")
    jobs = [_fal_job(client, clip_uri) for _ in range(2)]

    for job in jobs:
        answers = [client.get(job["status_url"], headers=FAL) for _ in range(3)]
        assert [a.status_code for a in answers] == [429] * 3
        assert all(a.headers["retry-after"] == "1" for a in answers)
        statuses = poll_until(
            lambda: client.get(job["status_url"], headers=FAL).json()["status"],
            lambda status: status == "COMPLETED",
        )
        assert statuses == ["IN_PROGRESS", "COMPLETED"]
        result = client.get(job["response_url"], headers=FAL)
        assert result.status_code == 200
        assert_modified(client.get(result.json()["video"]["url"]).content, clip, tmp_path)
    earlier = client.get(before["status_url"], headers=FAL)

    assert earlier.status_code == 200  # a job created before the call keeps what it had
    assert server.wait_idle(10)
    stats = server.stats("fal")
    assert (stats.calls, stats.billed, stats.polls) == (3, 3, 5)
    assert stats.credits == pytest.approx(100 - 3 * 1.75)


def test_each_job_faults_come_before_the_providers_queue(server, client, clip_uri):
    server.script("luma", [Fault.SERVER_500], on="poll")
    server.script_each_job("luma", [Fault.NOT_FOUND], on="poll")
    generation = _create(client, "luma", clip_uri).json()
    url = f"/dream-machine/v1/generations/{generation['id']}"

    answers = [client.get(url, headers=LUMA) for _ in range(3)]

    assert [a.status_code for a in answers] == [404, 500, 200]
    assert answers[0].json() == {"detail": f"Request {generation['id']} not found"}
    server.script_each_job("luma", [], on="poll")
    assert _create(client, "luma", clip_uri).status_code == 201


def test_each_job_faults_are_for_polls_and_downloads_only(server):
    with pytest.raises(ValueError, match="poll"):
        server.script_each_job("fal", [Fault.SERVER_500], on="create")
    with pytest.raises(ValueError, match="create"):
        server.script_each_job("fal", [Fault.wrong_length(0.5)], on="poll")


@pytest.mark.parametrize(
    "fault, expect",
    [
        (Fault.SERVER_500, 500),
        (Fault.SERVER_502, 502),
        (Fault.NOT_FOUND, 404),
        (Fault.timeout(1.0), httpx.ReadTimeout),
        (Fault.DROPPED_CONNECTION, (httpx.RemoteProtocolError, httpx.ReadError)),
        (Fault.dropped_connection(after_accept=True), httpx.RemoteProtocolError),
    ],
    ids=["500", "502", "404", "timeout", "dropped", "truncated"],
)
def test_each_job_download_faults_never_bill_again(server, client, clip_uri, fault, expect):
    server.script_each_job("replicate", [fault], on="download")
    outputs = []
    for _ in range(2):
        created = client.post(
            REPLICATE_CREATE,
            headers={**REPLICATE, "Prefer": "wait=10"},
            json={"input": {"video": clip_uri}},
        )
        assert created.status_code == 201 and created.json()["status"] == "succeeded"
        outputs.append(created.json()["output"])

    for output in outputs:  # every job's first download misbehaves, the second works
        if isinstance(expect, int):
            assert client.get(output).status_code == expect
        else:
            with pytest.raises(expect):
                client.get(output, timeout=0.5)
        again = client.get(output)
        assert again.status_code == 200 and again.content[4:8] == b"ftyp"

    stats = server.stats("replicate")
    assert (stats.calls, stats.billed) == (2, 2)
    assert stats.credits == pytest.approx(100 - 2 * 1.75)


def test_provider_download_faults_still_work(server, client, clip_uri):
    server.script("segmind", [Fault.NOT_FOUND, Fault.SERVER_504], on="download")
    body = client.post("/v2/modify-video", headers=SEGMIND, json={"video_url": clip_uri}).json()
    poll_until(
        lambda: client.get(body["status_url"], headers=SEGMIND).json()["status"],
        lambda status: status == "COMPLETED",
    )
    output = client.get(body["response_url"], headers=SEGMIND).json()["output"]

    answers = [client.get(output) for _ in range(3)]

    assert [a.status_code for a in answers] == [404, 504, 200]
    assert answers[1].headers["content-type"].startswith("text/html")
    stats = server.stats("segmind")
    assert (stats.billed, stats.downloads) == (1, 1)


# ----------------------------------------------------------------- wrong length


def _frames(data: bytes, tmp_path: Path) -> np.ndarray:
    path = tmp_path / f"frames-{time.monotonic_ns()}.mp4"
    path.write_bytes(data)
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path),
         "-vf", "scale=80:45", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, 45, 80).astype(np.float32)


def test_wrong_length_is_the_start_of_the_sent_clip(server, client, clip_uri, tmp_path):
    server.script("segmind", [None, Fault.wrong_length(0.5)])

    full = _frames(_create(client, "segmind", clip_uri).content, tmp_path)
    short = _frames(_create(client, "segmind", clip_uri).content, tmp_path)

    assert (len(full), len(short)) == (48, 24)
    for index, frame in enumerate(short):
        distances = np.abs(full - frame).mean(axis=(1, 2))
        assert int(np.argmin(distances)) == index
    assert server.stats("segmind").billed == 2
