"""Start one peer server in the foreground on 127.0.0.1:PORT serving bench.apps:APP.

    python launch.py KIND PORT APP

KIND is gevent, waitress, meinheld, bjoern or nginx (greenserve, gunicorn and granian are
started through their own command lines; see run.py). run.py prefixes ``taskset -c 0``.

Settings that differ from each server's defaults, all for one of three reasons: the same listen
backlog everywhere (2048), no access log, and room for 1000 wrk connections and the 10,000
idle connections of scenario (f):
  gevent    monkey.patch_all() before the app is imported; a listener made here with backlog
            2048 and TCP_NODELAY (inherited by accepted sockets on Linux: pywsgi writes the
            head and the body in two sends, which otherwise wait for delayed ACKs);
            log=None (no access log)
  waitress  backlog 2048 (default 1024), connection_limit 20000 (default 100),
            asyncore_use_poll (default select(), which fails on fds >= 1024),
            channel_timeout 300 s (default 120); threads stays at its default, 4
  meinheld  patch.patch_all() (cooperative sockets for the upstream app), set_keepalive(300)
            (its default 0 turns keep-alive off), set_picoev_max_fd(20000) (default 4096),
            backlog 2048, no access log
  bjoern    listen_backlog 2048 (default 1024); bjoern has no access log and no idle timeout
  nginx     the ceiling, not WSGI: one process (master_process off), worker_connections 20000,
            access_log off, keepalive_timeout 300 s, keepalive_requests 10^7;
            hello = `return 200 "Hello, World!"`, big and download = static files (sendfile on)
"""

import importlib
import os
import resource
import socket
import sys

HOST = "127.0.0.1"
BACKLOG = 2048
MAX_CONN = 20000


def app_named(name):
    return getattr(importlib.import_module("bench.apps"), name)


def run_gevent(port, name):
    from gevent import monkey

    monkey.patch_all()
    from gevent.pywsgi import WSGIServer

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lsock.bind((HOST, port))
    lsock.listen(BACKLOG)
    WSGIServer(lsock, app_named(name), log=None).serve_forever()


def run_waitress(port, name):
    import waitress

    waitress.serve(app_named(name), host=HOST, port=port, backlog=BACKLOG,
                   connection_limit=MAX_CONN, asyncore_use_poll=True, channel_timeout=300,
                   _quiet=True)


def run_meinheld(port, name):
    from meinheld import patch

    patch.patch_all()
    from meinheld import server

    app = app_named(name)
    server.set_access_logger(None)
    server.set_keepalive(300)
    server.set_picoev_max_fd(MAX_CONN)
    server.set_backlog(BACKLOG)
    server.listen((HOST, port))
    server.run(app)


def run_bjoern(port, name):
    import bjoern

    bjoern.run(app_named(name), HOST, port, listen_backlog=BACKLOG)


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {maxconn};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {maxconn}; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port} backlog={backlog};
        location / {{ {location} }}
    }}
}}
"""


def run_nginx(port, name):
    work = os.path.join(os.environ.get("BENCH_TMP", "/tmp"), f"nginx-{port}")
    os.makedirs(work, exist_ok=True)
    if name == "hello":
        location = 'default_type text/plain; return 200 "Hello, World!";'
    elif name == "big":
        path = os.path.join(work, "big.bin")
        with open(path, "wb") as f:
            f.write(b"\x5a" * (1 << 20))
        location = f"default_type application/octet-stream; root {work}; try_files /big.bin =404;"
    elif name == "download":
        folder, base = os.path.split(os.environ["BENCH_FILE"])
        location = f"default_type application/octet-stream; root {folder}; try_files /{base} =404;"
    else:
        sys.exit(f"nginx serves hello, big and download only, not {name}")
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=work, host=HOST, port=port, backlog=BACKLOG,
                                  maxconn=MAX_CONN, location=location))
    os.execvp("nginx", ["nginx", "-e", os.path.join(work, "error.log"), "-p", work, "-c", conf])


def main():
    kind, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runner = {"gevent": run_gevent, "waitress": run_waitress, "meinheld": run_meinheld,
              "bjoern": run_bjoern, "nginx": run_nginx}.get(kind)
    if runner is None:
        sys.exit(f"unknown server kind {kind!r}")
    try:
        runner(port, name)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
