"""How the services' answers and transport failures become ``prefect_modify_video.errors``.

``raise_for_status`` turns an answer of 300 or more into the most specific ``ProviderError``
(``error_for_status`` returns it instead); ``translate_transport_errors`` turns httpx's request
errors into ``ProviderUnavailableError`` or, for a create that may have been accepted,
``SubmitOutcomeUnknownError``; ``failure_error`` says which failed-job reasons are fatal. The
original exception is always kept as the cause, and any echo of a secret in a body is redacted.
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import json
import math
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from prefect_modify_video.errors import (
    AuthenticationError,
    ContentModerationError,
    InsufficientCreditsError,
    InvalidRequestError,
    ProviderError,
    ProviderServerError,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)


NOT_SENT_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
"""httpx errors raised before any byte of the request left: a create may be sent again."""

_MODERATION = re.compile(r"moderat|flagged|nsfw|safety|content[ _]policy", re.IGNORECASE)
_CREDITS = re.compile(
    r"not enough (?:credit|balance|fund)|insufficient (?:credit|balance|fund)|exhausted balance"
    r"|out of credit|no credits? (?:left|remaining)|credit balance is too low",
    re.IGNORECASE,
)
_CONTENT_TYPE = re.compile(r"content[- _]type|media type|unsupported format", re.IGNORECASE)
_WAIT_IN_BODY = re.compile(
    r"(?:available|resets) in ~?\s*(\d+(?:\.\d+)?)\s*(milliseconds?|ms|minutes?|mins?|seconds?|secs?|s)?",
    re.IGNORECASE,
)
"""A wait given in a 429 body: Replicate's "Your rate limit resets in ~30s.", or an older
"Expected available in 1 second"."""
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_HEAD = re.compile(r"<head\b.*?</head>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-fal-request-id", "x-replicate-request-id")


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _message_from_json(value: Any, depth: int = 0) -> str:
    """Pulls a human message out of the usual error shapes of the four services."""
    if depth > 3 or value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        parts = [_message_from_json(item, depth + 1) for item in value[:5]]
        return "; ".join(part for part in parts if part)
    if isinstance(value, dict):
        for key in ("error", "detail", "message", "failure_reason", "msg", "title", "errors"):
            text = _message_from_json(value.get(key), depth + 1)
            if text:
                # fal puts the machine-readable reason in ``type`` next to ``msg``.
                kind = value.get("type")
                if isinstance(kind, str) and kind and kind not in text:
                    text = f"{text} ({kind})"
                return text
    return ""


def _text_of(response: httpx.Response) -> str:
    try:
        return response.text
    except (httpx.ResponseNotRead, UnicodeDecodeError, LookupError):
        try:
            return response.content.decode("utf-8", errors="replace")
        except httpx.ResponseNotRead:
            return ""


def describe_body(response: httpx.Response, *, redact: Iterable[str] = (), limit: int = 300) -> str:
    """A short, single-line summary of an answer's body, safe to put in a message.

    JSON bodies give their ``error``/``detail``/``message`` field; HTML bodies give their
    title and text without tags; anything else gives its first characters.
    """
    text = ""
    raw = _text_of(response)
    try:
        text = _message_from_json(json.loads(raw)) if raw.strip() else ""
    except ValueError:
        text = ""
    if not text and raw:
        if "<" in raw and ">" in raw:
            match = _TITLE.search(raw)
            title = " ".join(html.unescape(match.group(1)).split()) if match else ""
            body = " ".join(html.unescape(_TAGS.sub(" ", _HEAD.sub(" ", raw))).split())
            text = body if not title or body.startswith(title) else f"{title}: {body}"
        else:
            text = raw
    text = " ".join(text.split()).rstrip(" .")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _redact(text, redact)


def request_id_of(response: httpx.Response) -> str | None:
    """The service's id for one answer, from its headers or its JSON body."""
    for header in _REQUEST_ID_HEADERS:
        value = response.headers.get(header)
        if value:
            return value
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except (ValueError, httpx.ResponseNotRead):
            return None
        if isinstance(body, dict) and isinstance(body.get("request_id"), str):
            return body["request_id"]
    return None


def _parse_when(value: str, now: datetime) -> datetime | None:
    """Reads a reset time given as seconds, epoch seconds/ms, ISO 8601 or an HTTP date."""
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number) or number < 0:
            return None
        if number > 1e11:  # epoch milliseconds
            return datetime.fromtimestamp(number / 1000, tz=timezone.utc)
        if number > 1e9:  # epoch seconds
            return datetime.fromtimestamp(number, tz=timezone.utc)
        return now + timedelta(seconds=number)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" UTC", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_retry_at(response: httpx.Response, now: datetime | None = None) -> datetime | None:
    """When a rate-limited request may be sent again, if the answer says.

    Reads, in order: Segmind's ``x-rate-limit-reset-at-utc`` header, ``Retry-After``
    (seconds or an HTTP date), and a body such as Replicate's documented "Your rate limit
    resets in ~30s." (or "Expected available in 1 second").
    """
    now = now or datetime.now(timezone.utc)
    for header in ("x-rate-limit-reset-at-utc", "retry-after"):
        value = response.headers.get(header)
        if value:
            when = _parse_when(value, now)
            if when is not None:
                return when
    match = _WAIT_IN_BODY.search(_text_of(response))
    if match:
        amount = float(match.group(1))
        unit = (match.group(2) or "s").lower()
        if unit in ("ms", "millisecond", "milliseconds"):
            amount /= 1000
        elif unit.startswith("min"):
            amount *= 60
        return now + timedelta(seconds=amount)
    return None


def is_moderation_text(text: str) -> bool:
    """Whether a service's message says its content filter refused the request."""
    return bool(_MODERATION.search(text or ""))


def is_credits_text(text: str) -> bool:
    """Whether a service's message says the account has no credits or balance left."""
    return bool(_CREDITS.search(text or ""))


def failure_error(
    reason: str | None, *, provider: str, job_id: str | None = None, request_id: str | None = None
) -> ProviderError | None:
    """The fatal error a failed job's reason calls for, or ``None`` (an ordinary failure).

    A moderation refusal or an empty account would fail the same way on every retry, so
    they are raised instead of being reported as a failed (retryable) job.
    """
    kwargs = {"provider": provider, "job_id": job_id, "request_id": request_id}
    reason = (reason or "").strip().rstrip(".")
    if is_moderation_text(reason):
        return ContentModerationError(
            f"the service refused the content: {reason}. Change the prompt, the first frame "
            "or the source clip; trying again unchanged fails the same way",
            **kwargs,
        )
    if is_credits_text(reason):
        return InsufficientCreditsError(
            f"the account has no credits left: {reason}. Top up, then re-run: finished "
            "segments are cached and are not paid for again",
            **kwargs,
        )
    return None


def _status_error_cause(response: httpx.Response) -> httpx.HTTPStatusError | None:
    try:
        request = response.request
    except RuntimeError:
        return None
    return httpx.HTTPStatusError(
        f"{response.status_code} {response.reason_phrase}", request=request, response=response
    )


def error_for_status(
    response: httpx.Response,
    provider: str,
    *,
    redact: Iterable[str] = (),
    key_hint: str = "the API key",
) -> ProviderError | None:
    """The error an answer stands for, or ``None`` for a 2xx. See ``raise_for_status``."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    reason = describe_body(response, redact=redact) or response.reason_phrase or "no details"
    service = provider.partition("-")[0]
    kwargs = {"provider": provider, "status_code": status, "request_id": request_id_of(response)}
    if status == 402 or (status >= 400 and is_credits_text(reason)):
        return InsufficientCreditsError(
            f"the account has no credits left: {reason}. Top up at {service}, then re-run: "
            "finished segments are cached and are not paid for again",
            **kwargs,
        )
    if status == 406:
        if _CONTENT_TYPE.search(reason):
            return InvalidRequestError(
                f"the service refused the request's Content-Type: {reason}. This is a bug in "
                "prefect-modify-video or a proxy in between; please report it",
                **kwargs,
            )
        # Segmind documents 406 as "not enough credits"; its body is often empty.
        return InsufficientCreditsError(
            f"not enough credits (406): {reason}. Top up at {service}, then re-run: "
            "finished segments are cached and are not paid for again",
            **kwargs,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"the API key was refused: {reason}. Fix {key_hint}",
            **kwargs,
        )
    if status == 429:
        retry_at = parse_retry_at(response)
        when = f"after {retry_at.isoformat(timespec='seconds')}" if retry_at else "later"
        return RateLimitedError(
            f"rate limited: {reason}. Try again {when}, or lower the number of segments "
            "sent at once",
            retry_at=retry_at,
            **kwargs,
        )
    if 400 <= status < 500 and is_moderation_text(reason):
        return ContentModerationError(
            f"the service refused the content: {reason}. Change the prompt, the first frame "
            "or the source clip; trying again unchanged fails the same way",
            **kwargs,
        )
    if status == 408:
        return ProviderUnavailableError(f"the service timed out reading the request: {reason}", **kwargs)
    if 400 <= status < 500:
        return InvalidRequestError(
            f"the service rejected the request: {reason}. Check the mode, prompt, clip "
            "length and size against the service's limits, and the block's base_url",
            **kwargs,
        )
    if status >= 500:
        return ProviderServerError(
            f"server error: {reason}. The service is failing; a later retry may succeed",
            **kwargs,
        )
    return ProviderError(f"unexpected answer {status}: {reason}", **kwargs)


def raise_for_status(
    response: httpx.Response,
    provider: str,
    *,
    redact: Iterable[str] = (),
    key_hint: str = "the API key",
) -> None:
    """Raises the most specific ``ProviderError`` for an answer of 300 or more.

    The body may be JSON, HTML (Segmind's 405) or empty: the message quotes a short summary
    of it, names the provider, status and request id, and says what to do next.

    Args:
        response: An answer whose body has been read.
        provider: The backend's name, e.g. ``"segmind"``.
        redact: Secrets to blank out should the body echo them.
        key_hint: Where the key comes from, for the message of a refused key (e.g. "the
            `api_key` of your SegmindCredentials block or the SEGMIND_API_KEY environment
            variable").

    Raises:
        AuthenticationError: 401/403 (says to fix ``key_hint``).
        InsufficientCreditsError: 402, Segmind's 406, or a message about credits.
        RateLimitedError: 429, with ``retry_at`` when the answer says.
        ContentModerationError: a 4xx whose message speaks of moderation or safety.
        InvalidRequestError: other 4xx (400, 404, 405, 422, ...).
        ProviderServerError: 5xx.
    """
    error = error_for_status(response, provider, redact=redact, key_hint=key_hint)
    if error is not None:
        raise error from _status_error_cause(response)


@contextlib.contextmanager
def translate_transport_errors(
    provider: str, *, what: str, creates_job: bool = False
) -> Iterator[None]:
    """Turns httpx's request errors into ``ProviderError``s, keeping the cause.

    Args:
        provider: The backend's name.
        what: The operation, for the message ("submit", "poll", "download").
        creates_job: Whether the request starts a paid job; a failure after sending is
            then ``SubmitOutcomeUnknownError`` (the job may have been accepted and billed).
    """
    try:
        yield
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise InvalidRequestError(
            f"{what}: bad URL ({exc}); check the block's base_url", provider=provider
        ) from exc
    except NOT_SENT_EXCEPTIONS as exc:
        raise ProviderUnavailableError(
            f"{what}: could not connect ({type(exc).__name__}: {str(exc) or 'no details'}); "
            "nothing was sent",
            provider=provider,
        ) from exc
    except (httpx.TransportError, httpx.DecodingError, httpx.TooManyRedirects) as exc:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        detail = f"{what} {kind} ({type(exc).__name__}: {str(exc) or 'no details'})"
        if creates_job:
            raise SubmitOutcomeUnknownError(
                f"{detail} after the request was sent: the service may have accepted and "
                "billed it, so it is not sent again blindly. Check the service's dashboard; "
                "a re-run looks for it in the service's list of jobs where there is one, and "
                "--resend-unknown sends the segment again",
                provider=provider,
            ) from exc
        error_class = (
            ProviderServerError
            if isinstance(exc, (httpx.DecodingError, httpx.TooManyRedirects))
            else ProviderUnavailableError
        )
        raise error_class(detail, provider=provider) from exc


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__


def request_surely_not_sent(exc: BaseException) -> bool:
    """Whether ``exc`` was raised before the request reached the service."""
    return any(isinstance(cause, NOT_SENT_EXCEPTIONS) for cause in _causes(exc))

