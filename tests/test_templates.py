"""Prompt templates: what each renders, user overrides, load-time checks, the sandbox, the chat template."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labeler.constitution import Principle, load_constitution
from labeler.engine.base import Message
from labeler.errors import InputError
from labeler.templates import DEFAULT_FOLDER, VARIABLES, Templates

REPO = Path(__file__).resolve().parent.parent
CONVERSATION = [
    Message(role="system", content="You are a cooking assistant."),
    Message(role="user", content="How long should I boil an egg?"),
]
PRINCIPLE = Principle(
    id="kind",
    critique="Say whether the reply was unkind.",
    revision="Rewrite the reply to be kind.",
    judge="Which response is kinder?",
)
# Every template variable filled with text that looks like template code: it must come out verbatim.
TRAPS = ["{{ 7*7 }}", "{% raw %}", "{% endraw %}", "{# note #}", "{{ ''.__class__ }}"]
TRAP = " ".join(TRAPS)

JUDGE_VARIABLES = {"conversation", "response_a", "response_b", "question"}


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates.load()


def user_folder(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.jinja").write_text(text, encoding="utf-8")
    return folder


PAIR_TEMPLATE = "{{ conversation }} {{ response_a }} {{ response_b }} {{ question }}\n"


# --- what the shipped templates render ------------------------------------------------------------


def test_critique_and_revision_are_the_principle_requests(templates: Templates) -> None:
    assert templates.critique(PRINCIPLE) == "Say whether the reply was unkind."
    assert templates.revision(PRINCIPLE) == "Rewrite the reply to be kind."


def test_judge_puts_shared_content_before_the_question(templates: Templates) -> None:
    first = templates.judge(CONVERSATION, "Nine minutes.", "Ask a chef.", "Which response is kinder?")
    second = templates.judge(CONVERSATION, "Nine minutes.", "Ask a chef.", "Which response is less harmful?")
    # Everything before the question is the same for every principle: a prefix cache reuses it.
    prefix = first[: first.index("Which response is kinder?")]
    assert second.startswith(prefix)
    texts = ["You are a cooking assistant.", "How long should I boil an egg?", "(A)\nNine minutes.", "(B)\nAsk a chef."]
    for text in texts:
        assert text in prefix
    assert prefix.index("Nine minutes.") < prefix.index("Ask a chef.")
    assert first.rstrip().endswith("Answer with the single letter A or B.")


def test_judge_cot_asks_for_reasoning_then_the_answer(templates: Templates) -> None:
    text = templates.judge_cot(CONVERSATION, "Nine minutes.", "Ask a chef.", "Which response is kinder?")
    plain = templates.judge(CONVERSATION, "Nine minutes.", "Ask a chef.", "Which response is kinder?")
    shared = plain[: plain.index("Which response is kinder?")]
    assert text.startswith(shared)
    assert "step by step" in text
    assert "Therefore, the better response is (A)" in text


def test_judge_cot_answer_ends_right_before_the_letter(templates: Templates) -> None:
    prefix = templates.judge_cot_answer("  Reply A answers the question.\n\n")
    assert prefix == "Reply A answers the question.\n\nTherefore, the better response is ("


def test_salmon_asks_about_one_dimension_after_the_shared_content(templates: Templates) -> None:
    text = templates.salmon(CONVERSATION, "Nine minutes.", "Ask a chef.", "Honest and Accurate", "Says what is true.")
    judge = templates.judge(CONVERSATION, "Nine minutes.", "Ask a chef.", "Which response is kinder?")
    assert text.startswith(judge[: judge.index("Which response is kinder?")])
    assert "Which response is more honest and accurate? Says what is true." in text
    # Only the answer line follows the principle: that tail is recomputed once per principle.
    tail = text.split("Says what is true.", 1)[1]
    assert tail.strip() == "Answer with the single letter A or B."
    assert "(A) the first reply, or (B) the second reply" in text.split("(A)\n", 1)[0]


def test_conversation_accepts_messages_or_dicts(templates: Templates) -> None:
    as_dicts = [{"role": m.role, "content": m.content} for m in CONVERSATION]
    assert templates.judge(CONVERSATION, "a", "b", "Q?") == templates.judge(as_dicts, "a", "b", "Q?")


def test_texts_that_look_like_template_code_reach_the_output_verbatim(templates: Templates) -> None:
    principle = Principle(id="trap", critique=TRAP, revision=TRAP)
    conversation = [Message(role="user", content=TRAP)]
    assert templates.critique(principle) == TRAP
    assert templates.revision(principle) == TRAP
    for text in [
        templates.judge(conversation, TRAP, TRAP, TRAP),
        templates.judge_cot(conversation, TRAP, TRAP, TRAP),
        templates.salmon(conversation, TRAP, TRAP, "Kind", TRAP),
        templates.judge_cot_answer(TRAP),
    ]:
        assert TRAP in text
        assert "49" not in text


def test_shipped_principles_render(templates: Templates) -> None:
    for name in ["harmless", "helpful-honest"]:
        constitution = load_constitution(REPO / "constitutions" / f"{name}.yaml")
        for principle in constitution.principles:
            assert templates.critique(principle) == principle.critique
            assert principle.judge is not None
            assert principle.judge in templates.judge(CONVERSATION, "a", "b", principle.judge)


def test_sha256_per_template(templates: Templates) -> None:
    digests = templates.sha256()
    assert set(digests) == set(VARIABLES)
    assert all(len(d) == 64 for d in digests.values())
    assert len(set(digests.values())) == len(digests)
    assert Templates.load().sha256() == digests


# --- user folders ---------------------------------------------------------------------------------


def test_a_user_folder_overrides_a_subset(tmp_path: Path, templates: Templates) -> None:
    folder = user_folder(tmp_path, critique="Critique request: {{ principle.critique }} ({{ principle.id }})\n")
    custom = Templates.load(folder)
    assert custom.critique(PRINCIPLE) == "Critique request: Say whether the reply was unkind. (kind)"
    assert custom.revision(PRINCIPLE) == templates.revision(PRINCIPLE)
    assert custom.paths["critique"] == folder / "critique.jinja"
    assert custom.paths["judge"] == DEFAULT_FOLDER / "judge.jinja"
    changed = {name for name, digest in custom.sha256().items() if digest != templates.sha256()[name]}
    assert changed == {"critique"}


def test_a_copy_of_the_shipped_folder_loads_identically(tmp_path: Path, templates: Templates) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(DEFAULT_FOLDER, folder)
    assert Templates.load(folder).sha256() == templates.sha256()


def test_unknown_template_files_are_ignored_with_a_warning(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, summary="{{ anything }}")
    with pytest.warns(UserWarning, match="summary.jinja: not a template labeler renders"):
        Templates.load(folder)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="templates folder does not exist") as info:
        Templates.load(tmp_path / "absent")
    assert info.value.file == str(tmp_path / "absent")


def test_a_template_missing_a_variable_fails_at_load(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, judge="{{ conversation }} {{ question }}\n")
    with pytest.raises(InputError) as info:
        Templates.load(folder)
    assert info.value.file == str(folder / "judge.jinja")
    assert "template 'judge' never uses 'response_a', 'response_b'" in info.value.message


def test_a_template_using_an_unknown_variable_fails_at_load(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + "{{ prompt }}")
    with pytest.raises(InputError, match="template 'judge' uses undefined variable 'prompt'"):
        Templates.load(folder)


def test_a_syntax_error_names_the_template_and_line(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, salmon="{{ conversation }}\n{{ response_a }} {{ response_b }}\n{% if %}\n")
    with pytest.raises(InputError) as info:
        Templates.load(folder)
    assert (info.value.file, info.value.line) == (str(folder / "salmon.jinja"), 3)
    assert info.value.message.startswith("template 'salmon' has a syntax error")


# --- the sandbox ----------------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ response_a.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.__builtins__ }}",
    "{{ conversation | attr('__class__') }}",
    "{{ conversation.append('x') }}",
    "{{ namespace.__init__ }}",
    "{{ self._TemplateReference__context }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]


@pytest.mark.parametrize("escape", ESCAPES)
def test_sandbox_escapes_in_a_user_template_fail_at_load(tmp_path: Path, escape: str) -> None:
    folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + escape + "\n")
    with pytest.raises(InputError) as info:
        Templates.load(folder)
    assert info.value.file == str(folder / "judge.jinja")
    assert info.value.line == 2
    assert "SecurityError" in info.value.message and "unsafe" in info.value.message


def test_lipsum_is_not_offered(tmp_path: Path) -> None:
    """jinja2's lorem-ipsum generator writes text of any length (and its globals were a way out)."""
    folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + "{{ lipsum.__globals__['os'] }}\n")
    with pytest.raises(InputError, match="undefined variable 'lipsum'"):
        Templates.load(folder)


UNBOUNDED = [
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "loop iterations"),
    ("{% for i in range(99999) %}{{ 'long line of text ' * 50 }}{% endfor %}", "characters of output"),
    ("{{ 'x' * 10**9 }}", "repetition longer"),
    ("{{ ['x'] * 10**9 }}", "repetition longer"),
    ("{{ 'x' | center(10**9) }}", "width or repeat count"),
    ("{{ 'x' | indent(10**9) }}", "width or repeat count"),
    ("{{ 'x'.ljust(10**9) }}", "width or repeat count"),
    ("{{ '%0999999999d' | format(1) }}", "format width"),
    ("{{ '%0999999999d' % 1 }}", "format width"),
    ("{{ '{:>999999999}'.format(1) }}", "format width"),
]


@pytest.mark.parametrize(("body", "message"), UNBOUNDED)
def test_a_template_over_the_rendering_bounds_is_refused_at_load(tmp_path: Path, body: str, message: str) -> None:
    """Each would hang or fill memory; rendering is bounded, so loading (which renders samples) refuses it."""
    folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + body + "\n")
    with pytest.raises(InputError) as info:
        Templates.load(folder)
    assert info.value.file == str(folder / "judge.jinja")
    assert "TemplateBudgetError" in info.value.message and message in info.value.message


def test_an_escape_reached_only_at_render_time_fails_safely(tmp_path: Path) -> None:
    hidden = PAIR_TEMPLATE + "{% if response_a == 'open' %}{{ ''.__class__.__mro__ }}{% endif %}\n"
    custom = Templates.load(user_folder(tmp_path, judge=hidden))
    assert custom.judge(CONVERSATION, "closed", "b", "Q?").startswith("[")
    with pytest.raises(InputError) as info:
        custom.judge(CONVERSATION, "open", "b", "Q?")
    assert info.value.file == str(tmp_path / "prompts" / "judge.jinja")
    assert "SecurityError" in info.value.message


def test_every_template_declares_its_variables() -> None:
    assert set(VARIABLES["judge"]) == JUDGE_VARIABLES == set(VARIABLES["judge_cot"])
    assert set(VARIABLES["salmon"]) == {"conversation", "response_a", "response_b", "dimension", "definition"}
    assert set(VARIABLES["judge_cot_answer"]) == {"rationale"}
    assert {path.stem for path in DEFAULT_FOLDER.glob("*.jinja")} == set(VARIABLES)


# --- through the real tokenizer's chat template ---------------------------------------------------


@pytest.mark.slow
def test_judge_prompts_through_the_chat_template(embedded_model: Path, templates: Templates) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    question = "Which response is kinder?"
    for turn in [
        templates.judge(CONVERSATION, "Nine minutes.", TRAP, question),
        templates.salmon(CONVERSATION, "Nine minutes.", TRAP, "Kind", "The response is warm."),
    ]:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": turn}], tokenize=False, add_generation_prompt=True
        )
        assert isinstance(text, str)
        assert turn in text and TRAP in text
        assert text.endswith("<|im_start|>assistant\n")

    # The chain-of-thought answer prefix continues the assistant turn, ending right before the letter.
    prompt = templates.judge_cot(CONVERSATION, "Nine minutes.", "Ask a chef.", question)
    prefix = templates.judge_cot_answer("Reply A is warmer.")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": prefix}],
        tokenize=False,
        continue_final_message=True,
    )
    assert isinstance(text, str)
    assert text.endswith("<|im_start|>assistant\n" + prefix)
    ids = tokenizer(text + "A")["input_ids"]
    assert ids[-1] == tokenizer.convert_tokens_to_ids("A")
