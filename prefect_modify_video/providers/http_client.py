"""The HTTP client shared by the service backends: one request chokepoint, retries, downloads.

Every call a backend makes goes through ``HttpModifyBackend._request``. It adds the
user-agent and the service's auth header, and maps failures through
``prefect_modify_video.providers.http_errors``.

Retries inside the client:

- Polls, result fetches and downloads are idempotent: they are retried ``max_retries``
  times with exponential backoff on any ``RetryableProviderError`` (a 429 waits until the
  time the service gives, up to ``MAX_RETRY_WAIT_SECONDS``).
- A create (a paid call) is retried only when the request surely never reached the
  service (``request_surely_not_sent``). Anything more ambiguous (a read timeout, a
  connection dropped after sending) surfaces as ``SubmitOutcomeUnknownError``, which is
  fatal, so that a double charge is never made silently.

The API key is only ever put into request headers: it never appears in a message, a log
record or a URL, and any echo of it in an error body is redacted.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib.metadata
import logging
import mimetypes
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

from prefect_modify_video import stopping
from prefect_modify_video.errors import (
    ForeignOriginError,
    AuthenticationError,
    ClipValidationError,
    FatalProviderError,
    InvalidInputError,
    InvalidRequestError,
    JobFailedError,
    JobTimedOutError,
    ProviderServerError,
    ProviderUnavailableError,
    RateLimitedError,
    RetryableProviderError,
    SubmitOutcomeUnknownError,
)
from prefect_modify_video.limits import download_deadline_seconds
from prefect_modify_video.media.files import atomic_write, sniff_media
from prefect_modify_video.providers.base import (
    MODES,
    MediaUploader,
    ModifyBackend,
    ModifyJob,
    ModifyRequest,
)
from prefect_modify_video.providers.http_errors import (
    describe_body,
    raise_for_status,
    request_id_of,
    request_surely_not_sent,
    translate_transport_errors,
)

logger = logging.getLogger("prefect_modify_video.providers")

T = TypeVar("T")


def _package_version() -> str:
    try:
        return importlib.metadata.version("prefect-modify-video")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"prefect-modify-video/{_package_version()}"
"""Sent with every request, so the services can tell this client apart."""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context of every client in this process (httpx's default: certifi, or ``SSL_CERT_FILE``).

    A client given none loads the CA bundle itself, 50-200 ms of CPU: that was all of the time
    from a freed generation slot to the next create, as every segment builds its service's client.

    Example:
        >>> tls_context() is tls_context()
        True
    """
    return httpx.create_ssl_context()

MAX_RETRY_WAIT_SECONDS = 60.0
"""Longest a client-side retry waits for a rate limit to reset; longer waits surface."""

RETRY_BACKOFF_SECONDS = float(os.environ.get("PREFECT_MODIFY_VIDEO_RETRY_BACKOFF_SECONDS", "1"))
"""First wait before a failed poll, download or upload is tried again; it doubles on each retry.
``PREFECT_MODIFY_VIDEO_RETRY_BACKOFF_SECONDS`` sets it for a process (the tests use 0.05)."""

RESULT_BYTES_PER_SENT_BYTE = 4
"""An answer is at most this many times the clip sent (the same frames, re-encoded)..."""
MIN_RESULT_BYTES = 50_000_000
"""...or this many bytes, whichever is more (a tiny clip may come back at a higher bitrate)."""


class ResultTooLargeError(FatalProviderError):
    """Raised when an answer is larger than a clip of what was sent can be: it is not written to disk.

    The same link would send the same body again, so it is not retried; the job stays saved.
    """


def max_result_bytes(sent_bytes: int) -> int:
    """The largest answer accepted for a clip of ``sent_bytes`` bytes: the one rule for every backend.

    Example:
        >>> max_result_bytes(2_000_000), max_result_bytes(100_000_000)
        (50000000, 400000000)
    """
    return max(RESULT_BYTES_PER_SENT_BYTE * sent_bytes, MIN_RESULT_BYTES)



async def retry_idempotent(
    operation: Callable[[], Awaitable[T]],
    *,
    provider: str,
    what: str,
    max_retries: int,
    backoff_seconds: float,
    retry_if: Callable[[RetryableProviderError], bool] | None = None,
) -> T:
    """Runs ``operation``, retrying it on ``RetryableProviderError`` with backoff.

    Job outcomes (``JobFailedError``, ``JobTimedOutError``) are never retried here, and a
    rate limit whose reset is further away than ``MAX_RETRY_WAIT_SECONDS`` surfaces.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except RetryableProviderError as exc:
            if (
                attempt >= max_retries
                or isinstance(exc, (JobFailedError, JobTimedOutError))
                or (retry_if is not None and not retry_if(exc))
            ):
                raise
            delay = backoff_seconds * (2**attempt)
            if isinstance(exc, RateLimitedError) and exc.retry_at is not None:
                wait = (exc.retry_at - datetime.now(timezone.utc)).total_seconds()
                if wait > MAX_RETRY_WAIT_SECONDS:
                    raise
                # The service said when: that, not a guess (Segmind's header, Replicate's body, Retry-After).
                delay = max(wait, 0.05)
            attempt += 1
            logger.warning(
                "%s: %s failed (%s); retry %d of %d in %.1f s",
                provider, what, exc, attempt, max_retries, delay,
            )
            await asyncio.sleep(delay)


# --------------------------------------------------------------------------- media helpers


def check_video_answer(
    content_type: str,
    head: bytes,
    *,
    provider: str,
    request_id: str | None = None,
    job_id: str | None = None,
) -> None:
    """Raises ``ClipValidationError`` unless an answer looks like a video file.

    The bytes decide (an MP4 has ``ftyp`` at offset 4); failing that, a ``video/*`` type on
    a body that does not start like text is accepted and left to the deeper checks.
    """
    content_type = (content_type or "").lower()
    if sniff_media(head) in ("mp4", "matroska"):
        return
    stripped = head.lstrip()
    textual = (
        content_type.startswith("text/")
        or any(word in content_type for word in ("json", "html", "xml"))
        or stripped[:1] in (b"<", b"{", b"[")
    )
    if head and content_type.startswith("video/") and not textual:
        return
    snippet = " ".join(head[:200].decode("utf-8", errors="replace").split())
    what = f"{content_type or 'no content type'}, {len(head)} first bytes: {snippet!r}"
    raise ClipValidationError(
        f"the answer is not a video ({what}); the segment can be tried again",
        provider=provider,
        request_id=request_id,
        job_id=job_id,
    )


def guess_mime(path: Path, default: str) -> str:
    """The MIME type of a file from its name, or ``default``."""
    return mimetypes.guess_type(path.name)[0] or default


def data_uri(path: Path, mime: str | None = None) -> str:
    """The file as a ``data:<mime>;base64,...`` URI, for services that accept those."""
    mime = mime or guess_mime(path, "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def parse_float(value: str | None) -> float | None:
    """Reads a number such as ``"12.5"`` or ``"$0.60"`` from a header; ``None`` if absent."""
    if not value:
        return None
    match = re.search(r"-?\d+(?:\.\d+)?", value.replace(",", ""))
    return float(match.group()) if match else None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port



# --------------------------------------------------------------------------- base backend


class HttpModifyBackend(ModifyBackend):
    """Base of the service backends: one ``httpx.AsyncClient`` and one ``_request``.

    Subclasses declare their service (``name``, ``service``, ``api_key_env``,
    ``credentials_block``, ``default_base_url``, caps), set ``_auth_headers``, and implement
    ``submit``, ``poll`` and ``estimate_cost_usd``; downloads are shared.
    """

    default_base_url: ClassVar[str] = ""
    default_timeout_seconds: ClassVar[float] = 120.0
    download_deadline_seconds: float | None = None
    """Total deadline of one result download, all its tries; ``None``: ``limits.download_deadline_seconds`` of
    the largest answer accepted (``result_limit_bytes``)."""

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        poll_interval_seconds: float | None = None,
        max_wait_seconds: float | None = None,
        uploader: MediaUploader | None = None,
        model: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
        retry_backoff_seconds: float = RETRY_BACKOFF_SECONDS,
    ):
        """Creates the backend; no request is made yet.

        Args:
            api_key: The service's API key (kept in request headers only).
            base_url: The API root; defaults to the real service. Tests point it at the
                fake server.
            timeout_seconds: Read/write timeout of one request.
            poll_interval_seconds: Overrides the class default for ``wait_for_job``.
            max_wait_seconds: Overrides the class default for ``wait_for_job``.
            uploader: Puts local files where the service can read them, for services that
                take media by URL.
            model: The service's model name, where it offers several.
            transport: An httpx transport, e.g. ``httpx.MockTransport`` in tests.
            max_retries: Retries of idempotent requests (polls, downloads).
            retry_backoff_seconds: First retry delay; it doubles on each retry.
        """
        if not api_key or not str(api_key).strip():
            raise InvalidInputError(self.missing_key_message())
        for option, value in (
            ("timeout_seconds", timeout_seconds),
            ("poll_interval_seconds", poll_interval_seconds),
            ("max_wait_seconds", max_wait_seconds),
        ):
            if value is not None and not float(value) > 0:
                raise InvalidInputError(f"{self.name}: {option} must be more than 0, not {value}")
        self._api_key = str(api_key).strip()
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        if poll_interval_seconds is not None:
            self.poll_interval_seconds = float(poll_interval_seconds)
        if max_wait_seconds is not None:
            self.max_wait_seconds = float(max_wait_seconds)
        if model is not None:
            self.model = model
        self.uploader = uploader
        self.max_retries = max_retries
        self.retry_backoff_seconds = retry_backoff_seconds
        timeout = float(timeout_seconds or self.default_timeout_seconds)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"user-agent": USER_AGENT},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            transport=transport,
            follow_redirects=False,
            verify=tls_context(),
        )
        self._base_origin = _origin(httpx.URL(self.base_url))
        self._started = False
        self._largest_sent_bytes = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    async def __aenter__(self) -> "HttpModifyBackend":
        if self._started or self._client.is_closed:
            raise RuntimeError(f"{self.name}: a backend can be started only once; create a new one")
        self._started = True
        return self

    async def aclose(self) -> None:
        """Closes the connections; the backend is not used afterwards."""
        await self._client.aclose()

    # ------------------------------------------------------------------ subclass hooks

    def _auth_headers(self) -> dict[str, str]:
        """The header carrying the API key."""
        raise NotImplementedError

    def _created_id(self, response: httpx.Response, data: Any, key: str) -> str:
        """The id a create answer gives under ``key``.

        Raises:
            ProviderServerError: the answer has none (so the job cannot be polled).
        """
        job_id = data.get(key) if isinstance(data, dict) else None
        if not job_id:
            raise ProviderServerError(
                f"submit: the answer has no {key}: {describe_body(response)}",
                provider=self.name,
                status_code=response.status_code,
                request_id=request_id_of(response),
            )
        return str(job_id)

    # ------------------------------------------------------------------ the chokepoint

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        what: str,
        auth: bool = True,
        creates_job: bool = False,
        accept: Collection[int] = (),
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if creates_job:
            # After the first SIGINT/SIGTERM of a CLI run nothing more is bought.
            stopping.check_stop(f"{self.name}: {what}: no new job is sent")
            if self.before_create is not None:
                self.before_create(self.create_marker(kwargs.get("json")))
        with translate_transport_errors(self.name, what=what, creates_job=creates_job):
            request = self._client.build_request(method, url, headers=headers, **kwargs)
            if auth:
                if not self._same_origin(request.url):
                    # A poll or result address saved in a shared store could name any host: the key goes
                    # only to the service's own address.
                    raise ForeignOriginError(
                        f"{what}: refused to send the API key to {request.url.scheme}://{request.url.host}, which "
                        f"is not the service's address ({self.base_url}); a saved job naming it is not followed",
                        provider=self.name,
                    )
                request.headers.update(self._auth_headers())
            logger.debug("%s: %s %s%s", self.name, method, request.url.host, request.url.path)
            response = await self._client.send(request, stream=stream)
            if response.status_code < 300 or response.status_code in accept:
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
        self._raise_for_status(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for_status(self, response: httpx.Response) -> None:
        """``raise_for_status`` with this backend's name, key to redact and key hint."""
        raise_for_status(
            response, self.name, redact=(self._api_key,), key_hint=self.credentials_hint()
        )

    async def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        idempotent: bool,
        auth: bool = True,
        accept: Collection[int] = (),
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Sends one request through the single error-translation point.

        Args:
            method: HTTP method.
            url: A path under ``base_url`` or an absolute URL the service gave.
            what: The operation, for messages and logs.
            idempotent: Whether sending it twice is harmless (polls, downloads). If not
                (a create), it is resent only when it surely never left.
            auth: Whether to send the API key.
            accept: Statuses of 300 or more returned to the caller instead of raised.
            stream: Return before the body is read (the caller closes the response).
            **kwargs: Passed to ``httpx.AsyncClient.build_request``.

        Returns:
            The answer, with a status under 300 or in ``accept``.

        Raises:
            ProviderError: the specific subclass for the failure.
        """

        async def once() -> httpx.Response:
            return await self._send_once(
                method, url, what=what, auth=auth, creates_job=not idempotent,
                accept=accept, stream=stream, **kwargs,
            )

        return await retry_idempotent(
            once,
            provider=self.name,
            what=what,
            max_retries=self.max_retries,
            backoff_seconds=self.retry_backoff_seconds,
            retry_if=None if idempotent else request_surely_not_sent,
        )

    async def _get_json(
        self, url: str, *, what: str, accept: Collection[int] = ()
    ) -> tuple[httpx.Response, Any]:
        """GETs ``url`` (idempotent, retried) and parses its JSON body."""
        response = await self._request("GET", url, what=what, idempotent=True, accept=accept)
        return response, self._json(response, what=what)

    def _json(self, response: httpx.Response, *, what: str) -> Any:
        """The JSON body of an answer; a non-JSON body is a server error."""
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderServerError(
                f"{what}: the answer is not JSON: {describe_body(response, redact=(self._api_key,))}",
                provider=self.name,
                status_code=response.status_code,
                request_id=request_id_of(response),
            ) from exc

    # ------------------------------------------------------------------ requests and media

    def _check_request(self, request: ModifyRequest) -> None:
        """Refuses, before any paid call, a request the service would refuse anyway."""
        clip = Path(request.clip)
        if not clip.is_file():
            raise InvalidInputError(f"{self.name}: the clip {clip} does not exist")
        size = clip.stat().st_size
        self._largest_sent_bytes = max(self._largest_sent_bytes, size)
        if size > self.max_upload_bytes:
            raise InvalidInputError(
                f"{self.name}: the clip {clip} is {size} bytes; the service takes at most "
                f"{self.max_upload_bytes}. Plan shorter segments or a smaller size"
            )
        if request.mode not in MODES:
            raise InvalidInputError(
                f"{self.name}: unknown mode {request.mode!r}; use one of {', '.join(MODES)}"
            )
        if request.first_frame is not None and not Path(request.first_frame).is_file():
            raise InvalidInputError(
                f"{self.name}: the first frame {request.first_frame} does not exist"
            )

    async def _media_url(self, path: Path, default_mime: str) -> str:
        """A URL the service can read ``path`` at: the uploader's, else a data URI."""
        if self.uploader is not None:
            return await self.uploader.upload(Path(path))
        return data_uri(Path(path), guess_mime(Path(path), default_mime))

    # ------------------------------------------------------------------ downloads

    def _same_origin(self, url: httpx.URL) -> bool:
        return _origin(url) == self._base_origin

    async def _open_download(self, url: str, *, job: ModifyJob) -> tuple[httpx.Response, bool]:
        """GETs a result, following redirects by hand so the key never leaves the API host."""
        absolute = url.startswith(("http://", "https://"))
        target = httpx.URL(url) if absolute else self._client.base_url.join(url)
        for _ in range(6):
            auth = self._same_origin(target)
            try:
                response = await self._send_once(
                    "GET", str(target), what="download", auth=auth, stream=True,
                    accept=range(300, 400),
                )
            except (AuthenticationError, InvalidRequestError) as exc:
                gone = exc.status_code in (404, 410) or (
                    not auth and exc.status_code in (401, 403)
                )
                if not gone:
                    raise
                raise JobFailedError(
                    f"the result at {target.host}{target.path} is no longer available "
                    f"({exc.status_code}; results expire); a re-run sends the segment again",
                    provider=self.name,
                    status_code=exc.status_code,
                    job_id=job.job_id,
                ) from exc
            if response.is_redirect and "location" in response.headers:
                await response.aclose()
                target = target.join(response.headers["location"])
                continue
            return response, auth
        raise ProviderServerError("download: too many redirects", provider=self.name, job_id=job.job_id)

    def result_limit_bytes(self) -> int:
        """The largest answer accepted: ``max_result_bytes`` of the largest clip this backend sent, or of the
        largest the service takes (``max_upload_bytes``) for a job it did not send (one saved by an earlier run)."""
        return max_result_bytes(self._largest_sent_bytes or self.max_upload_bytes)

    def _download_deadline(self) -> float:
        if self.download_deadline_seconds is not None:
            return float(self.download_deadline_seconds)
        return download_deadline_seconds(self.result_limit_bytes())

    def _too_large(self, shown: str, size: str, *, what: str, job_id: str | None) -> ResultTooLargeError:
        limit = self.result_limit_bytes()
        sent = f"the {self._largest_sent_bytes:,}-byte clip sent" if self._largest_sent_bytes else (
            f"a clip of up to {self.max_upload_bytes:,} bytes")
        return ResultTooLargeError(
            f"{what}: the answer at {shown} is {size}, over the {limit:,}-byte limit for {sent} "
            f"(max({RESULT_BYTES_PER_SENT_BYTE} x the clip, {MIN_RESULT_BYTES:,} bytes)); refused, nothing kept"
            + (f". Job {job_id} stays saved: fetch its result from the service" if job_id else ""),
            provider=self.name,
            job_id=job_id,
        )

    async def _save_video(
        self, response: httpx.Response, destination: Path, *, what: str, job_id: str | None,
        creates_job: bool = False,
    ) -> Path:
        """Streams an answer's body to ``destination`` atomically and checks it is a video.

        The body is refused past ``result_limit_bytes`` (by its declared length, before anything is
        written, or as it arrives) and must arrive within ``download_deadline_seconds`` in total.

        Raises:
            ResultTooLargeError: the body is over the limit.
            ProviderUnavailableError: the deadline passed (``SubmitOutcomeUnknownError`` for the
                answer of a create, which may have been billed).
            ClipValidationError: the body is not a video.
        """
        limit = self.result_limit_bytes()
        seconds = self._download_deadline()
        shown = f"{response.url.host}{response.url.path}"
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise self._too_large(shown, f"{int(declared):,} bytes", what=what, job_id=job_id)
            with atomic_write(destination) as temp:
                try:
                    async with asyncio.timeout(seconds):
                        with translate_transport_errors(self.name, what=what, creates_job=creates_job):
                            with open(temp, "wb") as handle:
                                received = 0
                                async for chunk in response.aiter_bytes(1 << 20):
                                    received += len(chunk)
                                    if received > limit:
                                        raise self._too_large(shown, "larger", what=what, job_id=job_id)
                                    handle.write(chunk)
                except TimeoutError as exc:
                    late = f"{what}: {shown} did not finish within its {seconds:g} s deadline"
                    if creates_job:
                        raise SubmitOutcomeUnknownError(
                            f"{late}: the service may have billed the call, so it is not sent again in this run. "
                            "Check the service's dashboard; a re-run sends the segment again",
                            provider=self.name,
                        ) from exc
                    raise ProviderUnavailableError(late, provider=self.name, job_id=job_id) from exc
                with open(temp, "rb") as handle:
                    head = handle.read(512)
                check_video_answer(
                    response.headers.get("content-type", ""),
                    head,
                    provider=self.name,
                    request_id=request_id_of(response),
                    job_id=job_id,
                )
        finally:
            await response.aclose()
        return Path(destination)

    async def _download_url(self, url: str, destination: Path, job: ModifyJob) -> Path:
        """Downloads a result URL to ``destination`` (retried; atomic; checked; bounded in size and time).

        Raises:
            ResultTooLargeError: the answer is over ``result_limit_bytes``.
            ProviderUnavailableError: the tries did not end within ``download_deadline_seconds`` in
                total; the message names the address (without its query) and the deadline.
        """

        async def once() -> Path:
            response, _ = await self._open_download(url, job=job)
            return await self._save_video(response, destination, what="download", job_id=job.job_id)

        seconds = self._download_deadline()
        target = httpx.URL(url) if url.startswith(("http://", "https://")) else self._client.base_url.join(url)
        try:
            async with asyncio.timeout(seconds):
                return await retry_idempotent(
                    once,
                    provider=self.name,
                    what="download",
                    max_retries=self.max_retries,
                    backoff_seconds=self.retry_backoff_seconds,
                )
        except TimeoutError as exc:
            raise ProviderUnavailableError(
                f"download: {target.host}{target.path} did not finish within its {seconds:g} s deadline; "
                "the job stays saved and the next try downloads it again",
                provider=self.name,
                job_id=job.job_id,
            ) from exc

    async def download(self, job: ModifyJob, destination: Path) -> Path:
        """Writes the finished clip of a ``COMPLETED`` job to ``destination``.

        The clip is streamed to a temporary file beside ``destination`` and moved into place
        with ``os.replace``, so a failed or repeated download never leaves half a file.

        Raises:
            ClipValidationError: the answer is HTML, JSON or otherwise not a video.
            JobFailedError: the result has expired or is gone (404/410).
        """
        if job.result_url is None:
            raise InvalidInputError(
                f"{self.name}: job {job.job_id} has no result yet (state {job.state.value}); "
                "wait for it to complete first"
            )
        return await self._download_url(job.result_url, Path(destination), job)
