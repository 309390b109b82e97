"""Django rows of the matrix: a small Django project (tests/compat/apps/djangoproj: the admin, a
form upload, a streamed response and a file download) served by greenserve and driven by
``requests`` as a browser would drive it (a login form with its CSRF token, a multipart file
upload) and by raw sockets where the exact head of a response matters.

The project's database and media live in a temporary folder given by DJANGOPROJ_DATA; the
database is made with Django's own management commands (``migrate``, ``createsuperuser``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlencode

import pytest

from .conftest import Head, field_values, get_streamed, head_like_get, need, pieces

pytest.importorskip("django")
requests = pytest.importorskip("requests")
from urllib3 import encode_multipart_formdata  # noqa: E402  (requests brings urllib3)

APPS = Path(__file__).resolve().parent / "apps"

APP = "djangoproj.wsgi:application"
USER, PASSWORD = "admin", "a-long-enough-password-7"
TIMEOUT = 10  # seconds for each request: a hang fails the test
SMALL = 1 << 20
LARGE = 20 << 20
DOWNLOAD_SIZE = 3 << 20 | 12345  # a few MB, not a multiple of any block size
PIECE = 64 << 10  # what a generator body yields at a time (requests sends each as a chunk)


def _django_env(data: Path) -> Dict[str, str]:
    return {
        **os.environ, "PYTHONPATH": str(APPS), "DJANGO_SETTINGS_MODULE": "djangoproj.settings",
        "DJANGOPROJ_DATA": str(data),
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: Any) -> Path:
    """The project's data folder with a migrated database, a superuser and a file to download,
    made as a deployment makes them: with ``django-admin`` commands."""
    data = tmp_path_factory.mktemp("djangoproj")
    (data / "tmp").mkdir()
    (data / "media").mkdir()
    (data / "media" / "download.bin").write_bytes(os.urandom(DOWNLOAD_SIZE))
    env = _django_env(data)
    commands = [
        ["migrate", "--noinput", "-v", "0"],
        ["createsuperuser", "--noinput", "--username", USER, "--email", "admin@example.com"],
    ]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "django", *command], cwd=APPS, capture_output=True, text=True,
            timeout=120, env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    return data


@pytest.fixture
def site(served: Any, data_dir: Path) -> Any:
    """greenserve serving the Django project (in this test's mode)."""
    return served(APP, env={"DJANGOPROJ_DATA": str(data_dir)})


# -- helpers ------------------------------------------------------------------------------------

def _csrf_token(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def _login(site: Any, *, chunked: bool) -> Tuple[requests.Session, requests.Response]:
    """Log in to the admin as a browser does: GET the form (csrftoken cookie and hidden token),
    POST it back. Returns the session and the POST's (unfollowed) reply."""
    session = requests.Session()
    page = session.get(site.url + "/admin/login/?next=/admin/", timeout=TIMEOUT)
    assert page.status_code == 200
    assert "csrftoken" in session.cookies
    form = urlencode({
        "csrfmiddlewaretoken": _csrf_token(page.text), "username": USER, "password": PASSWORD,
        "next": "/admin/",
    }).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Referer": site.url + "/admin/login/?next=/admin/"}
    body: Any = pieces(form, 16) if chunked else form
    reply = session.post(site.url + "/admin/login/?next=/admin/", data=body, headers=headers,
                         allow_redirects=False, timeout=TIMEOUT)
    if chunked:
        assert reply.request.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in reply.request.headers
    return session, reply


def _check_logged_in(site: Any, session: requests.Session, reply: requests.Response) -> None:
    assert reply.status_code == 302, (reply.status_code, reply.text[:2000])
    assert reply.headers["Location"] == "/admin/"
    assert "sessionid" in session.cookies
    index = session.get(site.url + "/admin/", allow_redirects=False, timeout=TIMEOUT)
    assert index.status_code == 200
    assert "Site administration" in index.text
    assert f"<strong>{USER}</strong>" in index.text  # "Welcome, admin": the user is logged in


def _upload_form(site: Any) -> Tuple[requests.Session, str]:
    session = requests.Session()
    page = session.get(site.url + "/upload/", timeout=TIMEOUT)
    assert page.status_code == 200
    return session, _csrf_token(page.text)


def _check_saved(reply: requests.Response, payload: bytes) -> None:
    assert reply.status_code == 200, (reply.status_code, reply.text[:2000])
    saved = reply.json()
    assert saved["title"] == "holiday pictures"
    assert saved["size"] == len(payload)
    assert saved["sha256"] == hashlib.sha256(payload).hexdigest()


def _upload(site: Any, payload: bytes) -> requests.Response:
    """A multipart form upload with a Content-Length, as requests builds it for ``files=``."""
    session, token = _upload_form(site)
    return session.post(
        site.url + "/upload/",
        data={"csrfmiddlewaretoken": token, "title": "holiday pictures"},
        files={"file": ("pictures.tar", payload, "application/x-tar")},
        timeout=TIMEOUT,
    )


def _upload_chunked(site: Any, payload: bytes) -> requests.Response:
    """The same form, encoded by urllib3 and sent as a generator: chunked, no Content-Length
    (as a client streaming a file it does not measure first sends it)."""
    session, token = _upload_form(site)
    body, content_type = encode_multipart_formdata({
        "csrfmiddlewaretoken": token, "title": "holiday pictures",
        "file": ("pictures.tar", payload, "application/x-tar"),
    })
    reply = session.post(site.url + "/upload/", data=pieces(body, PIECE),
                         headers={"Content-Type": content_type}, timeout=TIMEOUT)
    assert reply.request.headers.get("Transfer-Encoding") == "chunked"
    return reply


# Fields whose value is the time or a fresh token, and so differs between any two responses:
# HEAD and GET must both carry them (a Set-Cookie for the same cookie), with any value.
_VOLATILE = {"date", "expires", "set-cookie"}


def _check_head_like_get(url: str, path: str, headers: Optional[Dict[str, str]] = None) -> Head:
    """HEAD ``path`` answers what GET answers, without a body, but for the values of the
    volatile fields (see ``head_like_get``). Returns GET's head."""
    return head_like_get(url, path, headers, volatile=_VOLATILE)


# -- the rows -----------------------------------------------------------------------------------

def test_admin_login_with_csrf(site: Any) -> None:
    session, reply = _login(site, chunked=False)
    _check_logged_in(site, session, reply)


def test_admin_login_with_a_chunked_form_body(site: Any) -> None:
    # Django reads the body by CONTENT_LENGTH only (it ignores wsgi.input_terminated), so a
    # chunked form body reaches the app only if the server gives it a length: the server must
    # read a chunked body before calling the app and set CONTENT_LENGTH. Otherwise the form is
    # empty, the CSRF token missing, and the login a 403.
    session, reply = _login(site, chunked=True)
    _check_logged_in(site, session, reply)


# 20 MB goes to a temporary file (past FILE_UPLOAD_MAX_MEMORY_SIZE) and takes well under a
# second here, so the large uploads stay in the default set too.
@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "large"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_upload(site: Any, size: int, chunked: bool) -> None:
    payload = os.urandom(size)
    upload = _upload_chunked if chunked else _upload
    _check_saved(upload(site, payload), payload)


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_upload_form_with_curl(site: Any, tmp_path: Path, chunked: bool) -> None:
    # curl fills the form as a browser would (the csrftoken cookie in a cookie jar, the hidden
    # token as a field) and, before a body this large or chunked, asks "Expect: 100-continue"
    # and waits for the 100 (here up to 5 s, longer than the whole upload may take). A server
    # that reads a chunked body before calling the app must send the 100 before reading it.
    curl = need("curl")
    payload = os.urandom(SMALL)
    upload, jar = tmp_path / "pictures.tar", tmp_path / "cookies.txt"
    upload.write_bytes(payload)
    form = subprocess.run(
        [curl, "--silent", "--show-error", "--max-time", str(TIMEOUT), "-c", str(jar),
         site.url + "/upload/"], capture_output=True, text=True, timeout=TIMEOUT + 5)
    assert form.returncode == 0, form.stderr
    command = [
        curl, "--silent", "--show-error", "--verbose", "--max-time", "4",
        "--expect100-timeout", "5", "-b", str(jar),
        "-F", f"csrfmiddlewaretoken={_csrf_token(form.stdout)}", "-F", "title=holiday pictures",
        "-F", f"file=@{upload};type=application/x-tar", site.url + "/upload/",
    ]
    if chunked:
        command[1:1] = ["-H", "Transfer-Encoding: chunked"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "> Expect: 100-continue" in done.stderr
    assert "< HTTP/1.1 100 Continue" in done.stderr
    assert "< HTTP/1.1 200 OK" in done.stderr, (done.stderr[-3000:], done.stdout[:2000])
    saved = json.loads(done.stdout)
    assert saved["size"] == len(payload)
    assert saved["sha256"] == hashlib.sha256(payload).hexdigest()


def test_streaming_response(site: Any) -> None:
    count = 5000
    body = get_streamed(site.url + f"/stream/?count={count}", TIMEOUT)
    expected = b"".join(f"line {n:05d} of {count}\n".encode() for n in range(count))
    assert body == expected


def test_file_response(site: Any, data_dir: Path) -> None:
    expected = (data_dir / "media" / "download.bin").read_bytes()
    reply = requests.get(site.url + "/files/download.bin", timeout=TIMEOUT)
    assert reply.status_code == 200
    assert reply.headers["Content-Length"] == str(len(expected))
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.content == expected


def test_head_is_get_without_body(site: Any) -> None:
    # The admin's login page (an HttpResponse: CommonMiddleware gives it a Content-Length).
    status, fields = _check_head_like_get(site.url, "/admin/login/")
    assert status == 200 and field_values(fields, "content-length")
    # The admin's index as a logged-in user.
    session, reply = _login(site, chunked=False)
    assert reply.status_code == 302
    cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    status, fields = _check_head_like_get(site.url, "/admin/", {"Cookie": cookie})
    assert status == 200 and field_values(fields, "content-length")
    # The upload form.
    status, fields = _check_head_like_get(site.url, "/upload/")
    assert status == 200
    # A streamed response: GET has no Content-Length, so HEAD must not claim one.
    status, fields = _check_head_like_get(site.url, "/stream/?count=100")
    assert status == 200 and not field_values(fields, "content-length")
    assert field_values(fields, "transfer-encoding") == ["chunked"]
    # A FileResponse: HEAD carries the file's length, as GET does.
    status, fields = _check_head_like_get(site.url, "/files/download.bin")
    assert status == 200 and field_values(fields, "content-length") == [str(DOWNLOAD_SIZE)]
