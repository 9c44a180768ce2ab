"""Credentials never travel in URLs: finding and hiding a password in one.

A URL's password (`scheme://user:password@host/...`) or a password query parameter
(`?password=...`) is what a run must never write to a parameter, a log, metadata or a report.
The run config refuses such a URL (credentials come from the environment or a Kubernetes Secret),
and everything that writes config or URLs out shows them through `redact_url` / `redacted` as a
second line of defence.

Plain string handling, no SQLAlchemy: reading the run config must stay cheap. The userinfo is
taken up to the *last* '@' before the path, as a browser would, so a password holding '@' is
hidden whole (SQLAlchemy stops at the first '@'; hiding more is the safe side).
"""

import re
from urllib.parse import parse_qsl

HIDDEN = "***"
# Query parameters that carry a password in libpq, MySQL and ODBC-style connection URLs.
PASSWORD_PARAMETERS = frozenset({"password", "passwd", "pwd", "pass"})
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>.*)$", re.DOTALL)


def _split(url: str) -> tuple[str, str, str, str] | None:
    """(scheme://, authority, path, ?query) of a URL, or None for text that is not one."""
    match = _URL.match(url)
    if not match:
        return None
    rest = match["rest"]
    query_at = rest.find("?")
    head, query = (rest, "") if query_at < 0 else (rest[:query_at], rest[query_at:])
    # The authority ends at the first '/' after its last '@' (a password may hold a '/').
    at = head.rfind("@")
    slash = head.find("/", at + 1)
    authority, path = (head, "") if slash < 0 else (head[:slash], head[slash:])
    return match["scheme"], authority, path, query


def _password_parameters(query: str) -> list[str]:
    return [
        key
        for key, _ in parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if key.lower() in PASSWORD_PARAMETERS
    ]


def url_password_place(url: str) -> str:
    """Where `url` carries a password: "" for nowhere, else a few words saying where."""
    parts = _split(url) if isinstance(url, str) else None
    if parts is None:
        return ""
    _, authority, _, query = parts
    userinfo = authority.rpartition("@")[0]
    if ":" in userinfo:
        return "in the URL"
    if names := _password_parameters(query):
        return f"in the URL's '{names[0]}' parameter"
    return ""


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***, to show or store; other text unchanged."""
    parts = _split(url) if isinstance(url, str) else None
    if parts is None:
        return url
    scheme, authority, path, query = parts
    userinfo, at, host = authority.rpartition("@")
    if ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:{HIDDEN}{at}{host}"
    if _password_parameters(query):
        pairs = []
        for pair in query.lstrip("?").split("&"):
            key, sep, _ = pair.partition("=")
            hidden = sep and key.lower() in PASSWORD_PARAMETERS
            pairs.append(f"{key}={HIDDEN}" if hidden else pair)
        query = "?" + "&".join(pairs)
    return f"{scheme}{authority}{path}{query}"


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def redact_text(text: str) -> str:
    """Free text (a log line, a message) with every URL in it shown by `redact_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda match: redact_url(match[0]), text)


def redacted(value):
    """A copy of a JSON-like value (dicts, lists, strings) with every URL's password hidden."""
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def find_url_with_password(value, where: str = "") -> tuple[str, str, str] | None:
    """The first (key path, place, URL) in a JSON-like value where a URL carries a password."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        place = url_password_place(value) if isinstance(value, str) else ""
        return (where, place, value) if place else None
    for key, item in items:
        found = find_url_with_password(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None
