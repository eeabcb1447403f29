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
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labeler.engine.base import Message
from labeler.models import FORBID_LOAD_ENV
from labeler.records import PreferenceRecord, RevisionRound, SFTRecord, conversation_columns, record_id
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


def _loop(path: Path) -> Path:
    path.symlink_to(path)
    return path


def _model_folder(path: Path, config: str | None = '{"architectures": ["LlamaForCausalLM"]}') -> Path:
    _mkdir(path)
    if config is not None:
        (path / "config.json").write_text(config)
    return path


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
]

# --- data integrity and safety: one list per area, each part of the table ---------------------------


# one writer per run, inputs fingerprinted by content, overwrite, manifests confined
CASES_RUN_WRITER: list[Case] = [
]



# export and push: no symlink followed out of the run, no local path published
CASES_PUBLISHING: list[Case] = [
]



# inputs read from regular files only, bounded; YAML aliases, huge integers, deep nesting
CASES_READING: list[Case] = [
]



# template operations bounded in memory and time
CASES_TEMPLATES: list[Case] = [
]



# outputs never over inputs; numbers and paths the CLI takes
CASES_OUTPUTS: list[Case] = [
]



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


CASES += CASES_RUN_WRITER + CASES_PUBLISHING + CASES_READING + CASES_TEMPLATES + CASES_OUTPUTS + CASES_CHECKS


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
                "train-rm", "score-rm", "ppo", "report", "run", "export", "push"}  # fmt: skip
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
