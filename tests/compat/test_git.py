"""Git over smart HTTP: dulwich's WSGI app (apps/gitapp.py) serving a bare repository, driven
by the real ``git`` client: clone, commit, push, and clone again to find the commit.

The push carries a 2 MiB file of random bytes (it does not compress), which is more than git's
http.postBuffer (1 MiB by default), so git sends the receive-pack request with
``Transfer-Encoding: chunked`` and no Content-Length: the test checks in git's own trace that
it did. greenserve removes the chunked framing, so the app must not see
``HTTP_TRANSFER_ENCODING: chunked``: dulwich (like other apps written for servers that pass
the raw stream on) then de-chunks wsgi.input a second time, and the push fails with a 500.

Such a body has two readings, and the push runs with both: by default greenserve reads it
whole first and gives the app a CONTENT_LENGTH (what Django and most frameworks need, as they
take a missing CONTENT_LENGTH for an empty body); with --no-buffer-chunked-body it streams it
and the app reads wsgi.input to its end (wsgi.input_terminated), which dulwich does.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from .conftest import need

pytest.importorskip("dulwich")

TIMEOUT = 60  # seconds for any one git command: a hang fails the test
BLOB_SIZE = 2 * 1024 * 1024  # over git's default http.postBuffer (1 MiB): a chunked push


class Git:
    """The git client with a configuration of its own: a throwaway HOME, no system or global
    config, no prompts, and a fixed identity."""

    def __init__(self, home: Path) -> None:
        self.exe = need("git")
        home.mkdir()
        self.env: Dict[str, str] = {
            key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        self.env.update(
            HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="",
            GIT_AUTHOR_NAME="Compat Tester", GIT_AUTHOR_EMAIL="compat@example.invalid",
            GIT_COMMITTER_NAME="Compat Tester", GIT_COMMITTER_EMAIL="compat@example.invalid",
        )

    def __call__(self, *args: str, cwd: Path, env: Optional[Dict[str, str]] = None) -> str:
        done = subprocess.run(
            [self.exe, "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false",
             *args],
            cwd=cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, f"git {' '.join(args)}: exit {done.returncode}\n" \
                                     f"{done.stdout}{done.stderr}"
        return done.stdout


@pytest.mark.parametrize("body_flags", [(), ("--no-buffer-chunked-body",)],
                         ids=["buffered", "streamed"])
def test_clone_push_chunked_and_clone_again(served, tmp_path: Path, body_flags) -> None:
    git = Git(tmp_path / "home")

    # A bare repository with one commit on main, made with git alone (no server).
    bare = tmp_path / "project.git"
    git("init", "--bare", "--quiet", str(bare), cwd=tmp_path)
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=bare)
    seed = tmp_path / "seed"
    git("init", "--quiet", str(seed), cwd=tmp_path)
    (seed / "README").write_text("greenserve serves git\n")
    git("add", "README", cwd=seed)
    git("commit", "--quiet", "-m", "First commit", cwd=seed)
    git("push", "--quiet", str(bare), "HEAD:refs/heads/main", cwd=seed)

    server = served("gitapp:app", *body_flags, env={"GITAPP_REPO": str(bare)})
    remote = server.url + "/project.git"

    first = tmp_path / "first"
    git("clone", "--quiet", remote, str(first), cwd=tmp_path)
    assert (first / "README").read_text() == "greenserve serves git\n"

    blob = os.urandom(BLOB_SIZE)
    (first / "blob.bin").write_bytes(blob)
    git("add", "blob.bin", cwd=first)
    git("commit", "--quiet", "-m", "Add a blob of random bytes", cwd=first)
    pushed = git("rev-parse", "HEAD", cwd=first).strip()
    trace = tmp_path / "push.trace"
    git("push", "--quiet", "origin", "main", cwd=first,
        env={"GIT_TRACE_CURL": str(trace), "GIT_TRACE_CURL_NO_DATA": "1"})
    # The chunked path was taken: git sent the pack with Transfer-Encoding: chunked.
    assert "Transfer-Encoding: chunked" in receive_pack_headers(trace.read_text())

    second = tmp_path / "second"
    git("clone", "--quiet", remote, str(second), cwd=tmp_path)
    assert git("rev-parse", "HEAD", cwd=second).strip() == pushed
    assert git("log", "-1", "--format=%s", cwd=second).strip() == "Add a blob of random bytes"
    assert (second / "blob.bin").read_bytes() == blob
    assert (second / "README").read_text() == "greenserve serves git\n"


def receive_pack_headers(trace: str) -> List[str]:
    """The headers git sent with its POSTs to git-receive-pack, from a GIT_TRACE_CURL log."""
    headers: List[str] = []
    in_receive_pack = False
    for line in trace.splitlines():
        _, sep, header = line.partition("=> Send header: ")
        if not sep:
            continue
        if header.startswith(("GET ", "POST ")):
            in_receive_pack = header.startswith("POST ") and "/git-receive-pack " in header
        elif in_receive_pack:
            headers.append(header.strip())
    return headers
