"""A Server is one process: the options only a supervisor of worker processes acts on are
refused with an error naming them, never silently ignored; the command line, which runs the
supervisor, hands its Servers a configuration without them."""

from __future__ import annotations

import pytest

from greenserve import Config, ConfigError, Server, serve
from greenserve.testing import running_server
from support import APP, who

PROCESS_VALUES = [("workers", 2), ("worker_timeout", 5.0), ("max_requests", 100),
                  ("max_requests_jitter", 10), ("reload", True), ("preload", True)]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.mark.parametrize("name, value", PROCESS_VALUES, ids=[n for n, _ in PROCESS_VALUES])
def test_server_refuses_a_process_option(name, value):
    with pytest.raises(ConfigError) as caught:
        Server(hello, **{name: value})
    assert caught.value.option == name
    assert str(caught.value) == (f"{name}: Server runs in one process; use the greenserve "
                                 "command line for worker processes")


def test_server_refuses_workers_in_a_config_and_serve_refuses_before_binding():
    with pytest.raises(ConfigError, match="^workers: Server runs in one process"):
        Server(hello, Config(workers=4))
    with pytest.raises(ConfigError, match="^max_requests: "):
        serve(hello, port=0, max_requests=10)  # would block if it served
    with pytest.raises(ConfigError, match="^workers: "):
        with running_server(hello, workers=3):
            pass


def test_defaults_and_one_process_options_are_accepted():
    server = Server(hello, workers=1, worker_timeout=30.0, reuse_port=True)
    server.hub.close()
    config = Config(workers=4, max_requests=9, reload=True, keepalive_timeout=3)
    assert config.process_options() == ("workers", "max_requests", "reload")
    alone = config.one_process()
    assert alone.process_options() == () and alone.keepalive_timeout == 3
    with running_server(hello, reuse_port=True) as running:
        assert running.url


def test_the_command_line_in_one_process_accepts_worker_timeout(run):
    proc = run(APP, "--bind", "127.0.0.1:0", "--worker-timeout", "5")
    answer = who(proc.url())
    assert answer["pid"] == proc.pid and answer["multiprocess"] is False
    assert proc.stop() == 0
