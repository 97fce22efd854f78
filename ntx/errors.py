"""The errors ntx reports to its user: each carries one line of text and an exit status.

Job-level errors (`FetchError` and subclasses) fail one job and never stop the run; the
others stop the run at once. Retry classification (issue: retries) hangs off these types.
"""

from __future__ import annotations

from datetime import date

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class NtxError(Exception):
    """An error whose message is fit to show the user as one line."""

    exit_code = EXIT_FAILED


class UsageError(NtxError):
    """Bad flags, settings or paths: nothing was fetched or written."""

    exit_code = EXIT_USAGE


class StoreError(NtxError):
    """The database cannot be used (not SQLite, not ntx's, unwritable, broken)."""


class FetchError(NtxError):
    """One request (and so one job) failed; the reason is kept with the job."""


class HttpStatusError(FetchError):
    """The server answered with a status other than 200."""

    def __init__(self, status: int, path: str, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status} from {path}")
        self.status = status
        self.path = path
        self.retry_after = retry_after


class DateNotServed(HttpStatusError):
    """HTTP 500 with the body `Searched Date is not valid.`: the asked start is before the
    server's history window. Permanent: asking again gives the same answer."""

    def __init__(self, path: str) -> None:
        super().__init__(500, path)
        self.args = (f"HTTP 500 from {path}: the asked date is before the server's history window",)


class OutsideWindow(FetchError):
    """Asked days start before the server's history window, which starts at `first`; the
    engine cuts the job to the window and asks again."""

    def __init__(self, first: date) -> None:
        super().__init__(f"the server's history window starts {first}")
        self.first = first


class TokenRefused(FetchError):
    """A 401 right after a new token: not a token problem, so the request fails, not loops."""


class TransportError(FetchError):
    """No usable answer: connection refused or reset, timeout, broken stream."""


class ConnectionDropped(TransportError):
    """The server closed, reset or refused the connection instead of answering: what a busy
    server does to a client that bursts. A congestion signal, like a 503."""


class MalformedResponse(FetchError):
    """The answer was not JSON, or not JSON of the documented shape."""


class NotFound(FetchError):
    """The API has no such resource (HTTP 404): the job is skipped, not failed."""


class CertificateError(NtxError):
    """The server's TLS certificate cannot be verified: every request would fail the same
    way, so the run stops at once (it is never retried as a transient fault)."""


class AccessDenied(NtxError):
    """HTTP 401 or 403: every job would fail the same way, so the run stops at once."""


class Interrupted(NtxError):
    """The run was stopped by a signal; what was fetched before it is committed."""

    exit_code = EXIT_INTERRUPTED


def reportable(exc: BaseException) -> BaseException:
    """The one error to report out of a (possibly nested) exception group.

    An interrupt comes first, then an `NtxError`, then whatever came first.
    """
    leaves = list(_leaves(exc))
    for kind in (KeyboardInterrupt, NtxError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
