"""Settings resolution: flag > environment > default, exit 2 on bad values."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from arith_svc.config import Settings, parse_settings
from arith_svc.faults import NONE

PROJECT_DIR = Path(__file__).resolve().parent.parent


def test_defaults():
    settings = parse_settings(["--op", "add"], {})
    assert settings == Settings("add", "127.0.0.1", 8000, 2, 4, f"{socket.gethostname()}:8000", 0, NONE)


def test_environment_is_used():
    env = {
        "ARITH_OP": "sub",
        "APP_BIND": "0.0.0.0",
        "APP_PORT": "9002",
        "ARITH_WORKERS": "3",
        "ARITH_THREADS": "8",
        "INSTANCE_ID": "sub-1",
    }
    assert parse_settings([], env) == Settings("sub", "0.0.0.0", 9002, 3, 8, "sub-1", 0, NONE)


def test_flag_wins_over_environment():
    env = {"ARITH_OP": "sub", "APP_PORT": "9002", "INSTANCE_ID": "from-env"}
    settings = parse_settings(["--op", "add", "--port", "9001", "--instance-id", "from-flag"], env)
    assert (settings.op, settings.port, settings.instance_id) == ("add", 9001, "from-flag")


def test_default_instance_id_uses_resolved_port():
    assert parse_settings(["--op", "add"], {"APP_PORT": "9123"}).instance_id.endswith(":9123")


def test_ipv6_and_hostname_binds_are_accepted():
    assert parse_settings(["--op", "add", "--bind", "::1"], {}).bind == "::1"
    assert parse_settings(["--op", "add", "--bind", "localhost"], {}).bind == "localhost"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "--op or environment variable ARITH_OP is required"),
        (["--op", "mul"], {}, "invalid --op 'mul'"),
        ([], {"ARITH_OP": "mul"}, "invalid ARITH_OP 'mul'"),
        (["--op", "add", "--port", "0"], {}, "invalid --port '0'"),
        (["--op", "add", "--port", "65536"], {}, "invalid --port"),
        (["--op", "add"], {"APP_PORT": "http"}, "invalid APP_PORT 'http'"),
        (["--op", "add", "--workers", "0"], {}, "invalid --workers"),
        (["--op", "add"], {"ARITH_THREADS": "-1"}, "invalid ARITH_THREADS"),
        (["--op", "add", "--bind", "not a host"], {}, "invalid --bind"),
        (["--op", "add", "--instance-id", "has space"], {}, "invalid --instance-id"),
        (["--op", "add", "--instance-id", "x\r\nSet-Cookie: a"], {}, "invalid --instance-id"),
        (["--op", "add", "--colour", "red"], {}, "unrecognized arguments"),
    ],
)
def test_bad_values_exit_2_with_clear_message(capsys, argv, env, message):
    with pytest.raises(SystemExit) as exc_info:
        parse_settings(argv, env)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_access_log_mode_from_flag_or_environment(capsys):
    assert parse_settings(["--op", "add"], {"ACCESS_LOG": "errors"}).access_log == "errors"
    assert parse_settings(["--op", "add", "--access-log", "off"], {"ACCESS_LOG": "errors"}).access_log == "off"
    with pytest.raises(SystemExit) as exc:
        parse_settings(["--op", "add"], {"ACCESS_LOG": "some"})
    assert exc.value.code == 2 and "ACCESS_LOG" in capsys.readouterr().err


def test_cli_bad_flag_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "arith_svc", "--op", "add", "--port", "not-a-port"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "invalid --port 'not-a-port'" in result.stderr
