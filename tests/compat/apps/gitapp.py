"""Git's smart HTTP protocol served by dulwich's WSGI app, as ``dulwich web`` builds it:
``make_wsgi_chain`` (the app with its gzip and input-limit middleware) over a backend that
holds one bare repository. Its default handlers include git-receive-pack, so pushes are
accepted.

The repository is the bare one named by GITAPP_REPO; it is served at /project.git.
"""

import os

from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain

app = make_wsgi_chain(DictBackend({"/project.git": Repo(os.environ["GITAPP_REPO"])}))
