"""SIGHUP reads the configuration again: the file's new values reach the new generation of
workers, options that need a restart are named and kept, an invalid file changes nothing, and a
changed ``workers`` sets the size of the new generation."""

from __future__ import annotations

import re
import signal

from support import APP, who, workers_seen
from greenserve.config.options import Config
from greenserve.errors import ConfigError
from greenserve.process.pool import Pool
from greenserve.process.reconfig import Reconfig, resize

ALL_READY = re.compile(r"all \d+ workers are ready")
RELOADED = re.compile(r"reload done: generation 1 serves")
STARTED = re.compile(r"started worker")


def test_sighup_applies_the_file_read_again_and_names_what_needs_a_restart(run, tmp_path):
    conf = tmp_path / "greenserve.toml"
    conf.write_text('workers = 2\nroot_path = "/v1"\n')
    proc = run(APP, "--bind", "127.0.0.1:0", "--config", str(conf))
    url = proc.url()
    proc.wait_for(ALL_READY)
    old = workers_seen(url, 2)
    assert who(url)["script_name"] == "/v1"
    conf.write_text('workers = 3\nroot_path = "/v2"\nbacklog = 16\n'
                    'metrics_bind = "127.0.0.1:0"\n')
    proc.send(signal.SIGHUP)
    proc.wait_for(re.compile(r"SIGHUP: backlog, metrics_bind changed, but cannot change without "
                             r"a restart; the running values stay"))
    proc.wait_for(RELOADED, timeout=30)
    proc.wait_for(re.compile(r"worker \d \(pid \d+\) exited with status 0"), count=2)
    new = workers_seen(url, 3, exclude=tuple(old.values()))
    assert set(new) == {0, 1, 2}
    for _ in range(10):
        answer = who(url)
        assert answer["generation"] == 1 and answer["script_name"] == "/v2", answer
    assert "metrics on" not in proc.stderr  # the endpoint is made once, before the first fork

    started = len(proc.matches(STARTED))
    conf.write_text('workers = 2\nmax_body_size = "lots"\n')
    proc.send(signal.SIGHUP)
    proc.wait_for(re.compile(r"SIGHUP: the configuration is not valid, so nothing is reloaded "
                             r"and the running workers keep serving: .*greenserve\.toml: "
                             r"max_body_size: not a size: 'lots'"))
    assert workers_seen(url, 3) == new  # the same three workers, with the values in force
    assert who(url)["script_name"] == "/v2"
    assert len(proc.matches(STARTED)) == started
    assert len(proc.matches(re.compile("not valid"))) == 1 and not proc.tracebacks()
    assert proc.stop() == 0


def test_sighup_keeps_the_flags_over_the_file_and_a_sigttin_when_workers_is_unchanged(
        run, tmp_path):
    conf = tmp_path / "greenserve.toml"
    conf.write_text('workers = 2\nroot_path = "/file"\n')
    proc = run(APP, "--bind", "127.0.0.1:0", "--config", str(conf), "--root-path", "/flag")
    url = proc.url()
    proc.wait_for(ALL_READY)
    proc.send(signal.SIGTTIN)
    proc.wait_for(re.compile(r"worker 2 \(pid \d+\) is ready"))
    conf.write_text('workers = 2\nroot_path = "/file2"\n')
    proc.send(signal.SIGHUP)
    proc.wait_for(re.compile(r"SIGHUP: reloading, starting 3 new workers"))
    proc.wait_for(RELOADED, timeout=30)
    proc.wait_for(re.compile(r"worker \d \(pid \d+\) exited with status 0"), count=3)
    assert set(workers_seen(url, 3)) == {0, 1, 2}
    assert {who(url)["script_name"] for _ in range(5)} == {"/flag"}
    assert proc.stop() == 0


# -- the parts, without processes ----------------------------------------------------------------


def test_resize_sets_the_wanted_indices_within_the_capacity():
    pool = Pool(2)
    assert resize(pool, 5) == 5 and pool.wanted == set(range(5))
    assert resize(pool, 1) == 1 and pool.wanted == {0}
    assert resize(pool, 1000) == pool.capacity == 64


def test_an_invalid_configuration_changes_nothing():
    running = Config(workers=2)
    pool = Pool(2)

    def invalid() -> Config:
        raise ConfigError("greenserve.toml: workers", "must be greater than 0")

    reconfig = Reconfig(invalid)
    assert reconfig.begin(running, pool) is False
    assert reconfig.pending is None and pool.wanted == {0, 1}


def test_a_pending_configuration_keeps_restart_only_values_until_done_or_abandoned():
    running = Config(workers=2, bind=("127.0.0.1:0",))
    pool = Pool(2)
    reconfig = Reconfig(lambda: Config(workers=4, bind=("127.0.0.1:1",), root_path="/new"))
    assert reconfig.begin(running, pool) is True
    assert reconfig.pending is not None and reconfig.pending.root_path == "/new"
    assert reconfig.pending.bind == ("127.0.0.1:0",) and pool.wanted == set(range(4))
    reconfig.abandon(pool)
    assert reconfig.pending is None and pool.wanted == {0, 1}
    assert reconfig.begin(running, pool) is True
    assert reconfig.done(running).root_path == "/new" and reconfig.pending is None
