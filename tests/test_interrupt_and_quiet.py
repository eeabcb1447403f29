"""Ctrl-C stops a command within seconds, says how to go on and leaves no lock behind; the engines' own
libraries stay quiet unless asked (`labeler --verbose`), and never write between labeler's results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import labeler.engine.logs as logs
from labeler.cli.app import main
from labeler.store import read_split

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions" / "harmless.yaml"
INTERRUPTED = "interrupted: rerun the same command to resume"
# What vLLM, torch and transformers print when they are let: log lines and their warnings
NOISE = ("WARNING", " INFO ", "(EngineCore", "(MainProcess", "FutureWarning", "Warning:")


def env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    names = set(logs.SETTINGS) | {"LABELER_VERBOSE"}
    return {**{k: v for k, v in os.environ.items() if k not in names}, "PYTHONPATH": path,
            "HF_HUB_OFFLINE": "1", **extra}


def test_engine_logs_quiet_by_default_loud_when_asked_and_the_users_own_settings_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in logs.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(logs, "_USER_SET", frozenset({"TORCH_CPP_LOG_LEVEL"}))
    logs.engine_logs(verbose=True)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO" and os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert os.environ["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"  # never on stdout
    assert "TORCH_CPP_LOG_LEVEL" not in os.environ  # the user's variable (unset here) is left as it is
    logs.engine_logs(verbose=None)  # an engine opening after the command chose: the choice stays
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO"
    logs.engine_logs(verbose=False)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"


def test_ctrl_c_in_a_command_exits_130_saying_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import labeler.cli.validate as validate

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(validate, "read_constitution", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(HARMLESS)])
    assert exc.value.code == 130 and INTERRUPTED in capsys.readouterr().err


def label_command(pairs: Path, out: Path, *verbose: str) -> list[str]:
    return [sys.executable, "-m", "labeler", *verbose, "label", "--constitution", str(HARMLESS),
            "--pairs", str(pairs), "--out", str(out), "--batch-size", "2"]


@pytest.mark.slow
@pytest.mark.vllm
def test_ctrl_c_on_the_vllm_engine_stops_within_seconds_and_the_rerun_resumes_quietly(
    tmp_path: Path, embedded_model: Path
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}: name a color.", "response_a": f"Blue {i}.",
                                         "response_b": f"Seven {i}."}) + "\n" for i in range(8)))
    out = tmp_path / "run"
    # its own process group, as a terminal's Ctrl-C reaches the command and every process it started
    process = subprocess.Popen(label_command(pairs, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env(), cwd=REPO, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while process.poll() is None and not list((out / "preferences").glob("shard-*.arrow")):
        assert time.monotonic() < deadline, "no shard written"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    sent = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    took = time.monotonic() - sent
    assert process.returncode == 130, stderr[-3000:]
    assert took < 15, f"{took:.1f} s from Ctrl-C to exit"
    assert INTERRUPTED in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert not [line for line in stdout.splitlines() if any(n in line for n in NOISE)], stdout
    assert not [line for line in stderr.splitlines() if "WARNING" in line], stderr[-3000:]  # quiet by default
    assert not list(out.glob(".*lock")), sorted(p.name for p in out.iterdir())
    # the rerun (with --verbose) resumes and finishes; its stdout holds labeler's result alone, the engines'
    # info and warnings are on stderr, and no lock stays
    again = subprocess.run(label_command(pairs, out, "--verbose"), capture_output=True, text=True, env=env(),
                           cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().startswith("wrote ") and len(again.stdout.strip().splitlines()) == 1, again.stdout
    assert "WARNING" in again.stderr or " INFO " in again.stderr, again.stderr[-3000:]
    assert not list(out.glob(".*lock")), sorted(p.name for p in out.iterdir())
    ids = read_split(out, "preferences").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 8
