"""Bad input, command by command, through the real CLI in a subprocess: every case exits 2 with a message
naming the offending file or option, prints no traceback, writes nothing, and returns before any model,
engine or tokenizer is loaded (`LABELER_FORBID_MODEL_LOAD` makes every load fail loudly, with exit 1).

The cases run a few at a time in one fixture (each is a fresh interpreter), only those the pytest run
selected (`-k export/` runs the export cases alone); each then passes or fails on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labeler.core.chat import Message
from labeler.core.records import PreferenceRecord, RevisionRound, SFTRecord, conversation_columns, record_id
from labeler.engine.model_ref import FORBID_LOAD_ENV
from labeler.store import RunStore

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions" / "harmless.yaml"
SALMON = REPO / "constitutions" / "salmon.yaml"

# --- inputs a case builds in its own folder ---------------------------------------------------------


def prompts_file(folder: Path, rows: int = 3) -> Path:
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(rows)))
    return path


def pairs_file(folder: Path, extra: str = "") -> Path:
    path = folder / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "Hi?", "response_a": "Hello.", "response_b": "Go away."}) + "\n" + extra)
    return path


def responses_file(folder: Path, *rows: dict) -> Path:
    path = folder / "responses.jsonl"
    rows = rows or ({"prompt": "Hi?", "responses": ["Hello.", "Go away.", "Hm."]},)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def human_file(folder: Path, extra: str = "") -> Path:
    path = folder / "human.jsonl"
    row = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away.", "topic": "x"}
    path.write_text(json.dumps(row) + "\n" + extra)
    return path


def empty_file(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("\n")
    return path


def sft_run(folder: Path, fingerprint: dict | None = None) -> Path:
    run = folder / "sft-run"
    records = [
        SFTRecord(
            id=f"p{i}", prompt=f"Q{i}?", prompt_messages=(Message(role="user", content=f"Q{i}?"),), initial="a",
            revision="b", rounds=(RevisionRound(principle_id="x", critique="c", revision="b"),),
            messages=(Message(role="user", content=f"Q{i}?"), Message(role="assistant", content="b")), model="m",
        )
        for i in range(4)
    ]  # fmt: skip
    store = RunStore.open(run, "sft", fingerprint or {"config": {"made": "by a test"}})
    store.write_shard(records[:2])
    store.write_shard(records[2:])
    store.mark_complete()
    return run


def preference_run(folder: Path) -> Path:
    run = folder / "pref-run"
    records = []
    for i in range(4):
        prompt, a, b = f"Q{i}?", "yes", "no"
        records.append(
            PreferenceRecord(
                id=record_id(prompt, a, b), **conversation_columns((Message(role="user", content=prompt),), a, b),
                response_a=a, response_b=b, p_a=0.7, p_a_ab=0.7, p_a_ba=0.7, mass_ab=0.9,
                mass_ba=0.9, logprobs_ab=(-0.5, -1.3), logprobs_ba=(-0.5, -1.3), consistent=True, principle_ids=(),
                principle_scores=(), margin=0.4, judge_model="m", source="test", flags=(),
            )
        )  # fmt: skip
    store = RunStore.open(run, "preferences", {"config": {"made": "by a test"}})
    store.write_shard(records)
    store.mark_complete()
    return run


def truncate_first_shard(run: Path, split: str) -> Path:
    shard = sorted((run / split).glob("*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[:-40])
    return shard


def template_folder(folder: Path, name: str, body: str) -> Path:
    templates = folder / "templates"
    templates.mkdir()
    source = (REPO / "prompts" / f"{name}.jinja").read_text()
    (templates / f"{name}.jinja").write_text(body + "\n" + source)
    return templates


def run_config(folder: Path, **overrides: object) -> Path:
    config: dict[str, object] = {
        "out": str(folder / "run"),
        "constitution": str(HARMLESS),
        "prompts": str(prompts_file(folder)),
        "stages": {"revise": {"rounds": 1}, "label": {"pairs": "revise"}},
    }
    config.update(overrides)
    path = folder / "run.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


# A run that closes the loop (stages.iterations needs label, train_rm, ppo and eval_prompts).
LOOP_STAGES: dict[str, object] = {"label": {"pairs": "prompts"}, "train_rm": {}, "ppo": {}, "iterations": 2}


# --- the table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (built in the case's own folder) and what its message must name."""

    id: str
    build: Callable[[Path], list[str]]  # folder -> CLI arguments after `labeler`
    names: Callable[[Path], list[str]]  # folder -> texts the error message must contain
    read_only: str | None = None  # a folder (relative to the case's) mounted read-only for the command
    env: dict[str, str] = field(default_factory=dict)  # environment variables set for the command


def same(*texts: str) -> Callable[[Path], list[str]]:
    return lambda _: list(texts)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def dora_adapter(folder: Path) -> Path:
    """A DoRA adapter folder on the embedded model (its weights never read: the check comes first)."""
    adapter = folder / "dora"
    adapter.mkdir()
    config = {"peft_type": "LORA", "use_dora": True, "r": 8, "base_model_name_or_path": "default"}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")  # empty, well-formed
    return adapter


def _file(path: Path, text: str = "x\n") -> Path:
    path.write_text(text)
    return path


_BUSY: list[socket.socket] = []  # ports held open by this test process while a case runs


def _busy_port() -> str:
    """A port on 127.0.0.1 that this process listens on (taken for every command the cases start)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    _BUSY.append(sock)
    return str(sock.getsockname()[1])


def _altered_labels(run: Path) -> Path:
    """`run` with a human labels file whose second record was edited after it was written."""
    from labeler.store.human import append_label, labels_file, new_label

    for choice in ("A", "B"):
        append_label(run, new_label(f"pair-{choice}", "ana", choice))
    path = labels_file(run, "ana")
    path.write_text(path.read_text().replace('"choice":"B"', '"choice":"A"'))
    return run


def _loop(path: Path) -> Path:
    path.symlink_to(path)
    return path


def _model_folder(path: Path, config: str | None = '{"architectures": ["LlamaForCausalLM"]}') -> Path:
    _mkdir(path)
    if config is not None:
        (path / "config.json").write_text(config)
    return path


def heads_reward_model(folder: Path) -> Path:
    """What `train-rm --heads principles` writes, as far as the checks read it: config (heads in id2label),
    a well-formed safetensors header, the embedded model's tokenizer. Its weights are never loaded."""
    model = _mkdir(folder / "heads-rm")
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "overall", "1": "harmless"},
    }))
    (model / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    embedded = Path.home() / ".cache/labeler/models/SmolLM2-135M-Instruct"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (embedded / name).is_file():
            shutil.copy(embedded / name, model / name)
    (model / "labeler-rm.json").write_text(json.dumps({"heads": ["overall", "harmless"],
                                                       "head_weights": {"harmless": 3.0}}))
    return model


CASES = [
    # 1. a folder that is not a model, for every model argument; a missing path, a Hub id not in the cache
    Case("score-rm/empty-model-folder", lambda d: ["score-rm", "--model", str(_mkdir(d / "m")),
         "--pairs", str(human_file(d))], lambda d: [str(d / "m"), "no config.json"]),
    Case("score-rm/run-folder-as-model", lambda d: ["score-rm", "--model", str(preference_run(d)),
         "--pairs", str(human_file(d))], lambda d: [str(d / "pref-run"), "labeler run folder"]),
    Case("score-rm/corrupt-config-json", lambda d: ["score-rm", "--model", str(_model_folder(d / "m", "{oops")),
         "--pairs", str(human_file(d))], lambda d: [str(d / "m" / "config.json"), "not valid JSON"]),
    Case("score-rm/causal-lm-is-no-reward-model", lambda d: ["score-rm", "--model",
         str(Path.home() / ".cache/labeler/models/SmolLM2-135M-Instruct"), "--pairs", str(human_file(d))],
         same("not a reward model", "--model")),
    Case("ppo/run-folder-as-reward-model", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--out",
         str(d / "out"), "--reward-model", str(preference_run(d))], lambda d: ["--reward-model", str(d / "pref-run")]),
    Case("ppo/missing-policy", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--out", str(d / "out"),
         "--reward-rule", "word:no", "--policy", str(d / "nowhere")], lambda d: ["--policy", str(d / "nowhere")]),
    Case("train-rm/missing-base-model", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out",
         str(d / "rm"), "--base-model", str(d / "nowhere")], lambda d: ["--base-model", str(d / "nowhere")]),
    Case("generate/missing-model", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--model",
         str(d / "nowhere")], lambda d: [str(d / "nowhere"), "does not exist"]),
    Case("label/empty-judge-folder", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--judge-model", str(_mkdir(d / "m"))],
         lambda d: ["--judge-model", str(d / "m")]),
    Case("label/missing-policy-model", lambda d: ["label", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--policy-model", str(d / "nowhere")],
         lambda d: ["--policy-model", str(d / "nowhere")]),
    Case("revise/file-as-model", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--model", str(_file(d / "weights.bin"))],
         lambda d: ["--model", str(d / "weights.bin"), "is a file"]),
    Case("revise/no-safetensors", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--model", str(_model_folder(d / "m"))],
         same("safetensors", "--model")),
    Case("eval-judge/hub-id-not-cached", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--judge-model",
         "nobody-here/no-such-model"], same("nobody-here/no-such-model", "--judge-model", "Hugging Face cache")),
    # 2. a file where a run folder is expected
    Case("report/file-as-run", lambda d: ["report", str(_file(d / "run.txt"))], lambda d: [str(d / "run.txt")]),
    Case("label/pairs-from-a-file", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs-from",
         str(_file(d / "run.txt")), "--out", str(d / "out")], lambda d: [str(d / "run.txt"), "not a labeler run"]),
    Case("merge/file-as-part", lambda d: ["merge", str(_file(d / "part.txt")), "--out", str(d / "merged")],
         lambda d: [str(d / "part.txt")]),
    Case("train-rm/file-as-data", lambda d: ["train-rm", "--data", str(_file(d / "run.txt")), "--out",
         str(d / "rm")], lambda d: [str(d / "run.txt"), "--data"]),
    # 3. an output that cannot be written
    Case("merge/out-is-a-file", lambda d: ["merge", str(preference_run(d)), "--out", str(_file(d / "merged"))],
         lambda d: ["--out", str(d / "merged")]),
    Case("merge/out-read-only", lambda d: ["merge", str(preference_run(d)), "--out", str(_mkdir(d / "ro") / "m")],
         lambda d: ["--out", "read-only"], read_only="ro"),
    Case("report/run-read-only", lambda d: ["report", str(preference_run(_mkdir(d / "ro")))],
         lambda d: [str(d / "ro" / "pref-run" / "report"), "read-only"], read_only="ro"),
    Case("model-prepare/out-is-a-file", lambda d: ["model", "prepare", "--out", str(_file(d / "model"))],
         lambda d: ["--out", str(d / "model")]),
    Case("revise/out-is-a-file", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(_file(d / "out"))], lambda d: ["--out", str(d / "out")]),
    Case("label/out-inside-a-file", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(_file(d / "f") / "run")], lambda d: ["--out", "not a folder"]),
    Case("generate/out-is-a-folder", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--out",
         str(_mkdir(d / "answers"))], lambda d: ["--out", str(d / "answers")]),
    Case("eval-judge/out-read-only", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--out",
         str(_mkdir(d / "ro") / "judge.json")], same("--out", "read-only"), read_only="ro"),
    Case("train-rm/out-is-a-file", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out",
         str(_file(d / "rm"))], lambda d: ["--out", str(d / "rm")]),
    Case("ppo/out-is-a-file", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--reward-rule", "word:no",
         "--out", str(_file(d / "ppo"))], lambda d: ["--out", str(d / "ppo")]),
    # 4. the output folder holds another run, or an input shard is damaged
    Case("revise/other-run-in-out", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(sft_run(d))], same("manifest.json", "different settings")),
    Case("label/pairs-from-truncated-shard", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs-from",
         str(_truncated_sft_run(d)), "--out", str(d / "out")], same("shard-00000.arrow", "sha256")),
    Case("label/unlisted-shard-in-out", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(_stray_shard_run(d))], same("does not list", "--overwrite")),
    # 5. options checked up front
    Case("label/cot-clamp-reversed", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--cot", "--cot-clamp", "0.6,0.4"], same("--cot-clamp")),
    Case("label/cot-clamp-not-numbers", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--cot-clamp", "low,high"], same("--cot-clamp", "LOW,HIGH")),
    Case("label/principles-bogus", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--principles", "some"], same("--principles", "sample:K")),
    # K responses per prompt: ranking options and response lists
    Case("label/responses-one", lambda d: ["label", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--responses", "1"], same("--responses", "1")),
    Case("label/responses-without-prompts", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--responses", "4"], same("--responses", "prompts")),
    Case("label/binarize-without-rankings", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--binarize", "best-worst"], same("--binarize", "rankings")),
    Case("label/binarize-bogus", lambda d: ["label", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--responses", "4", "--binarize", "worst"],
         same("--binarize", "best-worst")),
    Case("label/comparisons-bogus", lambda d: ["label", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--responses", "4", "--comparisons", "some"],
         same("--comparisons", "'all'")),
    Case("label/comparisons-cannot-connect", lambda d: ["label", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--responses", "4", "--comparisons", "2"],
         same("--comparisons", "at least 3")),
    Case("label/comparisons-cannot-connect-a-row", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(responses_file(d, {"prompt": "Hi?", "responses": ["a", "b"]},
                            {"prompt": "Yo?", "responses": ["a", "b", "c", "d", "e"]})),
         "--out", str(d / "out"), "--comparisons", "3"],
         lambda d: [f"{d / 'responses.jsonl'}:2", "--comparisons", "at least 4"]),
    Case("label/comparisons-with-pairs", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--comparisons", "3"], same("--comparisons")),
    Case("label/one-response-in-row", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(responses_file(d, {"prompt": "Hi?", "responses": ["Hello."]})), "--out", str(d / "out")],
         lambda d: [f"{d / 'responses.jsonl'}:1", "responses", "at least 2"]),
    Case("label/duplicate-response-ids", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(responses_file(d, {"prompt": "Hi?", "responses": ["a", "b"]},
                            {"prompt": "Hi?", "responses": ["a", "b", "c"], "response_ids": ["x", "y", "x"]})),
         "--out", str(d / "out")], lambda d: [f"{d / 'responses.jsonl'}:2", "response_ids", "duplicate"]),
    Case("label/repeated-response-text", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(responses_file(d, {"prompt": "Hi?", "responses": ["a", "b", "a"]})), "--out", str(d / "out")],
         lambda d: [f"{d / 'responses.jsonl'}:1", "responses", "same text"]),
    Case("label/response-ids-wrong-length", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(responses_file(d, {"prompt": "Hi?", "responses": ["a", "b"], "response_ids": ["x"]})),
         "--out", str(d / "out")], lambda d: [f"{d / 'responses.jsonl'}:1", "response_ids"]),
    Case("label/rankings-in-job-array", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(responses_file(d)), "--out", str(d / "out"), "--shard-index", "0", "--num-shards", "2"],
         same("--num-shards", "one process")),
    Case("export/ultrafeedback-without-rankings", lambda d: ["export", str(preference_run(d)), "--out",
         str(d / "out"), "--ultrafeedback"], same("--ultrafeedback", "no rankings split")),
    # 6. empty input
    Case("revise/empty-prompts", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(empty_file(d, "p.jsonl")), "--out", str(d / "out")], lambda d: [str(d / "p.jsonl"), "no prompts"]),
    Case("label/empty-pairs", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(empty_file(d, "p.jsonl")), "--out", str(d / "out")], lambda d: [str(d / "p.jsonl"), "no pairs"]),
    Case("label/empty-prompts", lambda d: ["label", "--constitution", str(HARMLESS), "--prompts",
         str(empty_file(d, "p.jsonl")), "--out", str(d / "out")], lambda d: [str(d / "p.jsonl"), "no prompts"]),
    Case("eval-judge/empty-pairs", lambda d: ["eval-judge", "--pairs", str(empty_file(d, "h.jsonl"))],
         lambda d: [str(d / "h.jsonl"), "no pairs"]),
    Case("generate/empty-prompts", lambda d: ["generate", "--prompts", str(empty_file(d, "p.jsonl"))],
         lambda d: [str(d / "p.jsonl"), "no prompts"]),
    Case("ppo/empty-prompts", lambda d: ["ppo", "--prompts", str(empty_file(d, "p.jsonl")), "--reward-rule",
         "word:no", "--out", str(d / "out")], lambda d: [str(d / "p.jsonl"), "no prompts"]),
    Case("score-rm/empty-pairs", lambda d: ["score-rm", "--model", str(d / "nowhere"), "--pairs",
         str(empty_file(d, "h.jsonl"))], lambda d: [str(d / "nowhere")]),
    # 7. validate runs the checks `run` runs
    Case("validate/missing-engine-model", lambda d: ["validate", str(run_config(d, engine={"model":
         str(d / "nowhere")}))], lambda d: ["key engine.model", str(d / "nowhere")]),
    Case("validate/pairs-file-with-a-bad-row", lambda d: ["validate", str(run_config(d, stages={"label": {"pairs":
         str(pairs_file(d, '{"prompt": "Hi?", "response_a": "x"}\n'))}}))],
         lambda d: [f"{d / 'pairs.jsonl'}:2", "response_b"]),
    Case("validate/cot-clamp-reversed", lambda d: ["validate", str(run_config(d, stages={"label": {"pairs":
         "prompts", "options": {"cot": True, "cot_clamp": [0.7, 0.3]}}}))], same("cot_clamp", "run.yaml")),
    Case("validate/template-refused-by-sandbox", lambda d: ["validate", str(run_config(d, templates=str(
         template_folder(d, "critique", "{{ ''.__class__.__mro__ }}"))))], lambda d: [
         str(d / "templates" / "critique.jinja"), "SecurityError"]),
    Case("validate/bad-constitution", lambda d: ["validate", str(_file(d / "c.yaml",
         "name: c\nprinciples:\n  - id: Bad Id\n    judge: Which?\n"))], lambda d: [str(d / "c.yaml"), "id"]),
    Case("validate/dromedary-prompt-without-rules", lambda d: ["validate", str(_file(d / "prompt.txt",
         "# Camel\n\n## General Rules\n\nCamel: be kind.\n\n## Examples\n"))],
         lambda d: [str(d / "prompt.txt"), "no `N (name). rule` lines"]),
    Case("run/missing-prompts", lambda d: ["run", str(run_config(d, prompts=str(d / "nowhere.jsonl")))],
         lambda d: ["key prompts", str(d / "nowhere.jsonl")]),
    Case("run/unknown-key", lambda d: ["run", str(run_config(d, stages={"revise": {"rounds": 1, "round": 2}}))],
         same("stages.revise.round", "run.yaml")),
    # 8. a template that would hang while rendering
    Case("label/template-loops-forever", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--templates", str(template_folder(d, "judge",
         "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"))],
         lambda d: [str(d / "templates" / "judge.jinja"), "loop iterations"]),
    Case("revise/template-writes-forever", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--templates", str(template_folder(d, "critique",
         "{% for i in range(99999) %}{{ 'endless text ' * 100 }}{% endfor %}"))],
         lambda d: [str(d / "templates" / "critique.jinja"), "characters of output"]),
    # 9. smaller: folders and link loops as files, two sources, messages never a raw pydantic dict
    Case("revise/folder-as-prompts", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(_mkdir(d / "prompts")), "--out", str(d / "out")], lambda d: [str(d / "prompts"), "is a folder"]),
    Case("label/link-loop-as-pairs", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(_loop(d / "loop.jsonl")), "--out", str(d / "out")], lambda d: [str(d / "loop.jsonl"), "symbolic"]),
    Case("label/two-sources", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs", str(pairs_file(d)),
         "--prompts", str(prompts_file(d)), "--out", str(d / "out")], same("exactly one of --prompts")),
    Case("train-rm/principle-conditioned-without-constitution", lambda d: ["train-rm", "--data",
         str(preference_run(d)), "--out", str(d / "rm"), "--principle-conditioned"],
         same("principle_conditioned needs a constitution")),
    Case("train-rm/old-option-name", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out",
         str(d / "rm"), "--lr", "1e-4"], same("--lr was renamed --learning-rate")),
    Case("train-rm/constitution-without-salmon", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out",
         str(d / "rm"), "--principle-conditioned", "--constitution", str(_file(d / "j.yaml",
         "name: j\nprinciples:\n  - id: j\n    judge: Which?\n"))], lambda d: [str(d / "j.yaml"), "salmon"]),
    # a reward model with one head per principle: training without scores, weights naming no head
    Case("train-rm/heads-principles-without-salmon-scores", lambda d: ["train-rm", "--data", str(preference_run(d)),
         "--out", str(d / "rm"), "--heads", "principles", "--constitution", str(SALMON)],
         same(str(SALMON), "no pair has a principle_scores entry", "--salmon", "--heads")),
    Case("train-rm/heads-principles-with-a-principle-called-overall", lambda d: ["train-rm", "--data",
         str(preference_run(d)), "--out", str(d / "rm"), "--heads", "principles", "--constitution", str(_file(
         d / "o.yaml", "name: o\nprinciples:\n  - id: overall\n    definition: Good.\n"))],
         lambda d: [str(d / "o.yaml"), "'overall'", "--heads"]),
    Case("train-rm/heads-principles-without-constitution", lambda d: ["train-rm", "--data", str(preference_run(d)),
         "--out", str(d / "rm"), "--heads", "principles"], same("heads=principles needs a constitution")),
    Case("train-rm/heads-principles-with-principle-conditioned", lambda d: ["train-rm", "--data",
         str(preference_run(d)), "--out", str(d / "rm"), "--heads", "principles", "--principle-conditioned",
         "--constitution", str(SALMON)], same("pick one")),
    Case("train-rm/unknown-heads-choice", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out",
         str(d / "rm"), "--heads", "many"], same("--heads", "many")),
    Case("train-rm/head-loss-weights-without-heads", lambda d: ["train-rm", "--data", str(preference_run(d)),
         "--out", str(d / "rm"), "--head-loss-weights", "constitution"], same("head_loss_weights only applies")),
    Case("score-rm/unknown-head-in-weights", lambda d: ["score-rm", "--model", str(heads_reward_model(d)),
         "--pairs", str(human_file(d)), "--weights", "harmles=1"],
         same("--weights", "unknown head 'harmles'", "overall, harmless")),
    Case("score-rm/malformed-weights", lambda d: ["score-rm", "--model", str(heads_reward_model(d)),
         "--pairs", str(human_file(d)), "--weights", "harmless"], same("--weights", "NAME=WEIGHT")),
    Case("score-rm/weight-not-a-number", lambda d: ["score-rm", "--model", str(heads_reward_model(d)),
         "--pairs", str(human_file(d)), "--weights", "harmless=lots"], same("--weights", "not a number")),
    Case("score-rm/all-weights-zero", lambda d: ["score-rm", "--model", str(heads_reward_model(d)),
         "--pairs", str(human_file(d)), "--weights", "harmless=0"], same("--weights", "every weight is zero")),
    Case("ppo/unknown-head-in-reward-weights", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--out",
         str(d / "out"), "--reward-model", str(heads_reward_model(d)), "--reward-weights", "helpful=1"],
         same("--reward-weights", "unknown head 'helpful'")),
    Case("ppo/reward-weights-with-a-rule", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--out",
         str(d / "out"), "--reward-rule", "word:no", "--reward-weights", "harmless=1"], same("reward rule has none")),
    # eval-policy, and the iterations of `labeler run`
    Case("eval-policy/missing-prompts", lambda d: ["eval-policy", "--baseline", "default", "--candidate", "default",
         "--prompts", str(d / "nowhere.jsonl"), "--constitution", str(HARMLESS)], lambda d: [str(d / "nowhere.jsonl")]),
    Case("eval-policy/empty-prompts", lambda d: ["eval-policy", "--baseline", "default", "--candidate", "default",
         "--prompts", str(empty_file(d, "p.jsonl")), "--constitution", str(HARMLESS)], lambda d: [str(d / "p.jsonl")]),
    Case("eval-policy/unknown-candidate-path", lambda d: ["eval-policy", "--baseline", "default", "--candidate",
         str(d / "nowhere"), "--prompts", str(prompts_file(d)), "--constitution", str(HARMLESS)],
         lambda d: [str(d / "nowhere"), "--candidate"]),
    Case("eval-policy/empty-baseline-folder", lambda d: ["eval-policy", "--baseline", str(_mkdir(d / "m")),
         "--candidate", "default", "--prompts", str(prompts_file(d)), "--constitution", str(HARMLESS)],
         lambda d: [str(d / "m"), "--baseline"]),
    Case("eval-policy/causal-lm-as-reward-model", lambda d: ["eval-policy", "--baseline", "default", "--candidate",
         "default", "--prompts", str(prompts_file(d)), "--constitution", str(HARMLESS), "--reward-model",
         str(Path.home() / ".cache/labeler/models/SmolLM2-135M-Instruct")],
         same("not a reward model", "--reward-model")),
    Case("eval-policy/principle-bogus", lambda d: ["eval-policy", "--baseline", "default", "--candidate", "default",
         "--prompts", str(prompts_file(d)), "--constitution", str(HARMLESS), "--principle", "bogus"],
         same("bogus", "--principle")),
    Case("eval-policy/missing-group-column", lambda d: ["eval-policy", "--baseline", "default", "--candidate",
         "default", "--prompts", str(prompts_file(d)), "--constitution", str(HARMLESS), "--group-by", "topic"],
         lambda d: [f"{d / 'prompts.jsonl'}:1", "topic"]),
    Case("eval-policy/out-is-a-folder", lambda d: ["eval-policy", "--baseline", "default", "--candidate", "default",
         "--prompts", str(prompts_file(d)), "--constitution", str(HARMLESS), "--out", str(_mkdir(d / "o"))],
         same("--out")),
    Case("eval-policy/data-parallel", lambda d: ["eval-policy", "--baseline", "default", "--candidate", "default",
         "--prompts", str(prompts_file(d)), "--constitution", str(HARMLESS), "--data-parallel-size", "2"],
         same("--data-parallel-size")),
    Case("run/iterations-below-one", lambda d: ["run", str(run_config(d, eval_prompts=str(prompts_file(d)),
         stages=LOOP_STAGES | {"iterations": 0}))], same("stages.iterations")),
    Case("run/iterations-without-eval-prompts", lambda d: ["run", str(run_config(d, stages=LOOP_STAGES))],
         same("eval_prompts")),
    Case("run/iterations-without-ppo", lambda d: ["run", str(run_config(d, eval_prompts=str(prompts_file(d)),
         stages={**LOOP_STAGES, "ppo": None}))], same("stages.ppo is off")),
    Case("run/missing-eval-prompts", lambda d: ["run", str(run_config(d, eval_prompts=str(d / "held-out.jsonl"),
         stages=LOOP_STAGES))], lambda d: [str(d / "held-out.jsonl"), "eval_prompts"]),
    Case("run/empty-eval-prompts", lambda d: ["run", str(run_config(d, eval_prompts=str(empty_file(d, "e.jsonl")),
         stages=LOOP_STAGES))], lambda d: [str(d / "e.jsonl"), "eval_prompts"]),
    Case("run/eval-principle-bogus", lambda d: ["run", str(run_config(d, eval_prompts=str(prompts_file(d)),
         stages=LOOP_STAGES | {"eval": {"principles": ["bogus"]}}))], same("bogus", "stages.eval.principles")),
    Case("validate/eval-sampling-unknown-key", lambda d: ["validate", str(run_config(d,
         eval_prompts=str(prompts_file(d)), stages=LOOP_STAGES | {"eval": {"sampling": {"temp": 1}}}))],
         same("stages.eval.sampling.temp")),
    Case("report/not-an-eval-policy-report", lambda d: ["report", str(preference_run(d)), "--eval-policy",
         str(_file(d / "e.json", "{}"))], lambda d: [str(d / "e.json"), "not an eval-policy report"]),
    Case("ppo/vllm-adapter-rollouts-without-lora", lambda d: ["ppo", "--prompts", str(prompts_file(d)),
         "--reward-rule", "word:no", "--out", str(d / "out"), "--rollout-engine", "vllm", "--rollout-weights",
         "adapter", "--no-lora"], same("--rollout-weights", "no adapter")),
    Case("ppo/vllm-rollouts-of-a-dora-adapter", lambda d: ["ppo", "--policy", str(dora_adapter(d)), "--prompts",
         str(prompts_file(d)), "--reward-rule", "word:no", "--out", str(d / "out"), "--rollout-engine", "vllm"],
         same("--policy", "DoRA")),
    # Cases that already passed before: still in the table
    Case("label/bad-pairs-row", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs", str(pairs_file(d,
         '{"prompt": "x", "response_a": 3, "response_b": "y"}\n')), "--out", str(d / "out")],
         lambda d: [f"{d / 'pairs.jsonl'}:2", "response_a"]),
    Case("revise/constitution-without-revise-principles", lambda d: ["revise", "--constitution", str(SALMON),
         "--prompts", str(prompts_file(d)), "--out", str(d / "out")], same(str(SALMON), "critique")),
    Case("eval-judge/missing-group-column", lambda d: ["eval-judge", "--pairs", str(human_file(d,
         json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")), "--group-by", "topic"],
         lambda d: [f"{d / 'human.jsonl'}:2", "topic"]),
    Case("eval-judge/deterministic-in-bfloat16", lambda d: ["eval-judge", "--pairs", str(human_file(d)),
         "--deterministic", "--dtype", "bfloat16"], same("deterministic", "bfloat16")),
    Case("generate/unknown-engine", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--engine", "tpu"],
         same("--engine")),
    Case("ppo/minibatch-does-not-divide", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--reward-rule",
         "word:no", "--out", str(d / "out"), "--minibatch", "3"], same("minibatch=3 must divide")),
    Case("ppo/bad-reward-rule", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--reward-rule",
         "size:5", "--out", str(d / "out")], same("--reward-rule")),
    Case("merge/incomplete-part", lambda d: ["merge", str(_running_part(d)), "--out", str(d / "merged")],
         same("incomplete", "manifest.json")),
    Case("report/missing-human-pairs", lambda d: ["report", str(preference_run(d)), "--human-pairs",
         str(d / "nowhere.jsonl")], lambda d: [str(d / "nowhere.jsonl")]),
    Case("train-rm/no-data", lambda d: ["train-rm", "--out", str(d / "rm")], same("--data")),
    Case("label/unknown-option", lambda d: ["label", "--constitution", str(HARMLESS), "--frobnicate"],
         same("--frobnicate")),
    # 9. the openai engine: server options checked before any request (no server listens at 127.0.0.1:9)
    Case("label/openai-without-base-url", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine", "openai", "--judge-model", "judge"],
         same("--base-url", "at least one server URL")),
    Case("label/openai-api-key-env-unset", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine", "openai", "--base-url", "http://127.0.0.1:9",
         "--judge-model", "judge", "--api-key-env", "LABELER_TEST_UNSET_KEY"],
         same("--api-key-env", "LABELER_TEST_UNSET_KEY", "not set")),
    Case("revise/openai-malformed-url", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--engine", "openai", "--base-url", "localhost:8000",
         "--model", "policy"], same("--base-url", "http:// or https://", "localhost:8000")),
    Case("generate/openai-url-with-credentials", lambda d: ["generate", "--prompts", str(prompts_file(d)),
         "--engine", "openai", "--base-url", "http://user:secret@127.0.0.1:9", "--model", "policy"],
         same("--base-url", "credentials")),
    Case("eval-judge/openai-without-served-model", lambda d: ["eval-judge", "--pairs", str(human_file(d)),
         "--engine", "openai", "--base-url", "http://127.0.0.1:9"], same("--engine openai", "the name the servers")),
    Case("label/openai-option-for-vllm", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine", "vllm", "--api-key-env", "SOME_KEY"],
         same("--engine vllm", "--api-key-env")),
    Case("label/openai-key-itself-as-env-name", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine", "openai", "--base-url", "http://127.0.0.1:9",
         "--judge-model", "judge", "--api-key-env", "sk-abc123/xyz"], same("--api-key-env", "never the key itself")),
    Case("run/openai-api-key-env-unset", lambda d: ["run", str(run_config(d, engine={"name": "openai",
         "base_urls": ["http://127.0.0.1:9"], "model": "judge", "api_key_env": "LABELER_TEST_UNSET_KEY"}))],
         same("engine.api_key_env", "LABELER_TEST_UNSET_KEY")),
    # judging methods: compare files, demonstrations, incompatible options
    Case("eval-judge/compare-unknown-key", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--compare",
         str(_file(d / "a.yaml", "name: a\noptions: {aggregate: median}\n")), "--compare",
         str(_file(d / "b.yaml", "name: b\nsampling: {}\n"))],
         lambda d: [str(d / "a.yaml"), "options.aggregate", "prob", str(d / "b.yaml"), "sampling"]),
    Case("eval-judge/compare-file-missing", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--compare",
         str(d / "nowhere.yaml")], lambda d: [str(d / "nowhere.yaml"), "--compare", "not found"]),
    Case("eval-judge/compare-same-name", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--compare",
         str(_file(d / "a.yaml", "name: x\n")), "--compare", str(_file(d / "b.yaml", "name: x\n"))],
         same("--compare", "'x'")),
    Case("eval-judge/more-demonstrations-than-given", lambda d: ["eval-judge", "--pairs", str(human_file(d)),
         "--few-shot", "9"], same("--few-shot 9", "judge_few_shot", "(4)")),
    Case("label/bad-demonstrations-file", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--few-shot", "1", "--few-shot-file", str(_file(d / "demos.json",
         '[{"prompt": "\\n\\nHuman: hi\\n\\nAssistant:", "corrects": ["fine"], "incorrects": []}]'))],
         lambda d: [str(d / "demos.json"), "demonstration 0", "incorrects"]),
    Case("label/few-shot-with-cot", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--few-shot", "2", "--cot"], same("few_shot", "cot")),
    Case("label/decide-salmon-without-definitions", lambda d: ["label", "--constitution", str(_file(d / "c.yaml",
         "name: c\nprinciples:\n  - id: kind\n    judge: Which is kinder?\n")), "--pairs", str(pairs_file(d)),
         "--out", str(d / "out"), "--decide", "salmon"], lambda d: [str(d / "c.yaml"), "--decide salmon",
         "definition"]),
    Case("validate/demonstrations-file-as-constitution", lambda d: ["label", "--constitution", str(_file(
         d / "fb.json", '[{"prompt": "\\n\\nHuman: hi\\n\\nAssistant:", "corrects": ["a"], "incorrects": ["b"]}]')),
         "--pairs", str(pairs_file(d)), "--out", str(d / "out")],
         lambda d: [str(d / "fb.json"), "judging demonstrations", "--few-shot-file"]),
    # 10. datasets that leave the run: export and push
    Case("export/unknown-flag", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"),
         "--drop-flags", "low_mass,sparkly"], same("--drop-flags", "sparkly", "choice_outside_topk")),
    Case("export/folder-that-is-not-a-run", lambda d: ["export", str(_mkdir(d / "empty")), "--out", str(d / "out")],
         lambda d: [str(d / "empty"), "not a labeler run", "RUN"]),
    Case("export/file-as-run", lambda d: ["export", str(_file(d / "run.txt")), "--out", str(d / "out")],
         lambda d: [str(d / "run.txt"), "RUN"]),
    Case("export/out-not-empty", lambda d: ["export", str(preference_run(d)), "--out",
         str(_file(_mkdir(d / "taken") / "notes.txt").parent)], lambda d: ["--out", str(d / "taken"), "not empty"]),
    Case("export/out-is-a-file", lambda d: ["export", str(preference_run(d)), "--out", str(_file(d / "out"))],
         lambda d: ["--out", str(d / "out")]),
    Case("export/out-read-only", lambda d: ["export", str(preference_run(d)), "--out", str(_mkdir(d / "ro") / "x")],
         same("--out", "read-only"), read_only="ro"),
    Case("export/unfinished-split", lambda d: ["export", str(_running_part(d)), "--out", str(d / "out")],
         same("--allow-partial", "still being written")),
    Case("export/unknown-format", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"), "--format",
         "csv"], same("--format")),
    Case("export/bad-shard-size", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"),
         "--shard-size", "lots"], same("--shard-size", "500MB")),
    Case("export/rows-and-size", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"),
         "--shard-rows", "5", "--shard-size", "1MB"], same("--shard-rows", "--shard-size")),
    Case("export/filter-without-preferences", lambda d: ["export", str(sft_run(d)), "--out", str(d / "out"),
         "--min-margin", "0.3"], same("--min-margin", "preference split")),
    # 11. labeler review, and the human labels it writes
    Case("review/run-missing", lambda d: ["review", str(d / "nowhere")], lambda d: [str(d / "nowhere"), "RUN"]),
    Case("review/folder-that-is-not-a-run", lambda d: ["review", str(_mkdir(d / "empty"))],
         lambda d: [str(d / "empty"), "not a labeler run"]),
    Case("review/file-as-run", lambda d: ["review", str(_file(d / "run.txt"))], lambda d: [str(d / "run.txt"), "RUN"]),
    Case("review/port-in-use", lambda d: ["review", str(preference_run(d)), "--port", _busy_port()],
         same("--port", "in use")),
    Case("review/port-out-of-range", lambda d: ["review", str(preference_run(d)), "--port", "70000"], same("--port")),
    Case("review/bad-annotator-name", lambda d: ["review", str(preference_run(d)), "--annotator", "../me"],
         same("--annotator")),
    Case("review/altered-labels", lambda d: ["review", str(_altered_labels(preference_run(d))), "--port", "0"],
         lambda d: [str(d / "pref-run" / "human" / "ana.jsonl") + ":2", "checksum"]),
    Case("review/causal-lm-is-no-reward-model", lambda d: ["review", str(preference_run(d)), "--reward-model",
         str(Path.home() / ".cache/labeler/models/SmolLM2-135M-Instruct")],
         same("not a reward model", "--reward-model")),
    Case("review/empty-reward-model-folder", lambda d: ["review", str(preference_run(d)), "--reward-model",
         str(_mkdir(d / "m"))], lambda d: [str(d / "m"), "no config.json", "--reward-model"]),
    Case("eval-judge/human-run-without-labels", lambda d: ["eval-judge", "--human", str(preference_run(d))],
         same("--human", "no human labels")),
    Case("eval-judge/human-run-and-pairs", lambda d: ["eval-judge", "--human", str(preference_run(d)), "--pairs",
         str(human_file(d))], same("--human", "not both")),
    Case("eval-judge/neither-pairs-nor-human", lambda d: ["eval-judge"], same("--pairs", "human labels")),
    Case("export/prefer-human-altered-labels", lambda d: ["export", str(_altered_labels(preference_run(d))),
         "--out", str(d / "out"), "--prefer-human"],
         lambda d: [str(d / "pref-run" / "human" / "ana.jsonl"), "checksum"]),
    Case("push/bad-repo-id", lambda d: ["push", str(preference_run(d)), "--repo", "just-a-name", "--dry-run"],
         same("--repo", "just-a-name", "ORG/NAME")),
    Case("push/no-token", lambda d: ["push", str(preference_run(d)), "--repo", "acme/prefs"], same("HF_TOKEN")),
    Case("push/folder-that-is-not-a-run", lambda d: ["push", str(_mkdir(d / "empty")), "--repo", "acme/prefs",
         "--dry-run"], lambda d: [str(d / "empty"), "RUN"]),
    Case("push/nothing-complete", lambda d: ["push", str(_running_part(d)), "--repo", "acme/prefs", "--dry-run"],
         same("no complete split", "manifest.json")),
    Case("push/bad-license", lambda d: ["push", str(preference_run(d)), "--repo", "acme/prefs", "--dry-run",
         "--license", "CC BY"], same("--license", "not a license id")),
    Case("export/unknown-split", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"), "--split",
         "rm"], same("--split", "'rm'")),
    Case("export/split-not-in-run", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"), "--split",
         "sft"], same("--split", "no 'sft' split")),
    Case("export/min-margin-above-one", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"),
         "--min-margin", "1.5"], same("--min-margin", "1.5")),
    Case("export/zero-shard-rows", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"),
         "--shard-rows", "0"], same("--shard-rows")),
    Case("export/truncated-shard", lambda d: ["export", str(_truncated_preference_run(d)), "--out", str(d / "out")],
         lambda d: [str(_first_shard(d / "pref-run", "preferences"))]),
    Case("push/truncated-shard", lambda d: ["push", str(_truncated_preference_run(d)), "--repo", "acme/prefs",
         "--dry-run"], lambda d: [str(_first_shard(d / "pref-run", "preferences")), "sha256"]),
    Case("push/repo-with-a-folder", lambda d: ["push", str(preference_run(d)), "--repo", "acme/prefs/v2",
         "--dry-run"], same("--repo", "acme/prefs/v2")),
    Case("push/with-report-but-no-report", lambda d: ["push", str(preference_run(d)), "--repo", "acme/prefs",
         "--dry-run", "--with-report"], lambda d: ["--with-report", str(d / "pref-run" / "report")]),
    # labeler dpo
    Case("dpo/no-data", lambda d: ["dpo", "--out", str(d / "dpo")], same("--data")),
    Case("dpo/missing-policy", lambda d: ["dpo", "--data", str(preference_run(d)), "--out", str(d / "dpo"),
         "--policy", str(d / "nowhere")], lambda d: ["--policy", str(d / "nowhere")]),
    Case("dpo/file-as-data", lambda d: ["dpo", "--data", str(_file(d / "run.txt")), "--out", str(d / "dpo")],
         lambda d: [str(d / "run.txt"), "--data"]),
    Case("dpo/unknown-loss", lambda d: ["dpo", "--data", str(preference_run(d)), "--out", str(d / "dpo"),
         "--loss", "kto"], same("--loss", "kto")),
    Case("dpo/zero-beta", lambda d: ["dpo", "--data", str(preference_run(d)), "--out", str(d / "dpo"),
         "--beta", "0"], same("--beta")),
    Case("dpo/unknown-drop-flag", lambda d: ["dpo", "--data", str(preference_run(d)), "--out", str(d / "dpo"),
         "--drop-flags", "low_mass,shaky"], same("--drop-flags", "'shaky'")),
    Case("dpo/every-pair-dropped", lambda d: ["dpo", "--data", str(_flagged_preference_run(d)), "--out",
         str(d / "dpo"), "--drop-flags", "low_mass"], lambda d: ["--drop-flags", str(d / "pref-run"), "every one"]),
    Case("dpo/out-is-the-data-run", lambda d: ["dpo", "--data", str(preference_run(d)), "--out",
         str(d / "pref-run")], lambda d: ["--out", "--data", str(d / "pref-run")]),
    Case("dpo/out-is-a-file", lambda d: ["dpo", "--data", str(preference_run(d)), "--out", str(_file(d / "dpo"))],
         lambda d: ["--out", str(d / "dpo")]),
    Case("dpo/truncated-shard", lambda d: ["dpo", "--data", str(_truncated_preference_run(d)), "--out",
         str(d / "dpo")], lambda d: [str(_first_shard(d / "pref-run", "preferences"))]),
]


def _flagged_preference_run(folder: Path) -> Path:
    """A preference run whose every pair carries the `low_mass` flag."""
    run = folder / "pref-run"
    records = [
        PreferenceRecord(
            id=record_id(f"Q{i}?", "yes", "no"), **conversation_columns((Message(role="user", content=f"Q{i}?"),),
            "yes", "no"), response_a="yes", response_b="no", p_a=0.7, p_a_ab=0.7, p_a_ba=0.7, mass_ab=0.1,
            mass_ba=0.1, logprobs_ab=(-2.5, -3.3), logprobs_ba=(-2.5, -3.3), consistent=True, principle_ids=(),
            principle_scores=(), margin=0.4, judge_model="m", source="test", flags=("low_mass",),
        )
        for i in range(3)
    ]  # fmt: skip
    store = RunStore.open(run, "preferences", {"config": {"made": "by a test"}})
    store.write_shard(records)
    store.mark_complete()
    return run

# --- data integrity and safety: one list per area, each part of the table ---------------------------


# one writer per run, inputs fingerprinted by content, overwrite, manifests confined
CASES_RUN_WRITER: list[Case] = [
    Case("export/manifest-absolute-shard-path", lambda d: ["export", str(_shard_moved(d, "abs")), "--out",
         str(d / "out")], lambda d: ["manifest.json", "is absolute", str(d / "outside")]),
    Case("export/manifest-dotdot-shard-path", lambda d: ["export", str(_shard_moved(d, "up")), "--out",
         str(d / "out")], same("manifest.json", "splits.preferences.shards.0.file", "'..'")),
    Case("label/pairs-from-manifest-dotdot-shard-path", lambda d: ["label", "--constitution", str(HARMLESS),
         "--pairs-from", str(_shard_moved(d, "up", split="sft")), "--out", str(d / "out")],
         same("manifest.json", "splits.sft.shards.0.file", "'..'")),
    Case("export/manifest-shard-linked-out-of-the-run", lambda d: ["export", str(_shard_moved(d, "link")),
         "--out", str(d / "out")], same("preferences", "leads out of the run")),
    Case("export/manifest-shard-path-is-a-folder", lambda d: ["export", str(_shard_moved(d, "folder")),
         "--out", str(d / "out")], same("manifest.json", "is a folder")),
    Case("label/manifest-lock-is-a-symlink", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(_linked_lock(d, ".manifest.lock"))], same(".manifest.lock", "symbolic link")),
    Case("label/run-lock-is-a-symlink", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(_linked_lock(d, ".lock"))], lambda d: [str(d / "pref-run" / ".lock"),
         "symbolic link"]),
    Case("label/split-folder-is-a-symlink", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(_linked_split(d))], same("preferences", "symbolic link", "--overwrite")),
    Case("export/manifest-huge-integer", lambda d: ["export", str(_manifest_text(d, '{"format": 1' + "1" * 5000
         + "}")), "--out", str(d / "out")], same("manifest.json", "not a labeler manifest")),
    Case("label/pairs-from-manifest-deep-nesting", lambda d: ["label", "--constitution", str(HARMLESS),
         "--pairs-from", str(_manifest_text(d, "[" * 100_000 + "]" * 100_000)), "--out", str(d / "out")],
         same("manifest.json", "nested too deeply")),
    Case("export/run-written-by-two-processes", lambda d: ["export", str(_written_twice(d)), "--out", str(d / "out")],
         same("shard-00001.arrow", "two processes wrote it at once", "rerun the command")),
]


def _shard_moved(folder: Path, how: str, split: str = "preferences") -> Path:
    """A run whose manifest's first shard is out of the run: listed by an absolute path or by `..`, linked
    out of the run (each with the right sha256), or a folder in its place."""
    run = preference_run(folder) if split == "preferences" else sft_run(folder)
    manifest = json.loads((run / "manifest.json").read_text())
    shard = manifest["splits"][split]["shards"][0]
    outside = _mkdir(folder / "outside") / "shard-00000.arrow"
    shutil.move(run / shard["file"], outside)
    if how == "abs":
        shard["file"] = str(outside)
    elif how == "up":
        shard["file"] = "../outside/shard-00000.arrow"
    elif how == "link":
        (run / shard["file"]).symlink_to(outside)
    else:
        (run / shard["file"]).mkdir()
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def _linked_lock(folder: Path, name: str) -> Path:
    run = preference_run(folder)
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(folder / "created-through-the-link")
    return run


def _linked_split(folder: Path) -> Path:
    run = preference_run(folder)
    shutil.move(run / "preferences", folder / "elsewhere")
    (run / "preferences").symlink_to(folder / "elsewhere")
    return run


def _manifest_text(folder: Path, text: str) -> Path:
    run = _mkdir(folder / "run")
    (run / "manifest.json").write_text(text)
    return run


def _written_twice(folder: Path) -> Path:
    """What two writers of one split leave: the same records committed in two shards."""
    run = preference_run(folder)
    manifest = json.loads((run / "manifest.json").read_text())
    shards = manifest["splits"]["preferences"]["shards"]
    shutil.copy(run / shards[0]["file"], run / "preferences" / "shard-00001.arrow")
    shards.append({**shards[0], "file": "preferences/shard-00001.arrow"})
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run



# export and push: no symlink followed out of the run, no local path published
CASES_PUBLISHING: list[Case] = [
    Case("push/report-file-links-out", lambda d: ["push", str(_report_linking(d, "token.txt")), "--repo",
         "acme/prefs", "--dry-run", "--with-report"],
         lambda d: [str(d / "pref-run" / "report" / "token.txt"), "symbolic link", "outside the run"]),
    Case("push/report-folder-links-out", lambda d: ["push", str(_report_folder_linking(d)), "--repo", "acme/prefs",
         "--dry-run", "--with-report"], lambda d: [str(d / "pref-run" / "report"), "symbolic link"]),
    Case("push/report-link-to-nothing", lambda d: ["push", str(_report_linking(d, "gone.txt", dangling=True)),
         "--repo", "acme/prefs", "--dry-run", "--with-report"],
         lambda d: [str(d / "pref-run" / "report" / "gone.txt"), "leads to nothing"]),
    Case("push/shard-links-out", lambda d: ["push", str(_shard_linking(d)), "--repo", "acme/prefs", "--dry-run"],
         lambda d: [str(_first_shard(d / "pref-run", "preferences")), "symbolic link"]),
    Case("push/manifest-links-out", lambda d: ["push", str(_manifest_linking(d)), "--repo", "acme/prefs",
         "--dry-run"], lambda d: [str(d / "pref-run" / "manifest.json"), "symbolic link"]),
    Case("export/shard-links-out", lambda d: ["export", str(_shard_linking(d)), "--out", str(d / "out")],
         lambda d: [str(_first_shard(d / "pref-run", "preferences")), "symbolic link"]),
    Case("export/split-folder-links-out", lambda d: ["export", str(_split_folder_linking(d)), "--out",
         str(d / "out")], lambda d: [str(d / "pref-run" / "preferences"), "symbolic link"]),
    Case("export/manifest-links-out", lambda d: ["export", str(_manifest_linking(d)), "--out", str(d / "out")],
         lambda d: [str(d / "pref-run" / "manifest.json"), "symbolic link"]),
    Case("push/language-empty", lambda d: ["push", str(preference_run(d)), "--repo", "acme/prefs", "--dry-run",
         "--language", ""], same("--language", "''", "not a language code")),
    Case("push/language-two-lines", lambda d: ["push", str(preference_run(d)), "--repo", "acme/prefs", "--dry-run",
         "--language", "en\n- fr"], same("--language", "not a language code")),
    Case("push/repo-name-ends-in-git", lambda d: ["push", str(preference_run(d)), "--repo", "acme/x.git",
         "--dry-run"], same("--repo", "'x.git'", ".git")),
    Case("push/repo-name-double-dash", lambda d: ["push", str(preference_run(d)), "--repo", "acme/x--y",
         "--dry-run"], same("--repo", "'x--y'", "'--'")),
    Case("push/repo-name-double-dot", lambda d: ["push", str(preference_run(d)), "--repo", "acme/x..y",
         "--dry-run"], same("--repo", "'x..y'")),
    Case("push/repo-name-too-long", lambda d: ["push", str(preference_run(d)), "--repo", "acme/" + "n" * 200,
         "--dry-run"], same("--repo", "200 characters", "96")),
    Case("push/repo-name-97-characters", lambda d: ["push", str(preference_run(d)), "--repo", "acme/" + "n" * 97,
         "--dry-run"], same("--repo", "97 characters")),
    Case("push/repo-name-starts-with-dot", lambda d: ["push", str(preference_run(d)), "--repo", "acme/.prefs",
         "--dry-run"], same("--repo", "'.prefs'", "starts or ends")),
    Case("push/repo-org-ends-with-dash", lambda d: ["push", str(preference_run(d)), "--repo", "acme-/prefs",
         "--dry-run"], same("--repo", "organisation 'acme-'")),
    Case("push/blank-token", lambda d: ["push", str(preference_run(d)), "--repo", "acme/prefs"],
         same("HF_TOKEN", "empty"), env={"HF_TOKEN": "   "}),
    Case("push/blank-token-with-a-newline", lambda d: ["push", str(preference_run(d)), "--repo", "acme/prefs"],
         same("HF_TOKEN", "empty"), env={"HF_TOKEN": " \n\t"}),
]


def _secret(folder: Path) -> Path:
    """A private file outside the run."""
    return _file(folder / "secret.txt", "hf_not_for_anyone\n")


def _report_linking(folder: Path, name: str, *, dangling: bool = False) -> Path:
    """A run whose report holds a real page and `name`, a link to a file outside the run (or to nothing)."""
    run = preference_run(folder)
    _file(_mkdir(run / "report") / "index.html", "<p>report</p>\n")
    (run / "report" / name).symlink_to(folder / "nowhere.txt" if dangling else _secret(folder))
    return run


def _report_folder_linking(folder: Path) -> Path:
    """A run whose `report` is a link to a private folder outside it."""
    run = preference_run(folder)
    private = _mkdir(folder / "private")
    _file(private / "index.html", "<p>private</p>\n")
    (run / "report").symlink_to(private)
    return run


def _shard_linking(folder: Path) -> Path:
    """A run whose first shard is a link to a copy outside the run (same bytes, so the sha256 matches)."""
    run = preference_run(folder)
    shard = _first_shard(run, "preferences")
    outside = folder / "elsewhere.arrow"
    outside.write_bytes(shard.read_bytes())
    shard.unlink()
    shard.symlink_to(outside)
    return run


def _split_folder_linking(folder: Path) -> Path:
    """A run whose `preferences/` is a link to a folder outside the run holding the same shards."""
    run = preference_run(folder)
    outside = folder / "moved-preferences"
    shutil.move(run / "preferences", outside)
    (run / "preferences").symlink_to(outside)
    return run


def _manifest_linking(folder: Path) -> Path:
    """A run whose manifest.json is a link to a copy outside the run."""
    run = preference_run(folder)
    outside = folder / "manifest-copy.json"
    shutil.move(run / "manifest.json", outside)
    (run / "manifest.json").symlink_to(outside)
    return run



# inputs read from regular files only, bounded; YAML aliases, huge integers, deep nesting
CASES_READING: list[Case] = [
    # conversations that cannot be read as one (HH-RLHF transcripts, TRL's implicit prompt)
    Case("eval-judge/two-different-prompts", lambda d: ["eval-judge", "--pairs", str(human_file(d, json.dumps(
         {"prompt": "Hi", "messages": [{"role": "user", "content": "Bye"}], "chosen": "a", "rejected": "b"})))],
         lambda d: [f"{d / 'human.jsonl'}:2", "two different conversations, in 'prompt' and 'messages'"]),
    Case("eval-judge/transcript-prompt-ends-with-a-reply", lambda d: ["eval-judge", "--pairs",
         str(human_file(d, json.dumps({"prompt": "\n\nHuman: Hi\n\nAssistant: Hello", "chosen": "a",
                                       "rejected": "b"})))],
         lambda d: [f"{d / 'human.jsonl'}:2", "the transcript ends with an assistant reply"]),
    Case("label/released-rows-that-share-no-prompt", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(_file(d / "hh.jsonl", json.dumps({"chosen": "\n\nHuman: Hi\n\nAssistant: a",
                                               "rejected": "\n\nHuman: Bye\n\nAssistant: b"}) + "\n")),
         "--out", str(d / "out")], lambda d: [f"{d / 'hh.jsonl'}:1", "share no conversation"]),
    # a device (/dev/zero, directly or through a link) as each kind of input: refused before reading
    Case("label/input-constitution-dev-zero", lambda d: ["label", "--constitution", "/dev/zero", "--pairs",
         str(pairs_file(d)), "--out", str(d / "out")], same("/dev/zero", "character device, not a regular file")),
    Case("label/input-pairs-dev-zero", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(_dev_zero(d / "pairs.jsonl")), "--out", str(d / "out")],
         lambda d: [str(d / "pairs.jsonl"), "character device"]),
    Case("revise/input-prompts-dev-zero", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(_dev_zero(d / "prompts.jsonl")), "--out", str(d / "out")],
         lambda d: [str(d / "prompts.jsonl"), "character device"]),
    Case("eval-judge/input-human-pairs-dev-zero", lambda d: ["eval-judge", "--pairs",
         str(_dev_zero(d / "human.jsonl"))], lambda d: [str(d / "human.jsonl"), "character device"]),
    Case("label/input-engine-config-dev-zero", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine-config", "/dev/zero"],
         same("/dev/zero", "--engine-config", "character device")),
    Case("eval-judge/input-compare-dev-zero", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--compare",
         "/dev/zero"], same("/dev/zero", "--compare", "character device")),
    Case("label/input-few-shot-file-dev-zero", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--few-shot", "1", "--few-shot-file", "/dev/zero"],
         same("/dev/zero", "character device")),
    Case("label/input-template-dev-zero", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--templates", str(_template_as(d, _dev_zero))],
         lambda d: [str(d / "templates" / "judge.jinja"), "character device"]),
    Case("run/input-run-config-dev-zero", lambda d: ["run", "/dev/zero"], same("/dev/zero", "character device")),
    Case("validate/input-run-config-dev-zero", lambda d: ["validate", str(_dev_zero(d / "run.yaml"))],
         lambda d: [str(d / "run.yaml"), "character device"]),
    Case("label/input-shard-dev-zero", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs-from",
         str(_zero_shard(sft_run(d), "sft")), "--out", str(d / "out")],
         same("sft/shard-00000.arrow", "/dev/zero", "leads out of the run")),
    Case("export/input-shard-dev-zero", lambda d: ["export", str(_zero_shard(preference_run(d), "preferences")),
         "--out", str(d / "out")], same("preferences/shard-00000.arrow", "/dev/zero", "leads out of the run")),
    Case("report/input-eval-judge-dev-zero", lambda d: ["report", str(preference_run(d)), "--eval-judge",
         "/dev/zero"], same("/dev/zero", "character device")),
    Case("report/input-eval-policy-dev-zero", lambda d: ["report", str(preference_run(d)), "--eval-policy",
         "/dev/zero"], same("/dev/zero", "character device")),
    # a named pipe: refused, never opened for a blocking read (the case would hang until its timeout)
    Case("label/input-constitution-fifo", lambda d: ["label", "--constitution", str(_fifo(d / "c.yaml")), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out")], lambda d: [str(d / "c.yaml"), "named pipe (FIFO)"]),
    Case("label/input-engine-config-fifo", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine-config", str(_fifo(d / "engine.yaml"))],
         lambda d: [str(d / "engine.yaml"), "--engine-config", "named pipe"]),
    Case("run/input-run-config-fifo", lambda d: ["run", str(_fifo(d / "run.yaml"))],
         lambda d: [str(d / "run.yaml"), "named pipe"]),
    Case("label/input-template-fifo", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--templates", str(_template_as(d, _fifo))],
         lambda d: [str(d / "templates" / "judge.jinja"), "named pipe"]),
    Case("label/input-pairs-fifo", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(_fifo(d / "pairs.jsonl")), "--out", str(d / "out")], lambda d: [str(d / "pairs.jsonl"), "named pipe"]),
    Case("eval-judge/input-compare-fifo", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--compare",
         str(_fifo(d / "a.yaml"))], lambda d: [str(d / "a.yaml"), "--compare", "named pipe"]),
    # YAML aliases refused before they expand, the line named (a bomb like these took minutes and GBs)
    Case("run/input-alias-bomb-run-config", lambda d: ["run", str(_yaml_run_config(d, f"bomb: {ALIAS_BOMB}\n"))],
         lambda d: [f"{d / 'run.yaml'}:4", "YAML aliases", "run configs"]),
    Case("run/input-alias-bomb-in-stop", lambda d: ["run", str(_yaml_run_config(d, stages="  revise:\n"
         f"    rounds: 1\n    sampling:\n      stop: {ALIAS_BOMB}\n"))], lambda d: [f"{d / 'run.yaml'}:8", "aliases"]),
    Case("validate/input-alias-bomb-run-config", lambda d: ["validate", str(_yaml_run_config(d,
         f"bomb: {ALIAS_BOMB}\n"))], lambda d: [f"{d / 'run.yaml'}:4", "YAML aliases", "run configs"]),
    Case("label/input-alias-bomb-engine-config", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine-config", str(_file(d / "engine.yaml",
         f"batch_size: 8\nbomb: {ALIAS_BOMB}\n"))], lambda d: [f"{d / 'engine.yaml'}:2", "--engine-config", "aliases"]),
    Case("eval-judge/input-alias-bomb-compare", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--compare",
         str(_file(d / "a.yaml", f"name: a\noptions: {{seed: 1}}\nbomb: {ALIAS_BOMB}\n"))],
         lambda d: [f"{d / 'a.yaml'}:3", "--compare", "aliases"]),
    # integers longer than Python converts (4,300 digits), in each kind of JSON or YAML input
    Case("label/input-huge-int-pairs-row", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d, f'{{"prompt": "Hi?", "response_a": "a", "response_b": "b", "n": {HUGE}}}\n')),
         "--out", str(d / "out")], lambda d: [f"{d / 'pairs.jsonl'}:2", "5000 digits"]),
    Case("eval-judge/input-huge-int-human-pairs", lambda d: ["eval-judge", "--pairs", str(human_file(d,
         f'{{"prompt": "Hi?", "chosen": "a", "rejected": "b", "topic": {HUGE}}}\n'))],
         lambda d: [f"{d / 'human.jsonl'}:2", "5000 digits"]),
    Case("label/input-huge-int-constitution-yaml", lambda d: ["label", "--constitution", str(_file(d / "c.yaml",
         f"name: c\nprinciples:\n  - id: kind\n    judge: Which is kinder?\n    weight: {HUGE}\n")), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out")], lambda d: [f"{d / 'c.yaml'}:5", "5000 digits"]),
    Case("label/input-huge-int-constitution-json", lambda d: ["label", "--constitution", str(_file(d / "c.json",
         f'{{"name": "c",\n "principles": [{{"id": "kind", "judge": "Which is kinder?", "weight": {HUGE}}}]}}')),
         "--pairs", str(pairs_file(d)), "--out", str(d / "out")], lambda d: [f"{d / 'c.json'}:2", "5000 digits"]),
    Case("run/input-huge-int-run-config", lambda d: ["run", str(_yaml_run_config(d, f"seed: {HUGE}\n"))],
         lambda d: [f"{d / 'run.yaml'}:4", "5000 digits"]),
    Case("label/input-huge-int-engine-config", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine-config", str(_file(d / "engine.yaml",
         f"dtype: auto\nbatch_size: {HUGE}\n"))], lambda d: [f"{d / 'engine.yaml'}:2", "5000 digits"]),
    Case("eval-judge/input-huge-int-compare", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--compare",
         str(_file(d / "a.yaml", f"name: a\noptions: {{seed: {HUGE}}}\n"))],
         lambda d: [f"{d / 'a.yaml'}:2", "--compare", "5000 digits"]),
    Case("label/input-huge-int-few-shot-file", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--few-shot", "1", "--few-shot-file", str(_file(
         d / "demos.json", f'[{{"prompt": "\\n\\nHuman: hi\\n\\nAssistant:", "corrects": [{HUGE}]}}]'))],
         lambda d: [str(d / "demos.json"), "5000 digits"]),
    Case("score-rm/input-huge-int-model-config", lambda d: ["score-rm", "--model", str(_model_folder(d / "m",
         f'{{"architectures": ["LlamaForSequenceClassification"],\n "hidden_size": {HUGE}}}')), "--pairs",
         str(human_file(d))], lambda d: [f"{d / 'm' / 'config.json'}:2", "5000 digits", "--model"]),
    Case("generate/input-huge-int-adapter-config", lambda d: ["generate", "--prompts", str(prompts_file(d)),
         "--model", str(_huge_adapter(d))], lambda d: [str(d / "adapter" / "adapter_config.json"), "5000 digits"]),
    Case("report/input-huge-int-eval-judge-report", lambda d: ["report", str(preference_run(d)), "--eval-judge",
         str(_file(d / "judge.json", f'{{"pairs": [{{"p_chosen": {HUGE}}}]}}'))],
         lambda d: [str(d / "judge.json"), "5000 digits"]),
    # nesting too deep to parse or to walk: bad input, not a RecursionError
    Case("label/input-deep-pairs-row", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d, _deep_row(100_000))), "--out", str(d / "out")],
         lambda d: [f"{d / 'pairs.jsonl'}:2", "nested too deeply"]),
    Case("label/input-nested-pairs-row", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d, _deep_row(500))), "--out", str(d / "out")],
         lambda d: [f"{d / 'pairs.jsonl'}:2", "field 'meta'", "more than 100 levels"]),
    Case("run/input-deep-run-config", lambda d: ["run", str(_yaml_run_config(d, "meta: " + "[" * 5000 +
         "]" * 5000 + "\n"))], lambda d: [str(d / "run.yaml"), "nested too deeply"]),
    Case("label/input-deep-engine-config", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine-config", str(_file(d / "engine.json",
         '{"batch_size": ' + "[" * 5000 + "]" * 5000 + "}"))], lambda d: [str(d / "engine.json"), "too deeply"]),
    # text no UTF-8 writer can encode: a lone surrogate from a JSON escape
    Case("revise/input-lone-surrogate-prompt", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(_file(d / "prompts.jsonl", '{"prompt": "Hi?"}\n{"prompt": "Hi \\ud800 there"}\n')), "--out",
         str(d / "out")], lambda d: [f"{d / 'prompts.jsonl'}:2", "field 'prompt'", "lone surrogate"]),
    Case("label/input-lone-surrogate-message", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d, '{"messages": [{"role": "user", "content": "\\udfff"}], "response_a": "a", '
         '"response_b": "b"}\n')), "--out", str(d / "out")],
         lambda d: [f"{d / 'pairs.jsonl'}:2", "field 'messages[0].content'", "lone surrogate"]),
    # a value from --engine-config is the file's, not that of an option never typed
    Case("label/input-engine-config-bad-value", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine-config", str(_file(d / "engine.yaml",
         "dtype: auto\nbatch_size: 0\n"))], lambda d: [f"{d / 'engine.yaml'}:2", "--engine-config, key batch_size",
         "(got 0)"]),
    Case("eval-judge/input-engine-config-bad-value", lambda d: ["eval-judge", "--pairs", str(human_file(d)),
         "--engine-config", str(_file(d / "engine.yaml", "gpu_memory_utilization: 7\n"))],
         lambda d: [f"{d / 'engine.yaml'}:1", "key gpu_memory_utilization", "(got 7)"]),
    Case("label/input-engine-config-bad-url", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine-config", str(_file(d / "engine.yaml",
         "name: openai\nbase_urls: [localhost:8000]\nmodel: judge\n"))],
         lambda d: [f"{d / 'engine.yaml'}:2", "--engine-config, key base_urls", "http://"]),
    # a shard index outside the job array, said in one sentence
    Case("label/input-shard-index-past-num-shards", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--shard-index", "5", "--num-shards", "2"],
         same("--shard-index 5 must be below --num-shards 2", "numbered 0 to 1")),
    Case("revise/input-shard-index-negative", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--shard-index", "-1", "--num-shards", "2"],
         same("--shard-index", "greater than or equal to 0", "(got -1)")),
    Case("run/input-shard-index-past-num-shards", lambda d: ["run", str(run_config(d, work={"shard_index": 2,
         "num_shards": 2}))], lambda d: [str(d / "run.yaml"), "key work",
                                                   "`shard_index` 2 must be below `num_shards` 2"]),
]

ALIAS_BOMB = "[&a [x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], [*b, *b, *b, *b, *b, *b]]"
HUGE = "1" * 5000  # an integer over Python's 4,300-digit conversion limit


def _dev_zero(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _template_as(folder: Path, make: Callable[[Path], Path]) -> Path:
    """A templates folder whose judge.jinja is what `make` puts there (a link to a device, a FIFO)."""
    templates = _mkdir(folder / "templates")
    make(templates / "judge.jinja")
    return templates


def _zero_shard(run: Path, split: str) -> Path:
    """`run` with its first shard replaced by a link to /dev/zero."""
    shard = _first_shard(run, split)
    shard.unlink()
    shard.symlink_to("/dev/zero")
    return run


def _yaml_run_config(folder: Path, extra: str = "", stages: str = "  revise:\n    rounds: 1\n") -> Path:
    """A run config written as YAML text (line 4 is the first line of `extra`)."""
    text = f"out: {folder / 'run'}\nconstitution: {HARMLESS}\nprompts: {prompts_file(folder)}\n{extra}stages:\n"
    return _file(folder / "run.yaml", text + stages)


def _huge_adapter(folder: Path) -> Path:
    adapter = _mkdir(folder / "adapter")
    _file(adapter / "adapter_config.json", f'{{"peft_type": "LORA", "r": {HUGE}, "base_model_name_or_path": "x"}}')
    # weights that pass the header check, so that the config is what is refused
    (adapter / "adapter_model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    return adapter


def _deep_row(depth: int) -> str:
    return '{"prompt": "Hi?", "response_a": "a", "response_b": "b", "meta": ' + "[" * depth + "]" * depth + "}\n"



# template operations bounded in memory and time
CASES_TEMPLATES: list[Case] = [
    Case("label/template-format-width-from-a-field",
         lambda d: _label_with_judge(d, "{{ '{:{}}'.format(1, 300000000) }}"),
         lambda d: [str(d / "templates" / "judge.jinja"), "format width above 10000"]),
    Case("label/template-replace-bomb",
         lambda d: _label_with_judge(d, "{% set s = 'x' * 60000 %}{{ s.replace('x', s) }}"),
         lambda d: [str(d / "templates" / "judge.jinja"), "replaced text longer"]),
    Case("label/template-join-bomb", lambda d: _label_with_judge(d, "{{ range(100000) | join('x' * 100000) }}"),
         lambda d: [str(d / "templates" / "judge.jinja"), "joined text longer"]),
    Case("label/template-power-bomb", lambda d: _label_with_judge(d, "{{ ((7**4096)**4096)**4096 }}"),
         lambda d: [str(d / "templates" / "judge.jinja"), "integer of more than"]),
    Case("label/template-percent-star-width", lambda d: _label_with_judge(d, "{{ '%*d' % (10**9, 1) }}"),
         lambda d: [str(d / "templates" / "judge.jinja"), "format width"]),
    Case("label/template-macro-calls-itself-twice", lambda d: _label_with_judge(d, "{% macro f(n) %}{% if n %}"
         "{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}"),
         lambda d: [str(d / "templates" / "judge.jinja"), "calls"]),
    Case("label/template-captured-block-bomb", lambda d: _label_with_judge(d, "{% set s = 'x' * 1000000 %}{% set x %}"
         "{% for i in range(100000) %}{{ s }}{% endfor %}{% endset %}"),
         lambda d: [str(d / "templates" / "judge.jinja"), "characters written"]),
    Case("revise/template-doubling-text", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--templates", str(template_folder(d, "critique",
         "{% set n = namespace(s='x') %}{% for i in range(40) %}{% set n.s = n.s ~ n.s %}{% endfor %}"))],
         lambda d: [str(d / "templates" / "critique.jinja"), "joined text longer"]),
    Case("label/template-number-too-long-to-read", lambda d: _label_with_judge(d, "{{ " + "9" * 5000 + " }}"),
         lambda d: [f"{d / 'templates' / 'judge.jinja'}:1", "more than 4300 digits"]),
    Case("label/template-nested-too-deeply", lambda d: _label_with_judge(d, "{{ " + "(" * 3000 + "1" + ")" * 3000
         + " }}"), lambda d: [str(d / "templates" / "judge.jinja"), "nested too deeply"]),
    Case("validate/template-format-width-bomb", lambda d: ["validate", str(run_config(d, templates=str(
         template_folder(d, "critique", "{{ '{0:.{1}f}'.format(1.5, 10**8) }}"))))],
         lambda d: [str(d / "templates" / "critique.jinja"), "format width"]),
]


def _label_with_judge(folder: Path, bomb: str) -> list[str]:
    """`label` with a user judge template that holds `bomb` on its first line."""
    templates = template_folder(folder, "judge", bomb)
    return ["label", "--constitution", str(HARMLESS), "--pairs", str(pairs_file(folder)), "--out",
            str(folder / "out"), "--templates", str(templates)]  # fmt: skip



# an engine-config value the CLI checks later (the API key's variable) is still the file's, not an option's
CASES_ENGINE_CONFIG: list[Case] = [
    Case("label/engine-config-api-key-env-unset", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--engine", "openai", "--engine-config", str(_file(d / "cfg.yaml",
         "base_urls: [http://127.0.0.1:9]\nmodel: judge\napi_key_env: LABELER_TEST_UNSET_KEY\n"))],
         lambda d: [f"{d / 'cfg.yaml'}:3", "--engine-config, key api_key_env", "LABELER_TEST_UNSET_KEY", "not set"]),
]


# outputs never over inputs; numbers and paths the CLI takes
CASES_OUTPUTS: list[Case] = [
    # an output that is an input, holds one, or is a folder holding something else
    Case("eval-judge/out-is-its-pairs", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--out",
         str(d / "human.jsonl")], lambda d: ["--out", "--pairs", str(d / "human.jsonl"), "replace that input"]),
    Case("eval-judge/out-is-a-hard-link-to-its-pairs", lambda d: ["eval-judge", "--pairs", str(human_file(d)),
         "--out", str(_hard_link(d / "report.json", d / "human.jsonl"))], same("--out", "--pairs")),
    Case("eval-judge/out-is-a-compare-file", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--compare",
         str(_file(d / "a.yaml", "name: a\n")), "--out", str(d / "a.yaml")], same("--out", "--compare")),
    Case("generate/out-is-its-prompts", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--out",
         str(d / "prompts.jsonl")], lambda d: ["--out", "--prompts", str(d / "prompts.jsonl")]),
    Case("generate/out-links-to-its-prompts", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--out",
         str(_symlink(d / "answers.jsonl", d / "prompts.jsonl"))], same("--out", "--prompts")),
    Case("eval-policy/out-is-its-prompts", lambda d: ["eval-policy", "--baseline", "default", "--candidate",
         "default", "--prompts", str(prompts_file(d)), "--constitution", str(HARMLESS), "--out",
         str(d / "prompts.jsonl")], same("--out", "--prompts")),
    Case("train-rm/out-is-the-data-run", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out",
         str(d / "pref-run")], lambda d: ["--out", "--data", str(d / "pref-run")]),
    Case("train-rm/out-holds-the-data-run", lambda d: ["train-rm", "--data", str(preference_run(_mkdir(d / "w"))),
         "--out", str(d / "w")], lambda d: ["--out", str(d / "w"), "holds the input given as --data"]),
    Case("train-rm/out-inside-a-split-of-the-data-run", lambda d: ["train-rm", "--data", str(preference_run(d)),
         "--out", str(d / "pref-run" / "preferences" / "rm")], same("--out", "--data", "preferences")),
    Case("train-rm/out-holds-no-training-run", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out",
         str(_file(_mkdir(d / "rm") / "notes.txt").parent)], lambda d: ["--out", str(d / "rm"), "no training run"]),
    Case("ppo/out-is-a-labeler-run", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--reward-rule",
         "word:no", "--out", str(preference_run(d))], lambda d: ["--out", str(d / "pref-run"), "no training run"]),
    Case("label/out-is-its-pairs-file", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "pairs.jsonl")], same("--out", "--pairs", "replace that input")),
    Case("label/out-holds-its-pairs", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(_mkdir(d / "w"))), "--out", str(d / "w")], same("--out", "holds the input given as --pairs")),
    Case("label/out-holds-its-constitution", lambda d: ["label", "--constitution", str(_copy(HARMLESS, d / "c")),
         "--pairs", str(pairs_file(d)), "--out", str(d / "c")], same("--out", "--constitution")),
    Case("label/out-is-a-folder-that-is-no-run", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(_file(_mkdir(d / "notes") / "todo.md").parent)],
         lambda d: ["--out", str(d / "notes"), "not empty", "manifest.json"]),
    Case("revise/out-is-the-constitutions-folder", lambda d: ["revise", "--constitution", str(HARMLESS),
         "--prompts", str(prompts_file(d)), "--out", str(REPO / "constitutions")],
         same("--out", "holds the input given as --constitution")),
    Case("revise/out-is-the-root", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", "/"], same("--out", "root")),
    Case("label/out-empty", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs", str(pairs_file(d)),
         "--out", ""], same("--out", "empty path")),
    Case("train-rm/out-empty", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out", ""],
         same("--out", "empty path")),
    Case("export/out-holds-the-run", lambda d: ["export", str(preference_run(_mkdir(d / "w"))), "--out",
         str(d / "w")], lambda d: ["--out", str(d / "w"), "RUN"]),
    Case("model-prepare/out-is-a-folder-with-files", lambda d: ["model", "prepare", "--out",
         str(_file(_mkdir(d / "docs") / "letter.txt").parent)], lambda d: ["--out", str(d / "docs"), "not empty"]),
    Case("merge/out-is-a-folder-that-is-no-run", lambda d: ["merge", str(preference_run(d)), "--out",
         str(_file(_mkdir(d / "m") / "x.txt").parent)], lambda d: ["--out", str(d / "m"), "manifest.json"]),
    # paths that cannot take the output
    Case("label/out-under-sys", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs", str(pairs_file(d)),
         "--out", "/sys/labeler-run"], same("--out", "/sys", "kernel file system")),
    Case("revise/out-name-too-long", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / ("x" * 300))], same("--out", "300 bytes", "at most 255")),
    Case("label/out-dangling-symlink", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(_symlink(d / "run", d / "nowhere"))],
         lambda d: ["--out", str(d / "run"), "symbolic link", "does not exist"]),
    Case("train-rm/out-inside-a-dangling-symlink", lambda d: ["train-rm", "--data", str(preference_run(d)),
         "--out", str(_symlink(d / "link", d / "nowhere") / "rm")], lambda d: ["--out", str(d / "link")]),
    Case("generate/out-dangling-symlink", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--out",
         str(_symlink(d / "answers.jsonl", d / "elsewhere.jsonl"))], same("--out", "symbolic link")),
    Case("generate/out-dev-full", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--out", "/dev/full"],
         same("--out", "/dev/full")),
    Case("eval-judge/out-dev-full", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--out", "/dev/full"],
         same("--out", "/dev/full")),
    Case("generate/out-names-a-folder", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--out",
         str(d / "ans.jsonl") + "/"], same("--out", "names a folder", "ans.jsonl/")),
    Case("eval-judge/out-names-a-folder", lambda d: ["eval-judge", "--pairs", str(human_file(d)), "--out",
         str(d / "judge.json") + "/"], same("--out", "names a folder")),
    # numbers past what they go to
    Case("label/limit-2-70", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs", str(pairs_file(d)),
         "--out", str(d / "out"), "--limit", str(2**70)], same("--limit", str(2**70), "2**63 - 1")),
    Case("generate/limit-2-70", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--limit", str(2**70)],
         same("--limit", str(2**70))),
    Case("export/shard-size-past-any-file", lambda d: ["export", str(preference_run(d)), "--out", str(d / "out"),
         "--shard-size", "99999999999TB"], same("--shard-size", "99999999999TB")),
    Case("train-rm/seed-2-70", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out", str(d / "rm"),
         "--seed", str(2**70)], same("--seed", str(2**70), "4294967296")),
    Case("ppo/seed-2-70", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--reward-rule", "word:no", "--out",
         str(d / "ppo"), "--seed", str(2**70)], same("--seed", str(2**70))),
    Case("ppo/seed-2-32", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--reward-rule", "word:no", "--out",
         str(d / "ppo"), "--seed", str(2**32)], same("--seed", "4294967296")),
    # the same pairs given twice to train-rm
    Case("train-rm/same-data-twice", lambda d: ["train-rm", "--data", str(preference_run(d)), "--data",
         str(d / "pref-run"), "--out", str(d / "rm")], same("--data", "same run")),
    Case("train-rm/same-data-two-spellings", lambda d: ["train-rm", "--data", str(preference_run(d)), "--data",
         str(_symlink(d / "alias", d / "pref-run")), "--out", str(d / "rm")],
         lambda d: ["--data", str(d / "alias"), "same run", str(d / "pref-run")]),
    Case("train-rm/data-runs-share-pairs", lambda d: ["train-rm", "--data", str(preference_run(d)), "--data",
         str(_copy(d / "pref-run", d / "copy")), "--out", str(d / "rm")],
         lambda d: ["--data", str(d / "copy"), str(d / "pref-run"), "trained on twice"]),
]


def _hard_link(path: Path, target: Path) -> Path:
    path.hardlink_to(target)
    return path


def _symlink(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


def _copy(source: Path, dest: Path) -> Path:
    """A copy of a file (into the folder `dest`) or of a folder (as `dest`); the path of the copy."""
    if source.is_dir():
        shutil.copytree(source, dest)
        return dest
    dest.mkdir(exist_ok=True)
    return Path(shutil.copy(source, dest))



# models, engines and inputs checked before anything loads; nothing accepted silently
CASES_CHECKS: list[Case] = [
    # a model folder spoiled in one way each (the embedded model's files linked in)
    Case("label/judge-model-with-auto-map", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--judge-model", str(_smol(d, config={"auto_map": {
         "AutoModelForCausalLM": "modeling_x.X"}}))], lambda d: [str(d / "m" / "config.json"), "auto_map",
         "--trust-remote-code", "--judge-model"]),
    Case("generate/empty-weights", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--model",
         str(_smol(d, weights=b""))], lambda d: [str(d / "m" / "model.safetensors"), "empty", "--model"]),
    Case("generate/dangling-weights", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--model",
         str(_smol(d, weights=None))], lambda d: [str(d / "m" / "model.safetensors"), "broken symbolic link"]),
    Case("revise/cut-off-weights", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(prompts_file(d)), "--out", str(d / "out"), "--model", str(_smol(d, weights=b"\xff" * 64))],
         lambda d: [str(d / "m" / "model.safetensors"), "not safetensors"]),
    Case("eval-judge/judge-without-tokenizer", lambda d: ["eval-judge", "--pairs", str(human_file(d)),
         "--judge-model", str(_smol(d, drop=("tokenizer.json",)))], lambda d: [str(d / "m"), "no tokenizer files",
         "--judge-model"]),
    Case("generate/adapter-with-empty-weights", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--model",
         str(_adapter(d, weights=b""))], lambda d: [str(d / "adapter" / "adapter_model.safetensors"), "empty"]),
    Case("generate/adapter-of-rank-0", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--model",
         str(_adapter(d, r=0))], lambda d: [str(d / "adapter" / "adapter_config.json"), "rank r", "got 0"]),
    Case("ppo/prefix-tuning-adapter-as-policy", lambda d: ["ppo", "--prompts", str(prompts_file(d)),
         "--reward-rule", "word:no", "--out", str(d / "out"), "--policy", str(_adapter(d, peft_type="PREFIX_TUNING"))],
         lambda d: [str(d / "adapter" / "adapter_config.json"), "PREFIX_TUNING", "not LoRA", "--policy"]),
    # engine options beyond what the model or the machine has
    Case("label/tensor-parallel-beyond-the-gpus", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--tensor-parallel-size", "64"],
         same("--tensor-parallel-size", "64 GPUs")),
    Case("label/max-model-len-absurd", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--max-model-len", str(10**12)], same("--max-model-len")),
    Case("generate/max-model-len-beyond-the-model", lambda d: ["generate", "--prompts", str(prompts_file(d)),
         "--max-model-len", "9000"], same("--max-model-len", "9000", "8192")),
    Case("label/kv-block-size-7", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--kv-block-size", "7"],
         same("--kv-block-size", "multiple of 16")),
    Case("generate/max-tokens-absurd", lambda d: ["generate", "--prompts", str(prompts_file(d)), "--max-tokens",
         str(10**12)], same("--max-tokens")),
    # pairs: listed twice, or longer than the judge can take (a character bound, no tokenizer needed)
    Case("label/duplicate-pair", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs", str(pairs_file(d,
         json.dumps({"prompt": "x", "response_a": "y", "response_b": "z"}) + "\n" + json.dumps({"prompt": "Hi?",
         "response_a": "Hello.", "response_b": "Go away."}) + "\n")), "--out", str(d / "out")],
         lambda d: [f"{d / 'pairs.jsonl'}:3", "line 1", "same pair"]),
    Case("label/pair-beyond-the-judge-context", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d, json.dumps({"prompt": "Hi?", "response_a": "word " * 2000, "response_b": "no"}) + "\n")),
         "--out", str(d / "out"), "--max-model-len", "64"], lambda d: [f"{d / 'pairs.jsonl'}:2", "characters"]),
    Case("label/pair-of-2m-characters", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d, json.dumps({"prompt": "Hi?", "response_a": "x" * 2_100_000, "response_b": "no"}) + "\n")),
         "--out", str(d / "out")], lambda d: [f"{d / 'pairs.jsonl'}:2", "2100005 characters"]),
    # accepted silently before
    Case("label/pair-messages-zero-width", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d, json.dumps({"messages": [{"role": "user", "content": " \u200b\u2060\ufeff "}],
         "response_a": "a", "response_b": "b"}) + "\n")), "--out", str(d / "out")],
         lambda d: [f"{d / 'pairs.jsonl'}:2", "messages", "zero-width"]),
    Case("revise/prompt-messages-whitespace", lambda d: ["revise", "--constitution", str(HARMLESS), "--prompts",
         str(_file(d / "p.jsonl", json.dumps({"messages": [{"role": "system", "content": "Be kind."},
         {"role": "user", "content": " \n\t"}]}) + "\n")), "--out", str(d / "out")],
         lambda d: [f"{d / 'p.jsonl'}:1", "message 1", "empty"]),
    Case("eval-judge/system-turn-only", lambda d: ["eval-judge", "--pairs", str(human_file(d, json.dumps({
         "messages": [{"role": "system", "content": "Be kind."}], "chosen": "a", "rejected": "b"}) + "\n"))],
         lambda d: [f"{d / 'human.jsonl'}:2", "no user turn"]),
    Case("label/demonstration-better-equals-worse", lambda d: ["label", "--constitution", str(_file(d / "c.yaml",
         "name: c\nprinciples:\n  - id: kind\n    judge: Which is kinder?\njudge_few_shot:\n"
         "  - conversation: [{role: user, content: hi}]\n    better: Hello\n    worse: Hello\n")), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--few-shot", "1"],
         lambda d: [str(d / "c.yaml"), "judge_few_shot", "better and worse are the same"]),
    Case("label/principles-beyond-the-constitution", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--principles", "sample:99999"],
         same("--principles", "99999", "has 16", str(HARMLESS))),
    Case("label/cot-clamp-without-cot", lambda d: ["label", "--constitution", str(HARMLESS), "--pairs",
         str(pairs_file(d)), "--out", str(d / "out"), "--cot-clamp", "0.4,0.6"], same("--cot-clamp", "--cot")),
    Case("report/rm-empty-folder", lambda d: ["report", str(preference_run(d)), "--rm", str(_mkdir(d / "rm"))],
         lambda d: [str(d / "rm"), "--rm", "not a reward-model output folder"]),
]

SMOL = Path.home() / ".cache/labeler/models/SmolLM2-135M-Instruct"


def _smol(folder: Path, *, config: dict | None = None, weights: bytes | None | str = "link",
          drop: tuple[str, ...] = ()) -> Path:
    """A copy of the embedded model at folder/m, its files linked, with one thing spoiled: `config` keys
    added to config.json, `weights` the bytes of model.safetensors (None: a link to nowhere), `drop` files
    left out."""
    model = _mkdir(folder / "m")
    for file in SMOL.iterdir():
        if file.name in drop or file.name in ("config.json", "model.safetensors"):
            continue
        (model / file.name).symlink_to(file)
    (model / "config.json").write_text(json.dumps({**json.loads((SMOL / "config.json").read_text()), **(config or {})}))
    if weights == "link":
        (model / "model.safetensors").symlink_to(SMOL / "model.safetensors")
    elif weights is None:
        (model / "model.safetensors").symlink_to(folder / "nowhere.safetensors")
    else:
        assert isinstance(weights, bytes)
        (model / "model.safetensors").write_bytes(weights)
    return model


# The smallest safetensors file: an 8-byte header length, then an empty JSON header.
EMPTY_SAFETENSORS = (2).to_bytes(8, "little") + b"{}"


def _adapter(folder: Path, *, weights: bytes = EMPTY_SAFETENSORS, **config: object) -> Path:
    """A LoRA adapter folder on the embedded model, its adapter_config.json changed by `config`."""
    adapter = _mkdir(folder / "adapter")
    values = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
              "base_model_name_or_path": "default", **config}
    (adapter / "adapter_config.json").write_text(json.dumps(values))
    (adapter / "adapter_model.safetensors").write_bytes(weights)
    return adapter


# trained outputs follow what they were trained on: a resume on inputs that changed under the same path
CASES_TRAINED: list[Case] = [
    Case("trained/rm-resume-on-changed-data", lambda d: ["train-rm", "--data", str(preference_run(d)), "--out",
         str(_trained_before(d / "rm", "RMTrainConfig", data=[str(d / "pref-run")])), "--resume"],
         lambda d: [str(d / "rm" / "training-config.json"), "--data", "another --out"]),
    Case("trained/ppo-resume-on-changed-prompts", lambda d: ["ppo", "--prompts", str(prompts_file(d)), "--out",
         str(_trained_before(d / "ppo", "PPOConfig", prompts=str(d / "prompts.jsonl"), reward_rule="word:no")),
         "--reward-rule", "word:no", "--resume"],
         lambda d: [str(d / "ppo" / "training-config.json"), "--prompts", "another --out"]),
]


def _trained_before(out: Path, kind: str, **fields: object) -> Path:
    """A training folder whose run started with these settings on inputs that held other content."""
    from labeler.train.ppo.config import PPOConfig
    from labeler.train.rm.config import RMTrainConfig

    config = {"RMTrainConfig": RMTrainConfig, "PPOConfig": PPOConfig}[kind].model_validate({"out": out, **fields})
    record = {**config.model_dump(mode="json"), "inputs": {option: "0" * 64 for option in config.input_paths()}}
    _mkdir(out)
    (out / "training-config.json").write_text(json.dumps(record))
    return out


CASES += (CASES_RUN_WRITER + CASES_PUBLISHING + CASES_READING + CASES_TEMPLATES + CASES_OUTPUTS + CASES_CHECKS
          + CASES_TRAINED + CASES_ENGINE_CONFIG)


def _first_shard(run: Path, split: str) -> Path:
    return sorted((run / split).glob("*.arrow"))[0]


def _truncated_preference_run(folder: Path) -> Path:
    run = preference_run(folder)
    truncate_first_shard(run, "preferences")
    return run


def _truncated_sft_run(folder: Path) -> Path:
    run = sft_run(folder)
    truncate_first_shard(run, "sft")
    return run


def _stray_shard_run(folder: Path) -> Path:
    """A run folder whose preferences/ holds a shard the manifest does not list."""
    run = sft_run(folder)
    (run / "preferences").mkdir()
    (run / "preferences" / "shard-00000.arrow").write_bytes(b"not listed")
    return run


def _running_part(folder: Path) -> Path:
    run = folder / "part"
    store = RunStore.open(run, "sft", {"config": {}}, part=(0, 1))
    store.write_shard([])
    return run


@dataclass
class Outcome:
    code: int
    stderr: str
    changed: list[str] = field(default_factory=list)
    needles: list[str] = field(default_factory=list)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and modification time (links not followed)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return found


def can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


def run_case(case: Case, folder: Path, read_only_ok: bool) -> Outcome | None:
    folder.mkdir(parents=True)
    args = case.build(folder)
    needles = case.names(folder)
    command = [sys.executable, "-m", "labeler", *args]
    if case.read_only is not None:
        if not read_only_ok:
            return None
        target = folder / case.read_only
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        command = ["unshare", "-rm", "sh", "-c", script, "sh", str(target), *command]
    env = {**os.environ, FORBID_LOAD_ENV: "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("HF_TOKEN", None)  # no case may reach the Hub
    env.update(case.env)
    before = snapshot(folder)
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    after = snapshot(folder)
    changed = sorted(set(before.items()) ^ set(after.items()))
    return Outcome(result.returncode, result.stderr, [name for name, _ in changed], needles)


def _case_of(item: pytest.Item) -> str | None:
    """The id of the case a collected test runs, or None for a test that runs none."""
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("case") if callspec is not None else None
    return case.id if isinstance(case, Case) else None


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome | None]:
    """The outcome of every case this pytest run selected (all of them, or those `-k` picks)."""
    selected = {_case_of(item) for item in request.session.items}
    root = tmp_path_factory.mktemp("bad-input")
    read_only_ok = can_mount_read_only()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            case.id: pool.submit(run_case, case, root / case.id.replace("/", "__"), read_only_ok)
            for case in CASES
            if case.id in selected
        }
        return {name: future.result() for name, future in futures.items()}


def test_the_table_covers_every_command_and_enough_cases() -> None:
    commands = {case.id.split("/")[0] for case in CASES}
    expected = {"model-prepare", "validate", "generate", "revise", "label", "eval-judge", "eval-policy", "merge",
                "train-rm", "score-rm", "ppo", "report", "run", "export", "push", "review"}  # fmt: skip
    assert expected <= commands and len(CASES) >= 45
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_exits_2_naming_it_before_loading_anything(case: Case, outcomes: dict[str, Outcome | None]) -> None:
    outcome = outcomes[case.id]
    if outcome is None:
        pytest.skip("this machine cannot mount a folder read-only (no user namespaces)")
    assert outcome.code == 2, outcome.stderr[-3000:]
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    for needle in outcome.needles:
        assert needle in outcome.stderr, (needle, outcome.stderr[-2000:])
    assert not outcome.changed, f"written or changed: {outcome.changed}"
