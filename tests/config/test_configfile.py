"""Configuration from a TOML file, the environment and flags: precedence (flag > environment >
file > default), --print-config and --check-config, and every way a value can be bad (one line
naming the key as the user spelled it, exit 2)."""

from __future__ import annotations

import dataclasses
import re
import sys

import pytest
import requests

from conftest import run_to_end
from greenserve import cli
from greenserve.config.options import Config
from greenserve.config.file import read_config_file, render_toml
from greenserve.errors import ConfigError
from support import APP, who, workers_seen

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No GREENSERVE_* variable of the outer environment leaks into a test."""
    import os

    for key in list(os.environ):
        if key.startswith("GREENSERVE_"):
            monkeypatch.delenv(key)


def write(tmp_path, text: str, name: str = "greenserve.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def printed(*args: str, env=None) -> dict:
    """Run ``greenserve --print-config``; return {key: (value, origin)}."""
    done = run_to_end("--print-config", *args, env=env)
    assert done.returncode == 0, done.stderr
    values = tomllib.loads(done.stdout)
    origins = dict(re.findall(r"^(\w+) = .*  # (.*)$", done.stdout, re.M))
    return {key: (value, origins[key]) for key, value in values.items()}


# -- precedence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("file, env, flag, expected", [
    (False, False, False, (1 << 30, "default")),
    (True, False, False, (10 << 10, "FILE: max_body_size")),
    (True, True, False, (20 << 10, "GREENSERVE_MAX_BODY_SIZE")),
    (True, True, True, (30 << 10, "--max-body-size")),
    (False, False, True, (30 << 10, "--max-body-size")),
    (True, False, True, (30 << 10, "--max-body-size")),
])
def test_precedence_flag_over_env_over_file_over_default(tmp_path, file, env, flag, expected):
    path = write(tmp_path, 'max_body_size = "10k"\nworkers = 3\n')
    args = (["--config", path] if file else []) + (["--max-body-size", "30k"] if flag else [])
    environ = {"GREENSERVE_MAX_BODY_SIZE": "20k"} if env else {}
    config = printed(*args, env=environ)
    value, origin = expected
    assert config["max_body_size"] == (value, origin.replace("FILE", path))
    assert config["workers"] == ((3, f"{path}: workers") if file else (1, "default"))


def test_print_config_reads_back_as_the_same_config(tmp_path):
    first = run_to_end("--print-config", "--bind", "unix:/tmp/a b.sock", "--bind", "[::1]:0",
                       "--root-path", '/app "x" \\ é', "--umask", "007", "--reuse-port",
                       "--worker-timeout", "2.5")
    assert first.returncode == 0, first.stderr
    path = write(tmp_path, first.stdout)
    second = printed("--config", path)
    assert second["bind"] == (["unix:/tmp/a b.sock", "[::1]:0"], f"{path}: bind")
    assert second["root_path"][0] == '/app "x" \\ é'
    assert second["umask"][0] == 0o007 and "umask = 0o007" in first.stdout
    assert second["reuse_port"][0] is True and second["worker_timeout"][0] == 2.5


def test_render_toml_round_trips_every_option():
    config = Config(bind=("127.0.0.1:0", "unix:/x\x7f\"y"), root_path="/\N{SNOWMAN}\t",
                    workers=3, umask=0o077, reload=True, graceful_timeout=1e-05,
                    access_log="-")
    data = tomllib.loads(render_toml(config, {}))
    settings = {key: (value, key) for key, value in data.items()}
    assert Config.from_layers(settings) == config
    assert set(data) == {f.name for f in dataclasses.fields(Config)}


def test_negative_boolean_flag_wins_over_the_environment():
    config = printed("--no-reuse-port", env={"GREENSERVE_REUSE_PORT": "yes"})
    assert config["reuse_port"] == (False, "--no-reuse-port")
    assert printed(env={"GREENSERVE_REUSE_PORT": "yes"})["reuse_port"] == (
        True, "GREENSERVE_REUSE_PORT")


def test_file_values_reach_the_running_server(run, tmp_path):
    path = write(tmp_path, 'bind = ["127.0.0.1:1"]\nworkers = 2\nmax_request_line = "64"\n'
                           "max_requests = 0\n")
    proc = run(APP, "--config", path, "--bind", "127.0.0.1:0",
               env={"GREENSERVE_MAX_REQUEST_LINE": "128"})
    url = proc.url()
    assert not url.endswith(":1")  # the flag won over the file
    proc.wait_for(re.compile("all 2 workers are ready"))
    assert set(workers_seen(url, 2)) == {0, 1}  # workers from the file
    assert requests.get(url + "/" + "a" * 100, timeout=5).status_code == 200  # env: 128
    assert requests.get(url + "/" + "a" * 130, timeout=5).status_code == 414
    assert who(url)["multiprocess"] is True
    assert proc.stop() == 0


# -- check-config -------------------------------------------------------------------------------


def test_check_config(tmp_path):
    path = write(tmp_path, "workers = 4\n")
    ok = run_to_end("--check-config", "--config", path, APP)
    assert ok.returncode == 0 and "valid" in ok.stdout
    assert run_to_end("--check-config", "--config", path).returncode == 0  # no app: config only
    bad_app = run_to_end("--check-config", "--config", path, "no_such_module:app")
    assert bad_app.returncode == 2 and "no_such_module" in bad_app.stderr
    bad_value = run_to_end("--check-config", "--workers", "none", APP)
    assert bad_value.returncode == 2 and "--workers" in bad_value.stderr


def test_no_app_is_one_line_and_exit_2():
    done = run_to_end("--bind", "127.0.0.1:0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the WSGI app is missing" in lines[0]


# -- every bad value: one line naming the key, exit 2 -------------------------------------------

BAD_FILE = [
    ("max_body_sise = 1", "max_body_sise: unknown option (did you mean max_body_size?)"),
    ('max_body_size = "lots"', "max_body_size: not a size: 'lots'"),
    ("max_body_size = true", "max_body_size: must be of type int, not bool"),
    ("max_body_size = -1", "max_body_size: must not be negative"),
    ("workers = 2.5", "workers: must be of type int, not float"),
    ("workers = 0", "workers: must be greater than 0"),
    ('workers = "two"', "workers: invalid literal for int()"),
    ("worker_timeout = -1", "worker_timeout: must not be negative"),
    ("max_requests = -3", "max_requests: must not be negative"),
    ("max_requests_jitter = [1]", "max_requests_jitter: must be of type int, not list"),
    ('reuse_port = "maybe"', "reuse_port: not a boolean: 'maybe'"),
    ("reload = 1", "reload: must be of type bool, not int"),
    ('umask = "9"', "umask: not an octal mask: '9'"),
    ("umask = 0o1777", "umask: must be an octal mask from 000 to 777"),
    ("bind = [8000]", "bind: must be a list of strings"),
    ("bind = []", "bind: needs at least one address"),
    ('bind = "nowhere"', "bind: 'nowhere': expected HOST:PORT"),
    ("[server]\nworkers = 2", "server: unknown option"),
    ('log_level = "loud"', "log_level: must be one of"),
]


def one_error_line(capsys, argv) -> str:
    """Run the CLI in this process; it must exit 2 with one line. Returns the line."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("greenserve: error: ")
    return lines[0]


@pytest.mark.parametrize("text, message", BAD_FILE, ids=[t for t, _ in BAD_FILE])
def test_bad_file_value_is_one_line_naming_the_key(tmp_path, capsys, text, message):
    path = write(tmp_path, text + "\n")
    line = one_error_line(capsys, ["--config", path, APP])
    assert line.startswith(f"greenserve: error: {path}: {message}"), line


@pytest.mark.parametrize("variable, value, message", [
    ("GREENSERVE_MAX_BODY_SIZE", "lots", "not a size"),
    ("GREENSERVE_WORKERS", "0", "must be greater than 0"),
    ("GREENSERVE_WORKER_TIMEOUT", "soon", "could not convert"),
    ("GREENSERVE_MAX_REQUESTS", "-1", "must not be negative"),
    ("GREENSERVE_MAX_REQUESTS_JITTER", "1.5", "invalid literal"),
    ("GREENSERVE_REUSE_PORT", "maybe", "not a boolean"),
    ("GREENSERVE_RELOAD", "2", "not a boolean"),
    ("GREENSERVE_UMASK", "8", "not an octal mask"),
    ("GREENSERVE_BIND", "fd://-1", "fd:// needs a file descriptor number"),
    ("GREENSERVE_NO_SUCH", "1", "unknown setting"),
])
def test_bad_environment_value_is_one_line_naming_the_variable(monkeypatch, capsys, variable,
                                                                value, message):
    monkeypatch.setenv(variable, value)
    line = one_error_line(capsys, [APP])
    assert line.startswith(f"greenserve: error: {variable}: ") and message in line, line


@pytest.mark.parametrize("args, message", [
    (["--max-body-size", "lots"], "--max-body-size: not a size"),
    (["--workers", "0"], "--workers: must be greater than 0"),
    (["--workers", "many"], "--workers: invalid literal"),
    (["--worker-timeout", "-1"], "--worker-timeout: must not be negative"),
    (["--max-requests", "-5"], "--max-requests: must not be negative"),
    (["--max-requests-jitter", "x"], "--max-requests-jitter: invalid literal"),
    (["--umask", "999"], "--umask: not an octal mask"),
    (["--umask", "0o1000"], "--umask: must be an octal mask from 000 to 777"),
    (["--bind", "fd://"], "--bind: 'fd://': fd:// needs a file descriptor number"),
    (["--reuse-port=yes"], "--reuse-port/--no-reuse-port: ignored explicit argument"),
    (["--config"], "--config: expected one argument"),
])
def test_bad_flag_is_one_line_naming_the_flag(capsys, args, message):
    line = one_error_line(capsys, [APP, *args])
    assert message in line, line


def test_a_bad_value_is_an_error_even_where_a_later_source_overrides_it(tmp_path, capsys):
    path = write(tmp_path, 'max_body_size = "lots"\n')
    line = one_error_line(capsys, ["--config", path, "--max-body-size", "10", APP])
    assert f"{path}: max_body_size: not a size" in line


@pytest.mark.parametrize("text, message", [
    (None, "cannot read"),
    ("workers = \n", "is not valid TOML"),
    ("\xff", "is not valid TOML"),
])
def test_unreadable_or_malformed_file(tmp_path, capsys, text, message):
    path = tmp_path / "x.toml"
    if text is not None:
        path.write_bytes(text.encode("latin-1"))
    line = one_error_line(capsys, ["--config", str(path), APP])
    assert line.startswith(f"greenserve: error: --config: ") and message in line, line
    assert str(path) in line


def test_the_subprocess_says_the_same(tmp_path):
    path = write(tmp_path, "workers = 0\n")
    done = run_to_end("--config", path, APP)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"greenserve: error: {path}: workers: must be greater "
                                        "than 0"]


def test_read_config_file_pairs_values_with_origins(tmp_path):
    path = write(tmp_path, 'workers = 2\nbind = ["a:1"]\n')
    assert read_config_file(path) == {"workers": (2, f"{path}: workers"),
                                      "bind": (["a:1"], f"{path}: bind")}
    with pytest.raises(ConfigError) as info:
        read_config_file(str(tmp_path / "missing.toml"))
    assert info.value.option == "--config"


def test_the_readme_example_file_is_valid(tmp_path):
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```toml\n(.*?)```", readme, re.S).group(1)
    config = printed("--config", write(tmp_path, example))
    assert config["workers"][0] == 4 and config["umask"][0] == 0o007
    assert config["max_body_size"][0] == 10 << 20
