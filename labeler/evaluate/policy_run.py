"""`labeler eval-policy`: does a policy beat another one (a trained one its start), by how much, at what cost?

Both policies answer every prompt once (seeded by the run seed, the prompt id and the policy's role,
so a policy compared with itself still gives two independent answers). Each candidate-baseline pair is
judged exactly as `labeler label` judges pairs, in both orders through `judge_pairs`, once per principle
(the judge questions of the constitution, or its definitions when it has no questions); P(candidate
better) of a prompt is the mean over principles, as `label`'s soft label is. From those:

- the win rate of the candidate with its 95 % interval, overall, per principle and per group (a column
  of the prompts file), see `labeler.evaluate.win_rate`;
- the response lengths of both (a judge that likes long answers is the classic way to be gamed), and
  the win rate where the candidate answered longer and where it did not;
- with `--reward-model`, the mean reward of each policy's answers and of their difference;
- the KL of the candidate to the baseline on the candidate's own answers: log p_candidate(y|x) -
  log p_baseline(y|x) summed over the sampled response tokens (EOS included), computed by both models
  through transformers, averaged over prompts. It estimates KL(candidate || baseline) when the answers
  are sampled at temperature 1 without top-p (the defaults); with other sampling it is the same
  log-ratio on tempered samples, and the report says so. It needs both policies to share a tokenizer.

The report itself (its figures and tables) is `labeler.evaluate.policy_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from labeler.core.batching import batches
from labeler.core.errors import InputError
from labeler.core.outputs import check_outputs
from labeler.core.progress import progress_bar
from labeler.core.sampling import seed_for
from labeler.engine import Engine, EngineConfig, Generation, GenerationParams
from labeler.engine.model_ref import ModelRef, resolve_model
from labeler.evaluate.policy_report import ROLES, EvalPolicyReport, Role, build_report, eval_settings, read_eval_policy
from labeler.inputs.constitution import Principle, load_constitution
from labeler.inputs.rows import Prompt, read_prompts
from labeler.inputs.templates import Templates
from labeler.stages.common import engine_for
from labeler.stages.judge import JudgeOptions, Panel, judge_pairs
from labeler.stages.pairs import make_pair
from labeler.store.atomic import atomic_write_text

SOURCE_EVAL = "eval_policy"

POLICY_HELP = (
    "a Hugging Face model folder, a Hub id org/name[@revision], a PEFT adapter folder, a `labeler ppo` output "
    "folder (its newest checkpoint) or checkpoint folder, or 'default' (the embedded SmolLM2-135M-Instruct)."
)


class EvalSettings(BaseModel):
    """How `labeler eval-policy` compares two policies: everything but which policies, on which prompts,
    judged by what, and where the report goes (what a run config's `stages.eval` holds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_by: str | None = Field(None, description="Column of the prompts to report the win rate per value of.")
    principles: tuple[str, ...] = Field(
        (), description="Judge under these principle ids only (default: every principle with a judge question)."
    )
    sampling: GenerationParams = Field(
        default_factory=lambda: GenerationParams(temperature=1.0, top_p=1.0, max_tokens=128),
        description="How both policies answer (one answer per prompt; n is ignored). Temperature 1 without "
        "top-p samples the policies themselves, which the KL estimate assumes.",
    )
    kl: bool = Field(True, description="Compute the KL of the candidate to the baseline (loads both via transformers).")
    kl_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Dtype of the two models for the KL (float32: log-probabilities to about 1e-5)."
    )
    cot: bool = Field(False, description="The judge writes a rationale (greedy) before it chooses.")
    cot_max_tokens: int = Field(128, ge=8, description="Longest rationale, in tokens.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts.")
    batch_size: int = Field(64, ge=1, description="Prompts per engine call.")


class EvalPolicyConfig(EvalSettings):
    """Options of `labeler eval-policy`."""

    baseline: str = Field(description="The policy to beat: " + POLICY_HELP)
    candidate: str = Field(description="The policy being evaluated: " + POLICY_HELP)
    prompts: Path = Field(
        description="Held-out prompts (JSONL, Parquet or Arrow): `prompt` text or a `messages` list per row."
    )
    constitution: Path = Field(description="Constitution whose judge questions (else definitions) judge the pairs.")
    judge: EngineConfig = Field(
        default_factory=EngineConfig,
        description="The judge model and engine; both policies sample on the same engine settings.",
    )
    reward_model: str | None = Field(
        None, description="A reward model (`labeler train-rm` output) to score both policies' answers with."
    )
    templates: Path | None = Field(None, description="Folder of templates overriding the shipped ones.")
    seed: int = Field(0, description="Seeds the answers of both policies and the bootstrap intervals.")
    out: Path | None = Field(None, description="Write the report as JSON here (default: print only).")
    quiet: bool = Field(False, description="Plain log lines instead of progress bars.")



# -- checks -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalPlan:
    """What the checks found, before any model loads."""

    prompts: list[Prompt]
    principles: tuple[Principle, ...]
    salmon: bool  # judged by definitions (the constitution has no judge questions)
    templates: Templates
    baseline: ModelRef
    candidate: ModelRef
    judge: ModelRef
    reward_model: ModelRef | None


def check_eval_policy(config: EvalPolicyConfig, *, candidate_ready: bool = True) -> EvalPlan:
    """Every check of `eval_policy` that needs no model: constitution, principles, templates, every prompt
    row (and its group value), the three or four model arguments and the output file.

    `candidate_ready=False` leaves out the candidate and the reward model (in a pipeline, stages before the
    evaluation train them); the plan then names the baseline in their place.
    """
    if config.judge.data_parallel_size > 1:
        raise InputError("eval-policy runs one engine at a time; leave out ‹data_parallel_size›",
                         field="judge.data_parallel_size")
    constitution = load_constitution(config.constitution)
    questions = constitution.for_stage("judge")
    salmon = not questions
    available = questions or constitution.for_stage("salmon")
    if not available:
        raise InputError("no principle has a judge question or a definition, so nothing can judge pairs",
                         file=config.constitution)
    if config.principles:
        known = {p.id: p for p in available}
        unknown = [pid for pid in config.principles if pid not in known]
        if unknown:
            raise InputError(
                f"no {'definition' if salmon else 'judge question'} for principle(s) {', '.join(unknown)} in "
                f"{config.constitution} (it has {', '.join(known)})",
                field="principles",
            )
        available = tuple(known[pid] for pid in dict.fromkeys(config.principles))
    templates = Templates.load(config.templates)
    prompts = list(read_prompts(config.prompts, config.group_by))[: config.limit]
    if not prompts:
        raise InputError("no prompts in the file", file=config.prompts, field="prompts")
    baseline = resolve_model(config.baseline, field="baseline", kind="policy")
    judge = resolve_model(config.judge.model, field="judge.model")
    candidate, reward = baseline, None
    if candidate_ready:
        candidate = resolve_model(config.candidate, field="candidate", kind="policy")
        if config.reward_model is not None:
            reward = resolve_model(config.reward_model, field="reward_model", kind="reward")
    if config.out is not None:
        check_outputs(config.out, "file", {
            "prompts": config.prompts, "constitution": config.constitution, "templates": config.templates,
            "baseline": config.baseline, "candidate": config.candidate, "reward_model": config.reward_model,
            "judge.model": config.judge.model,
        })
    return EvalPlan(prompts, tuple(available), salmon, templates, baseline, candidate, judge, reward)


def finished_evaluation(config: EvalPolicyConfig) -> EvalPolicyReport | None:
    """The report already at `config.out` when it was made with these settings; None when there is none.

    `InputError` naming the file when it holds another evaluation (a pipeline never mixes two setups).
    """
    if config.out is None or not config.out.is_file():
        return None
    report = read_eval_policy(config.out)
    if report.settings != eval_settings(config):
        changed = sorted(key for key in {*report.settings, *eval_settings(config)}
                         if report.settings.get(key) != eval_settings(config).get(key))
        raise InputError(
            f"holds an evaluation made with other settings ({', '.join(changed)}); delete it to evaluate again",
            file=config.out,
        )
    return report


# -- the evaluation -----------------------------------------------------------------------------------


def eval_policy(
    config: EvalPolicyConfig,
    *,
    judge: Engine | None = None,
    baseline: Engine | None = None,
    candidate: Engine | None = None,
) -> EvalPolicyReport:
    """Sample both policies, judge every pair in both orders, measure; write `config.out` when given.

    Engines passed in are used (and left open); the others start when first needed and close after.
    """
    plan = check_eval_policy(config)
    prompts = plan.prompts
    quiet = config.quiet or None

    # --- 1. Answers: the candidate's on its own engine, then the baseline's (the judge's when it is the
    #     same model, so that engine also judges)
    answers: dict[str, list[Generation]] = {}
    with engine_for(_policy_engine(config, plan.candidate), candidate, plan.candidate) as engine:
        answers["candidate"] = _sample(engine, prompts, config, "candidate", quiet)
    judge_engine_config = config.judge
    with engine_for(judge_engine_config, judge, plan.judge) as judge_engine:
        same_model = plan.baseline.path == plan.judge.path and baseline is None
        with engine_for(_policy_engine(config, plan.baseline), judge_engine if same_model else baseline,
                        plan.baseline) as engine:
            answers["baseline"] = _sample(engine, prompts, config, "baseline", quiet)

        # --- 2. Judging: every pair under every principle, both orders (candidate laid out as response_a)
        texts = {role: [g.texts[0].strip() for g in answers[role]] for role in ROLES}
        pairs = [make_pair(p.messages, c, b, SOURCE_EVAL)
                 for p, c, b in zip(prompts, texts["candidate"], texts["baseline"])]
        options = JudgeOptions(principles="all", cot=config.cot, cot_max_tokens=config.cot_max_tokens)
        per_principle: dict[str, np.ndarray] = {}
        masses: list[float] = []
        consistent: list[bool] = []
        total = len(pairs) * len(plan.principles)
        with progress_bar(total, "judging", unit="judgments", quiet=quiet) as advance:
            for principle in plan.principles:
                panel = Panel(judge=(), salmon=(principle,)) if plan.salmon else Panel(judge=(principle,), salmon=())
                values = []
                for batch in batches(pairs, config.batch_size):
                    records = judge_pairs(judge_engine, plan.templates, panel, batch, options)
                    values += [r.p_a for r in records]
                    masses += [(r.mass_ab + r.mass_ba) / 2.0 for r in records]
                    consistent += [r.consistent for r in records]
                    advance(len(records))
                per_principle[principle.id] = np.array(values)
        judge_model = judge_engine.model_id

    # --- 3. Rewards and KL
    rewards, head_rewards = None, None
    if plan.reward_model is not None:
        rewards, head_rewards = _rewards(plan.reward_model, prompts, texts)
    kl_values: np.ndarray | None = None
    kl_skipped: str | None = "not asked for (--no-kl)"
    if config.kl:
        kl_values, kl_skipped = _kl(plan, prompts, answers["candidate"], config)

    report = build_report(config, plan, answers, texts, per_principle, masses, consistent, rewards, kl_values,
                          kl_skipped, judge_model, head_rewards)
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config.out, report.model_dump_json(indent=2) + "\n")
    return report


def _policy_engine(config: EvalPolicyConfig, model: ModelRef) -> EngineConfig:
    """The judge's engine settings with a policy's model."""
    return config.judge.model_copy(update={"model": model.spec})


def _sample(engine: Engine, prompts: Sequence[Prompt], config: EvalPolicyConfig, role: Role,
            quiet: bool | None) -> list[Generation]:
    """One answer per prompt, seeded by (run seed, prompt id, role)."""
    params = config.sampling.model_copy(update={"n": 1})
    generations: list[Generation] = []
    with progress_bar(len(prompts), f"sampling {role}", unit="prompts", quiet=quiet) as advance:
        for batch in batches(prompts, config.batch_size):
            seeds = [seed_for(config.seed, p.id, role) for p in batch]
            generations += engine.generate([p.messages for p in batch], params, seeds)
            advance(len(batch))
    return generations


def _rewards(
    model: ModelRef, prompts: Sequence[Prompt], texts: dict[str, list[str]]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]] | None]:
    """The reward model's score of each policy's answer to each prompt (by role), and with several heads each
    head's (head -> role -> scores); the reward is the heads' sum by the model's own weights."""
    import torch

    from labeler.train.rm.heads import weight_vector
    from labeler.train.rm.model import load_reward_model

    reward = load_reward_model(model.folder())
    vector = torch.tensor(weight_vector(reward.heads, reward.weights))  # (K,)
    scores, per_head = {}, {}
    for role in ROLES:
        conversations = [
            [*({"role": m.role, "content": m.content} for m in p.messages), {"role": "assistant", "content": text}]
            for p, text in zip(prompts, texts[role])
        ]
        heads = reward.score_heads(conversations).float().cpu()  # (N, K)
        scores[role] = (heads @ vector).numpy()
        per_head[role] = heads.numpy()
    if len(reward.heads) == 1:
        return scores, None
    return scores, {head: {role: per_head[role][:, k] for role in ROLES} for k, head in enumerate(reward.heads)}


def _kl(plan: EvalPlan, prompts: Sequence[Prompt], answers: Sequence[Generation],
        config: EvalPolicyConfig) -> tuple[np.ndarray | None, str | None]:
    """Per prompt, log p_candidate - log p_baseline of the candidate's answer, summed over its tokens."""
    import torch

    from labeler.engine.chat import chat_text, encode_texts
    from labeler.train.ppo.model import load_causal_lm, policy_tokenizer

    tokenizers = {"candidate": policy_tokenizer(plan.candidate), "baseline": policy_tokenizer(plan.baseline)}
    if tokenizers["candidate"].get_vocab() != tokenizers["baseline"].get_vocab():
        return None, "the two policies have different tokenizers, so their token log-probabilities do not compare"
    tokenizer = tokenizers["candidate"]
    prompt_ids = encode_texts(tokenizer, [chat_text(tokenizer, p.messages) for p in prompts])
    responses = [list(g.token_ids[0]) if g.token_ids else encode_texts(tokenizer, [g.texts[0]])[0] for g in answers]
    dtype = getattr(torch, config.kl_dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sums = {}
    for role, model in (("candidate", plan.candidate), ("baseline", plan.baseline)):
        lm = load_causal_lm(model, dtype, device)
        sums[role] = response_logprob_sums(lm, prompt_ids, responses, pad_id=int(tokenizer.pad_token_id),
                                           batch_size=config.batch_size)
        del lm
    return sums["candidate"] - sums["baseline"], None


def response_logprob_sums(
    lm: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *, pad_id: int, batch_size: int
) -> np.ndarray:
    """log p(response | prompt) under `lm` for each row: the sum of its response tokens' log-probabilities.

    Prompts are left-padded and responses right-padded, so every row sees the positions it has alone.
    """
    import torch

    from labeler.core.padding import pad_rows
    from labeler.train.ppo import math as ppo
    from labeler.train.ppo.model import response_logits

    device = next(lm.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
    by_row: dict[int, float] = {}
    for rows in batches(order, batch_size):
        prompt_tokens, prompt_mask = pad_rows([prompts[i] for i in rows], pad_id, side="left")  # (B, P)
        response_tokens, response_mask = pad_rows([responses[i] or [pad_id] for i in rows], pad_id, side="right")
        response_mask = response_mask * torch.tensor([[1] if responses[i] else [0] for i in rows])  # empty: 0
        sequences = torch.cat([prompt_tokens, response_tokens], dim=1).to(device)  # (B, P + R)
        attention = torch.cat([prompt_mask, response_mask], dim=1).to(device)
        with torch.no_grad():
            logits = response_logits(lm, sequences, attention, response_tokens.shape[1])  # (B, R, V)
            logprobs = ppo.token_logprobs(logits.float(), response_tokens.to(device))  # (B, R)
        totals = (logprobs * response_mask.to(device)).sum(dim=1).cpu().tolist()
        by_row.update(zip(rows, totals))
    return np.array([by_row[i] for i in range(len(prompts))])


