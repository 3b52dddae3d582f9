"""The one place that turns remote-store failures into one line naming the URL and the option to set.

fsspec back ends fail with their own exception types (botocore through s3fs, aiohttp
through the HTTP file system, ``ImportError`` when a back end is not installed), often
several levels down a chain that also holds a MedLocker error ("no manifest" when the
store was in fact unreachable). :func:`describe` walks the whole chain and answers for
the first failure it knows. Back-end modules are looked up in ``sys.modules`` only: an
exception of a library that was never imported cannot occur, and ``medlocker --help``
stays free of them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence

__all__ = ["describe", "probe", "urls_in"]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_USERINFO = re.compile(r"//[^/@]*@")
_ENDPOINT = "--storage-option endpoint_url=http://HOST:PORT"
_CREDENTIALS = ("--storage-option key=ACCESS_KEY --storage-option secret=SECRET_KEY "
                "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; anon=true for a public bucket)")
# S3 error codes -> what to do about them
_CODES = {
    "NoSuchBucket": "the bucket does not exist: check the URL",
    "AccessDenied": f"access denied: set {_CREDENTIALS}",
    "InvalidAccessKeyId": f"the access key is not known to this store: set {_CREDENTIALS}",
    "SignatureDoesNotMatch": f"the secret key does not match: set {_CREDENTIALS}",
    "PermanentRedirect": "the bucket is in another region: set --storage-option region_name=REGION",
    "AuthorizationHeaderMalformed": "wrong region: set --storage-option region_name=REGION",
}


def urls_in(argv: Sequence[str]) -> list[str]:
    """The store URLs on a command line (``--opt=URL`` too), leaving out option values like
    ``endpoint_url=http://...``."""
    out = []
    for token in argv:
        if token.startswith("--") and "=" in token:
            token = token.split("=", 1)[1]
        if _URL.fullmatch(token) and not token.startswith("file://"):
            out.append(_USERINFO.sub("//***@", token, count=1))  # never echo a password in a URL
    return out


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]


def _is(e: BaseException, module: str, *names: str) -> bool:
    mod = sys.modules.get(module)
    types = tuple(t for t in (getattr(mod, n, None) for n in names) if isinstance(t, type))
    return bool(types) and isinstance(e, types)


def _raised_in(e: BaseException, package: str) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith(package)


def _reason(e: BaseException, remote: bool) -> str | None:
    botocore = "botocore.exceptions"
    if _is(e, botocore, "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return f"no usable S3 credentials: set {_CREDENTIALS}"
    if _is(e, botocore, "EndpointConnectionError", "ConnectTimeoutError", "ProxyConnectionError"):
        return (f"cannot connect to the store ({e}): for an S3-compatible server (MinIO, Ceph, moto) set "
                f"{_ENDPOINT}; else check the network and the proxy settings")
    if _is(e, botocore, "NoRegionError"):
        return "no region: set --storage-option region_name=REGION"
    if _is(e, botocore, "ClientError"):
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
        return f"the store refused the request ({code or e}): " + _CODES.get(
            code, f"check the URL, {_CREDENTIALS} and region_name")
    if _is(e, botocore, "BotoCoreError"):
        return f"{e}: check {_ENDPOINT}, the credentials and region_name"
    if _is(e, "aiohttp", "ClientConnectionError", "ClientResponseError", "InvalidURL"):
        return f"cannot reach the server ({e}): check the URL and the network"
    if isinstance(e, ImportError) and _raised_in(e, "fsspec"):
        return f"{e}" + (" (pip install 'medlocker[s3]')" if "s3fs" in str(e) else "")
    if isinstance(e, ValueError) and _raised_in(e, "fsspec") and "Protocol not known" in str(e):
        return f"{e}: use a local path or a URL of an installed fsspec back end (s3://, gs://, http://, ...)"
    if remote and isinstance(e, PermissionError):
        return f"access denied ({e}): set {_CREDENTIALS}"
    return None


def describe(exc: BaseException, urls: Sequence[str]) -> str | None:
    """One line for a remote-store failure anywhere in ``exc``'s chain, else ``None``.

    Args:
        exc: The exception that ended the command.
        urls: The store URLs the command was given (:func:`urls_in`), named in the line.
    """
    for e in _chain(exc):
        reason = _reason(e, remote=bool(urls))
        if reason is not None:
            where = ", ".join(urls) if urls else "the remote store"
            return f"{where}: {reason}"
    return None


def probe(url: str, storage_options: dict | None = None) -> None:
    """Raise if ``url``'s store cannot be reached; a missing path is left to the caller.

    For commands that collect problems instead of raising (``verify dataset``): the HTTP
    back end reports a refused connection as ``FileNotFoundError``, which would read as
    "no manifest".
    """
    from medlocker.shards.fs import url_to_fs

    if "://" not in url:
        return
    fs, path = url_to_fs(url, storage_options)
    try:
        fs.info(path)
    except FileNotFoundError as e:
        if describe(e, [url]) is not None:
            raise
