"""The `rtvol` command: lazy imports, env fallbacks, clear errors."""

import subprocess
import sys
from pathlib import Path

from rtvol import cli


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys, rtvol.cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'torch', 'pyarrow', 'grpc', 'onnxruntime') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    assert "synth" in out.stdout or "data" in out.stdout


def test_env_fallback_and_flag_wins(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RTVOL_MODEL_REPOSITORY", str(tmp_path / "from-env"))
    args = cli.build_parser().parse_args(["evaluate", "--data", "d"])
    assert args.repo == tmp_path / "from-env"
    args = cli.build_parser().parse_args(["evaluate", "--data", "d", "--repo", "flag"])
    assert args.repo == Path("flag")


def test_bad_data_dir_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = cli.main(["train", "--data", str(tmp_path / "missing"), "--repo", str(tmp_path)])
    assert code == 2
    assert "train.csv: missing file" in capsys.readouterr().err


def test_unknown_component_is_rejected(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "nonsense"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_every_service_setting_is_described_in_help() -> None:
    """`rtvol serve SERVICE --help` explains each flag (the docstring under each field)."""
    from rtvol.services.feature.settings import FeatureSettings
    from rtvol.services.gateway.settings import GatewaySettings
    from rtvol.services.model.settings import ModelSettings

    for cls in (FeatureSettings, GatewaySettings, ModelSettings):
        undescribed = [name for name, field in cls.model_fields.items() if not field.description]
        assert not undescribed, f"{cls.__name__}: no --help text for {undescribed}"


def test_feed_to_an_unreachable_service_is_one_clear_line(capsys) -> None:  # type: ignore[no-untyped-def]
    from rtvol.localproc import free_port

    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    code = cli.main(["feed", "--synthetic", "1", "--synthetic-buckets", "3", "--seed", "1",
                     "--target", target])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rtvol: error: feature service at {target}: UNAVAILABLE")
    assert "Traceback" not in err


def test_feed_needs_data_or_synthetic(capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["feed", "--target", "127.0.0.1:1"]) == 2
    assert "--data DIR (Optiver layout) or --synthetic STOCKS" in capsys.readouterr().err
