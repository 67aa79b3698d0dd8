"""Secrets never leave the process that was given them: what a run records of a command line or a URL is redacted.

``redact(text)`` replaces, in any text (a command line, a URL, a message):

* the password of a URL (``postgresql+psycopg://alice:PASSWORD@host/db`` → ``alice:***@host``);
* the value of an option or assignment whose name says it is a secret (``--api-key VALUE``, ``--token=VALUE``,
  ``AWS_SECRET_ACCESS_KEY=VALUE``: names ending in a word key, secret, token or credential(s), or ending in
  password or passwd; ``--keys-dir`` and ``--monkey`` are not secrets);
* every value of this process's environment variables whose names say the same (``AWS_SECRET_ACCESS_KEY``,
  ``RAY_AUTH_TOKEN``, ``PGPASSWORD``, ...), wherever it appears, as long as it is at least 4 characters long
  (shorter values would redact ordinary words).

What is left is still readable: the option's or variable's name stays, the value becomes ``***``.
"""

from __future__ import annotations

import os
import re

MASK = "***"
_SECRET_NAME = r"[\w.-]*(?:(?<![a-zA-Z0-9])(?:key|secret|token|credentials?)|password|passwd)"
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):(?P<secret>[^@\s/]*)@")
_ASSIGNED = re.compile(rf"(?P<head>(?<![\w-]){_SECRET_NAME}\s*=\s*)(?P<secret>[^\s'\"]+)", re.IGNORECASE)
_OPTION = re.compile(rf"(?P<head>(?<!\S)--{_SECRET_NAME}\s+)(?P<secret>[^\s'\"-][^\s'\"]*)", re.IGNORECASE)
_SECRET_VARIABLE = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)


def secret_values(environment: dict[str, str] | None = None) -> list[str]:
    """The values of the environment's variables whose names say they are secrets, longest first."""
    environment = os.environ if environment is None else environment
    values = {value for name, value in environment.items() if _SECRET_VARIABLE.match(name) and len(value) >= 4}
    return sorted(values, key=len, reverse=True)


def redact(text: str, environment: dict[str, str] | None = None) -> str:
    """``text`` with every secret it holds replaced by ``***`` (see the module doc)."""
    for value in secret_values(environment):
        text = text.replace(value, MASK)
    for pattern in (_URL_PASSWORD, _ASSIGNED, _OPTION):
        text = pattern.sub(lambda match: match["head"] + (f":{MASK}@" if pattern is _URL_PASSWORD else MASK), text)
    return text
