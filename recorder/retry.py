"""Whether a failed request is worth sending again: one pure classifier per client.

In the style of websockets' ``process_exception``: the client hands over what went wrong
and gets back what to do, so the policy is one function a test can read end to end.

- :func:`classify_rest`: the REST client's errors. Transport errors (a refused or cut
  connection, a timeout, a body cut short), HTTP 5xx and 429 are retried within the REST
  budget; a ``msg`` that is the rate limit waits for the window; any other non-"OK" ``msg``,
  another HTTP status (a redirect included) or an answer of the wrong shape is final.
- :func:`classify_reply`: a WebSocket command's non-"OK" reply. The rate limit (the API
  allows one command a second) waits for the gate and is sent again; anything else is final.

The API documents no error codes (see ``qos-protocol.md``): the rate limit is recognised
by the wording of the messages the service is known to send, in :data:`RATE_LIMIT` only.
"""

from __future__ import annotations

import enum
import re

from .exceptions import ApiError, HttpStatusError, TransportError, UpstreamError

#: the rate-limit messages: "request too frequent: at most 1 request per second" on the
#: WebSocket, "request limit exceeded: 10 per minute" over HTTP. A product or connection
#: limit ("product limit exceeded") is a refusal, not a rate: it does not match.
RATE_LIMIT = re.compile(r"too frequent|too many requests|rate limit|request limit", re.IGNORECASE)


class Retry(enum.Enum):
    """What to do after a failure."""

    BACKOFF = "backoff"  # send again after a jittered backoff, within the budget
    WINDOW = "window"  # the service counts us over its rate: wait for the window, send again
    FINAL = "final"  # sending the same request again cannot help


def rate_limited(msg: str) -> bool:
    """Whether a non-"OK" ``msg`` says the client sent too much too fast."""
    return RATE_LIMIT.search(msg) is not None


def classify_rest(exc: UpstreamError) -> Retry:
    """The REST client's retry policy (see the module docstring)."""
    if isinstance(exc, TransportError):
        return Retry.BACKOFF
    if isinstance(exc, HttpStatusError):
        return Retry.BACKOFF if exc.status == 429 or exc.status >= 500 else Retry.FINAL
    if isinstance(exc, ApiError):
        return Retry.WINDOW if rate_limited(exc.msg) else Retry.FINAL
    return Retry.FINAL  # too large, the wrong shape: the same request gets the same answer


def refuses_key(exc: UpstreamError) -> bool:
    """Whether an answer says the service refuses the API key: HTTP 401 or 403, or a
    non-"OK" ``msg`` that names the key (``"invalid key"``)."""
    if isinstance(exc, HttpStatusError):
        return exc.status in (401, 403)
    if isinstance(exc, ApiError):
        return "key" in exc.msg.lower()
    return False


def classify_reply(msg: str) -> Retry:
    """A WebSocket command's non-"OK" reply: the rate limit waits, anything else is final."""
    return Retry.WINDOW if rate_limited(msg) else Retry.FINAL
