"""Prompt templates: what each renders, user overrides, load-time checks, the sandbox, the chat template."""

from __future__ import annotations

import shutil
import time
import tracemalloc
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.inputs.constitution import Principle, load_constitution
from labeler.inputs.sandbox import BoundedSandbox
from labeler.inputs.sandbox import start as start_budget
from labeler.inputs.sandbox import stop as stop_budget
from labeler.inputs.templates import DEFAULT_FOLDER, VARIABLES, Templates

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


# Each would take minutes or gigabytes if run; every one is refused before the work is done.
MILLION = "{% set s = 'x' * 1000000 %}"
GROWN = "{% set n0 = namespace(x='x') %}" + "".join(
    f"{{% set n{i} = namespace(a=n{i - 1}, b=n{i - 1}) %}}" for i in range(1, 10)
) + "{% set n0.x = 'x' * 1000000 %}"
BOMBS = [
    ("{{ '{:{}}'.format(1, 300000000) }}", "format width"),  # the width is itself a field
    ("{{ '{0:{1}}'.format(1, 10**9) }}", "format width"),
    ("{{ '{0:.{1}f}'.format(1.5, 10**8) }}", "format width"),
    ("{{ '{a:{b}}'.format_map({'a': 1, 'b': 10**9}) }}", "format width"),
    ("{{ '%*d' % (10**9, 1) }}", "format width"),
    ("{{ '%.999999999f' % 1.5 }}", "format width"),
    ("{{ '%(a)999999999s' % {'a': 1} }}", "format width"),
    ("{{ '%0999999999d' | format(1) }}", "format width"),
    ("{{ ('{0}' * 1000).format('x' * 1000000) }}", "formatted text"),
    ("{{ ('%(a)s' * 1000) % {'a': 'x' * 1000000} }}", "formatted text"),
    ("{{ '{0!a}'.format('\\x00' * 1000000) }}", "formatted text"),
    ("{% set s = 'x' * 60000 %}{{ s.replace('x', s) }}", "replaced text"),  # 3.6 GB
    ("{{ ('x' * 100000) | replace('', 'y' * 100) }}", "replaced text"),
    ("{{ range(100000) | join('x' * 100000) }}", "joined text"),
    ("{{ ('x' * 100000).join(range(100000) | map('string')) }}", "joined text"),
    ("{{ range(100000) | map('string') | map('center', 10000) | join }}", "sequence of more than"),
    ("{{ range(100000) | map('string') | map('center', 10000) | list | length }}", "sequence of more than"),
    (MILLION + "{{ s ~ s ~ s }}", "joined text"),
    ("{% set n = namespace(s='x') %}{% for i in range(40) %}{% set n.s = n.s ~ n.s %}{% endfor %}", "joined text"),
    ("{% set n = namespace(s='x') %}{% for i in range(40) %}{% set n.s = n.s + n.s %}{% endfor %}", "joined text"),
    ("{% set n = namespace(l=[1]) %}{% for i in range(40) %}{% set n.l = n.l + n.l %}{% endfor %}", "100000 items"),
    ("{{ ((7**4096)**4096)**4096 }}", "integer of more than"),  # ran for minutes inside one C call
    ("{{ 10 ** 5000 }}", "integer of more than"),
    ("{{ (10**4000) * (10**4000) }}", "integer of more than"),
    ("{% set n = namespace(i=7) %}{% for i in range(40) %}{% set n.i = n.i * n.i %}{% endfor %}", "integer of more"),
    (MILLION + "{% set a = [s, s, s] %}", "text is longer"),
    ("{% set s = 'x' * 100000 %}{% set a = [s, s, s, s, s, s, s, s, s, s] %}{% set b = [a, a, a] %}", "text is longer"),
    ("{{ dict(a='x' * 1000000, b='y' * 1000000) }}", "text is longer"),
    ("{{ {}.fromkeys(range(100000), 'x' * 1000000) | length }}", "text is longer"),
    ("{% set n = namespace(x=1) %}{% for i in range(100000) %}{% set n.x = [n.x] %}{% endfor %}", "nested deeper"),
    ("{{ ('x' * 1000000).zfill(10**9) }}", "width or repeat count"),
    ("{{ ('\\t' * 1000000).expandtabs(10000) }}", "expanded text"),
    ("{{ ('x' * 1000000).translate({120: 'y' * 1000}) }}", "translated text"),
    ("{{ ('x' * 1000000).encode().hex().encode().hex() }}", "text of more than"),
    ("{{ ('a ' * 1000000).split() | length }}", "split into more"),
    ("{{ ('\\n' * 1000000).splitlines() | length }}", "split into more"),
    ("{{ ('\\n' * 1000000) | indent(1000) }}", "indented text"),
    ("{{ ('\\n' * 100000) | indent('y' * 100) | length }}", "indented text"),
    ("{{ ('x' * 1000000) | wordwrap(1, wrapstring='y' * 1000) }}", "wrapped text"),
    ("{{ ('x' * 900000) | wordwrap(1) }}", "a word over"),  # textwrap is quadratic in a long word
    ("{{ ('ab ' * 600000) | urlize }}", "urlize of a text"),
    ("{{ [1] | batch(10**9, 'x') | list }}", "batch or slice"),
    ("{{ [1] | slice(10**9) | list }}", "batch or slice"),
    ("{{ ('x' * 1000000) | list | length }}", "list of more than"),
    ("{{ ('x' * 1000000) | sort | length }}", "list of more than"),
    ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}", "calls"),
    (MILLION + "{% set x %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endset %}", "characters written"),
    ("{% macro m() %}{% for i in range(9999) %}{{ 'x' * 1000 }}{% endfor %}{% endmacro %}{% set y = m() %}", "written"),
    ("{% set x %}{% for i in range(100000) %}" + "y" * 1000 + "{% endfor %}{% endset %}", "characters written"),
    ("{% filter upper %}{% for i in range(100000) %}" + "y" * 100 + "{% endfor %}{% endfilter %}", "written"),
    ("{% for i in range(100000) %}{% set x = ('x' * 1000000).replace('x', 'y') %}{% endfor %}", "text built"),
    ("{% for i in range(100000) %}{% set x = ('x' * 1000000).count('y') %}{% endfor %}", "text built"),
    (MILLION + "{% set t = 'x' * 999999 ~ 'x' %}{% for i in range(99999) %}{% if s == t %}{% endif %}{% endfor %}",
     "text built"),
    (MILLION + "{% for i in range(99999) %}{% if 'y' in s %}{% endif %}{% endfor %}", "text built"),
    (MILLION + "{% for i in range(99999) %}{% set x = s[::-1] %}{% endfor %}", "text built"),
    (MILLION + "{% for i in range(99999) %}{% if s is lower %}{% endif %}{% endfor %}", "text built"),
    (MILLION + "{% for i in range(99999) %}{% set x = s | trim %}{% endfor %}", "text built"),
    ("{{ (range(100000) | list) | tojson(indent=10000) | length }}", "indented JSON text"),
    # Namespaces change in place: ten of them sharing one leaf, which then grows, print 2^10 copies of it.
    (GROWN + "{{ n9 | string | length }}", "text is longer"),
    (GROWN + "{{ n9 is lower }}", "text is longer"),
    (GROWN + "{{ n9 }}", "text is longer"),
    (GROWN + "{{ '%s' % n9 }}", "formatted text"),
    (GROWN + "{{ '{}'.format(n9) }}", "formatted text"),
    (GROWN + "{{ n9 ~ '' }}", "joined text"),
]


@pytest.mark.parametrize(("body", "message"), BOMBS)
def test_a_template_bomb_is_refused_at_load_at_once_and_in_little_memory(
    tmp_path: Path, body: str, message: str
) -> None:
    """Refused before its work is done: in well under a second (2 s allows for a busy machine) and
    with a peak of Python memory far below what the operation asked for (hundreds of MB to GB)."""
    folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + body + "\n")
    began = time.perf_counter()
    with pytest.raises(InputError) as info:
        Templates.load(folder)
    seconds = time.perf_counter() - began
    assert info.value.file == str(folder / "judge.jinja")
    assert "TemplateBudgetError" in info.value.message and message in info.value.message, info.value.message
    assert seconds < 2.0
    tracemalloc.start()
    try:
        with pytest.raises(InputError):
            Templates.load(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_a_template_including_itself_is_refused_at_once(tmp_path: Path) -> None:
    """Each include counts as a call; deep enough, Python's recursion limit stops it first."""
    folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + "{% include 'judge' %}{% include 'judge' %}\n")
    began = time.perf_counter()
    with pytest.raises(InputError, match="RecursionError|more than 100000 calls") as info:
        Templates.load(folder)
    assert time.perf_counter() - began < 2.0
    assert info.value.file == str(folder / "judge.jinja")


def test_a_bomb_names_its_line(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + "\n{{ '{:{}}'.format(1, 300000000) }}\n")
    with pytest.raises(InputError) as info:
        Templates.load(folder)
    assert (info.value.file, info.value.line) == (str(folder / "judge.jinja"), 3)


def test_a_bound_reached_only_on_long_data_is_refused_when_rendered(tmp_path: Path) -> None:
    custom = Templates.load(user_folder(tmp_path, judge=PAIR_TEMPLATE + "{{ response_a.replace('a', response_a) }}\n"))
    assert custom.judge(CONVERSATION, "ab", "b", "Q?").endswith("\nabb")
    began = time.perf_counter()
    with pytest.raises(InputError) as info:
        custom.judge(CONVERSATION, "a" * 100_000, "b", "Q?")  # 10^10 characters
    assert time.perf_counter() - began < 1.0
    assert info.value.file == str(tmp_path / "prompts" / "judge.jinja")
    assert "replaced text longer than 2000000" in info.value.message


def test_templates_nested_too_deeply_to_compile_are_refused(tmp_path: Path) -> None:
    for body in ["{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "{% if 1 %}" * 200 + "{% endif %}" * 200]:
        folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + body + "\n")
        with pytest.raises(InputError, match="nested too deeply to compile") as info:
            Templates.load(folder)
        assert info.value.file == str(folder / "judge.jinja")


def test_a_literal_number_too_long_to_read_is_refused(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, judge=PAIR_TEMPLATE + "{{ 1 }}\n{{ " + "9" * 5000 + " }}\n")
    with pytest.raises(InputError, match="number of more than 4300 digits") as info:
        Templates.load(folder)
    assert (info.value.file, info.value.line) == (str(folder / "judge.jinja"), 3)


# Ordinary uses of every bounded operation: the bounded sandbox renders them as jinja2's own does.
ORDINARY = [
    "{{ '%s: %s' % ('user', 'hello') }} {{ '%5.2f|%-4d|%%' % (3.14159, 7) }} {{ '%(a)s' % {'a': 1} }}",
    "{{ '{:>10}|{:^7}|{:.3f}|{!r}'.format('a', 'b', 2.5, 'c') }} {{ '{x}'.format_map({'x': 1}) }}",
    "{{ '%d items' | format(3) }} {{ 'ab' * 3 }} {{ [1, 2] * 2 }} {{ 2 ** 100 }} {{ 7 * 6 }} {{ 2 ** -1 }}",
    "{{ 'a' ~ 1 ~ [2] }} {{ 'x' + 'y' }} {{ [1] + [2] }} {{ (1, 2) + (3,) }} {{ 10 // 3 }} {{ 10 % 3 }}",
    "{{ 'a-b-c'.replace('-', '+') }} {{ ', '.join(['a', 'b']) }} {{ 'x'.center(9, '*') }} {{ 'a\tb'.expandtabs(4) }}",
    "{{ 'a b  c'.split() }} {{ 'a,b'.split(',') }} {{ 'a\nb'.splitlines() }} {{ 'abc'.translate({97: 'A'}) }}",
    "{{ ['a', 'b'] | join('-') }} {{ 'hello world' | replace('o', '0') }} {{ 'hi' | center(8) }} {{ 'a\nb' | indent }}",
    "{{ ('word ' * 40) | wordwrap(30) }} {{ ('x' * 300) | truncate(20) }} {{ [[1], [2, 3]] | sum(start=[]) }}",
    "{{ [1, 2, 3] | sum }} {{ [1, 2, 3, 4, 5] | batch(2, 0) | list }} {{ [1, 2, 3] | slice(2) | list }}",
    "{{ [1, 2, 3] | batch(linecount=2) | list }} {{ [1, 2, 3] | slice(slices=2, fill_with=0) | list }}",
    "{{ 'a b' | wordwrap(width=3, wrapstring='|') }} {{ 'a\nb' | indent(width='> ', first=True) }}",
    "{{ '{!r:>8}'.format('a') }} {{ 'a' | center(width=5) }} {{ 'abcdef' | truncate(length=5, end='.') }}",
    "{{ 'hello world' | wordcount }} {{ range(100000) | list | length }} {{ 'visit http://x.org' | urlize }}",
    "{{ conversation | map(attribute='content') | join(' / ') }} {{ conversation | tojson }} {{ dict(a=1) }}",
    "{% set n = namespace(t='') %}{% for m in conversation %}{% set n.t = n.t ~ m.role %}{% endfor %}{{ n.t }}",
    "{% macro turn(m) %}[{{ m.role }}] {{ m.content }}{% endmacro %}"
    "{% for m in conversation %}{{ turn(m) }}{% endfor %}"
    "{% for m in conversation recursive %}{{ m.role }}{% endfor %}",
    "{% set x %}{% for i in range(3) %}{{ i }},{% endfor %}{% endset %}{{ x }} {% filter upper %}up{% endfilter %}",
    "{{ [3, 1, 2] | sort }} {{ 'cab' | list | sort | join }} {{ {'b': 1, 'a': 2} | dictsort }}",
    "{{ [1, 1] | unique | list }} {{ conversation | groupby('role') }} {{ 'ab' | reverse }} {{ [1, 2] | max }}",
    "{{ conversation | tojson(indent=2) }} {{ 'ab' is lower }}",
    "{{ conversation | selectattr('role', 'eq', 'user') | list }} {{ 'abc'[1:] }} {{ [1, 2, 3][::2] }} {{ 'abc'[0] }}",
    "{{ nothing | default('d') }} {{ nothing is defined }}",
    "{% for k, v in {'a': 1} | dictsort %}{{ k }}{{ v }}{% endfor %}",
    "{% for x in [1, 2, 3] %}{{ loop.index }}{{ loop.cycle('a', 'b') }}{% if loop.last %}.{% endif %}{% endfor %}",
    "{{ 1 < 2 < 3 }} {{ 'a' in 'abc' }} {{ 2 in [1, 2] }} {{ 'a' == 'a' }} {{ [1] != [2] }} {{ 'b' not in 'abc' }}",
]


@pytest.mark.parametrize("body", ORDINARY)
def test_ordinary_operations_render_as_in_jinja2(body: str) -> None:
    data = {"conversation": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    expected = ImmutableSandboxedEnvironment().from_string(body).render(data)
    token = start_budget()
    try:
        assert BoundedSandbox(loader=jinja2.DictLoader({})).from_string(body).render(data) == expected
    finally:
        stop_budget(token)


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
