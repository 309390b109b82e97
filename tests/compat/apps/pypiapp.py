"""A package index: pypiserver's WSGI app over the folder named by PYPIAPP_ROOT, serving the
simple API (PEP 503) at /simple/ and the files at /packages/.

The fallback to the public index is off: a package the folder does not hold is a 404 here,
never a redirect elsewhere.
"""

import os
import pathlib

import pypiserver

app = pypiserver.app(roots=[pathlib.Path(os.environ["PYPIAPP_ROOT"])], disable_fallback=True)
