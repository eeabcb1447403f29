"""The jinja2 sandbox user templates render in, bounded in time and memory.

jinja2's immutable sandbox stops a template from reaching Python's internals, but not from asking for
a 300 MB string (`'{:{}}'.format(1, 300000000)`), a number of a billion digits (`(7**4096)**4096`) or
a loop of a trillion steps. Every operation a template can run is checked here *before* it runs, so a
template over a bound fails at once with `TemplateBudgetError` instead of filling memory, or running
for minutes inside one C call where no deadline can interrupt it:

- every value a template builds (by an operator, a literal, a call, a filter) has a text size of at
  most `MAX_VALUE_CHARS`, at most `MAX_ITEMS` items and integers of at most `MAX_INT_BITS` bits, and
  is nested at most `MAX_DEPTH` deep; an operation whose result would be larger is refused from the
  sizes of its operands (a repetition, a power, a `replace`, a `join`, a format width) before it runs;
- a rendering runs at most `MAX_LOOP_ITERATIONS` loop iterations and `MAX_CALLS` calls (macros,
  methods, includes), writes at most `MAX_WRITTEN_CHARS` of text (counting what macros and captured
  blocks write), builds or scans at most `MAX_BUILT_CHARS` (an operation on a long text repeated in
  a loop), and stops at its deadline (checked at every iteration and call).

Since values are bounded, every other operation (a comparison, a sort, a conversion to text, `upper`
or `tojson`, whose results are at most a few times longer than their input and are checked once
built) costs at most a constant factor of `MAX_VALUE_CHARS`. Checking before computing keeps the
cost of a rendering at a few microseconds; a subprocess with resource limits would cost more per
rendering than the rendering itself, thousands of times a batch.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import math
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

MAX_LOOP_ITERATIONS = 100_000
MAX_CALLS = 100_000
MAX_OUTPUT_CHARS = 2_000_000
MAX_WRITTEN_CHARS = 2 * MAX_OUTPUT_CHARS  # macros and {% set %} blocks write text that is written again
MAX_VALUE_CHARS = MAX_OUTPUT_CHARS
MAX_BUILT_CHARS = 50 * MAX_VALUE_CHARS  # all the text one rendering's operations build or scan
MAX_ITEMS = 100_000  # jinja2's own cap on range()
MAX_INT_BITS = 14_000  # about 4200 digits: below the 4300 Python converts to text
MAX_DEPTH = 32
MAX_WIDTH = 10_000
MAX_RENDER_SECONDS = 10.0

_WIDE_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_TEXT = (str, bytes, bytearray)
_DICT_VIEWS: tuple[type[Collection[Any]], ...] = (type({}.keys()), type({}.values()), type({}.items()))
_CONTAINERS: tuple[type[Collection[Any]], ...] = (list, tuple, set, frozenset, *_DICT_VIEWS)

# %-format conversions: an optional (key), flags, width, precision, length modifier, conversion type.
_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)
_DIGITS = re.compile(r"\d+")
_WORD = re.compile(r"\S+")
# Characters str.split() and str.splitlines() split at (the second set is a subset of the first).
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


class TemplateBudgetError(Exception):
    """A template went over one of the bounds on rendering."""


@dataclass
class Budget:
    """What one rendering may still spend; `start` begins one (all renderings share no state)."""

    deadline: float = float("inf")
    iterations: int = MAX_LOOP_ITERATIONS
    calls: int = MAX_CALLS
    written: int = MAX_WRITTEN_CHARS
    built: int = MAX_BUILT_CHARS


_BUDGET: contextvars.ContextVar[Budget] = contextvars.ContextVar("template_budget")


def start(seconds: float = MAX_RENDER_SECONDS) -> contextvars.Token[Budget]:
    """Begin the budget of one rendering (give the token to `stop` when it ends)."""
    return _BUDGET.set(Budget(deadline=time.monotonic() + seconds))


def stop(token: contextvars.Token[Budget]) -> None:
    _BUDGET.reset(token)


def _budget() -> Budget:
    # Outside a rendering (jinja2 folding constants at compile time) a fresh, unlimited-time budget.
    return _BUDGET.get(None) or Budget()


def _check_deadline(budget: Budget) -> None:
    if time.monotonic() > budget.deadline:
        raise TemplateBudgetError(f"rendering took longer than {MAX_RENDER_SECONDS:.0f} s")


def _spend_call() -> None:
    budget = _budget()
    budget.calls -= 1
    if budget.calls < 0:
        raise TemplateBudgetError(f"more than {MAX_CALLS} calls (macros, methods, includes) in one rendering")
    _check_deadline(budget)


def _spend_built(size: int) -> None:
    budget = _budget()
    budget.built -= size
    if budget.built < 0:
        raise TemplateBudgetError(f"more than {MAX_BUILT_CHARS} characters of text built in one rendering")


# --- sizes ----------------------------------------------------------------------------------------


def text_size(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters `str(value)` has (a number above `limit` once it is over it).

    Containers are walked (each shared one once), so a list holding the same long text many times
    is measured without building its text. Raises `TemplateBudgetError` for values nested deeper than
    `MAX_DEPTH` (a namespace holding itself, or a list built by wrapping itself in a loop).

    >>> text_size(["ab", 7])
    12
    """
    return _text_size(value, limit, 0, {})


def _text_size(value: Any, limit: int, depth: int, seen: dict[int, int]) -> int:
    if isinstance(value, str):
        return len(value) + 2  # quotes, as repr() writes it inside a container
    if type(value) is int:
        return value.bit_length() * 3 // 10 + 2  # log10(2) ~ 0.301 digits per bit
    if isinstance(value, bytes | bytearray):
        return 4 * len(value) + 3  # at worst \xNN per byte
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 3 // 10 + 2  # log10(2) ~ 0.301 digits per bit
    if isinstance(value, float):
        return 24
    if isinstance(value, Undefined):
        return 0
    items: Iterable[Any]
    if isinstance(value, _CONTAINERS):
        items = value
    elif isinstance(value, dict | Mapping):
        items = itertools.chain.from_iterable(value.items())
    elif isinstance(value, Namespace):
        return 13 + _text_size(value._Namespace__attrs, limit, depth + 1, seen)  # <Namespace {...}>
    else:
        return 100  # an object's repr: a macro, a cycler, a range, a generator
    if id(value) in seen:
        return seen[id(value)]
    if depth >= MAX_DEPTH:
        raise TemplateBudgetError(f"a value nested deeper than {MAX_DEPTH} levels")
    total = 2  # the brackets
    item: Any
    for item in items:
        total += _text_size(item, limit - total, depth + 1, seen) + 2
        if total > limit:
            break
    seen[id(value)] = total
    return total


def bounded(value: Any) -> Any:
    """`value` if it is within the bounds on values (an iterator comes back counting its items).

    Its size is spent from the rendering's budget of text built: an operation repeated in a loop on
    long texts stops there, long before the deadline."""
    if isinstance(value, _TEXT):
        if len(value) > MAX_VALUE_CHARS:
            raise TemplateBudgetError(f"a text of more than {MAX_VALUE_CHARS} characters")
        _spend_built(len(value))
    elif isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise TemplateBudgetError(f"an integer of more than {MAX_INT_BITS} bits")
    elif isinstance(value, Iterator) and not isinstance(value, Undefined):
        return _counted(value)
    elif isinstance(value, _CONTAINERS) or isinstance(value, Mapping | Namespace):
        if isinstance(value, Sized) and len(value) > MAX_ITEMS:
            raise TemplateBudgetError(f"a list or mapping of more than {MAX_ITEMS} items")
        size = text_size(value)
        if size > MAX_VALUE_CHARS:
            raise TemplateBudgetError(f"a value whose text is longer than {MAX_VALUE_CHARS} characters")
        _spend_built(size)
    return value


def _counted(items: Iterator[Any]) -> Iterator[Any]:
    """The items of a lazy sequence (a filter's generator), each bounded: at most MAX_ITEMS of them,
    of at most MAX_VALUE_CHARS of text together (so reading them all into a list is bounded too)."""
    budget, size = _budget(), 0
    for count, item in enumerate(items):
        size += len(item) if isinstance(item, _TEXT) else text_size(item)
        if count >= MAX_ITEMS or size > MAX_VALUE_CHARS:
            raise TemplateBudgetError(f"a sequence of more than {MAX_ITEMS} items or {MAX_VALUE_CHARS} characters")
        _check_deadline(budget)
        yield bounded(item)


def _collect(items: Iterable[Any], separator: int = 0) -> Sequence[Any]:
    """`items` read into a list to be joined with a separator of `separator` characters, refused as soon
    as the joined text would pass MAX_VALUE_CHARS (before reading the rest)."""
    if isinstance(items, str):  # its characters, counted at once
        _refuse_above(len(items) * (1 + separator), "a joined text")
        return items
    if isinstance(items, list | tuple):
        if len(items) > MAX_ITEMS:
            raise TemplateBudgetError(f"a join of more than {MAX_ITEMS} items")
        _refuse_above(_sizes(items) + separator * max(len(items) - 1, 0), "a joined text")
        return items
    collected: list[Any] = []
    size = 0
    for item in items:
        size += _sizes([item]) + (separator if collected else 0)
        if len(collected) >= MAX_ITEMS:
            raise TemplateBudgetError(f"a join of more than {MAX_ITEMS} items")
        _refuse_above(size, "a joined text")
        collected.append(item)
    return collected


def _sizes(items: Iterable[Any]) -> int:
    return sum(len(item) if isinstance(item, _TEXT) else text_size(item) for item in items)


def _refuse_above(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        raise TemplateBudgetError(f"{what} longer than {MAX_VALUE_CHARS} characters")


def _check_width(*values: object) -> None:
    if any(isinstance(v, int) and abs(v) > MAX_WIDTH for v in values):
        raise TemplateBudgetError(f"a width or repeat count above {MAX_WIDTH}")


def _number(digits: str) -> int:
    """A width or precision written in a format; one too long to convert is simply too large."""
    return int(digits) if len(digits) <= 6 else MAX_WIDTH + 1


# --- operators ------------------------------------------------------------------------------------


def _check_repeat(sequence: Any, count: Any) -> None:
    if not isinstance(sequence, (*_TEXT, list, tuple)) or not isinstance(count, int) or count < 2:
        return
    if isinstance(sequence, _TEXT):
        too_long = len(sequence) * count > MAX_VALUE_CHARS
    else:
        too_long = len(sequence) * count > MAX_ITEMS or text_size(sequence) * count > MAX_VALUE_CHARS
    if too_long:
        raise TemplateBudgetError(f"a repetition longer than {MAX_OUTPUT_CHARS}")


def _check_power(base: Any, exponent: Any) -> None:
    """Refuse an integer power whose result would have more than MAX_INT_BITS bits, before computing it."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise TemplateBudgetError(f"an integer of more than {MAX_INT_BITS} bits")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `left operator right` when its result would be over a bound (judged from the operands)."""
    if operator == "*":
        _check_repeat(left, right)
        _check_repeat(right, left)
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateBudgetError(f"an integer of more than {MAX_INT_BITS} bits")
    elif operator == "**":
        _check_power(left, right)
    elif operator == "+" and isinstance(left, _TEXT) and isinstance(right, _TEXT):
        _refuse_above(len(left) + len(right), "a joined text")
    elif operator == "+" and isinstance(left, list | tuple) and isinstance(right, list | tuple):
        if len(left) + len(right) > MAX_ITEMS:  # the text size is checked on the result, as for any value
            raise TemplateBudgetError(f"a list or mapping of more than {MAX_ITEMS} items")
    elif operator == "%" and isinstance(left, _TEXT):
        check_percent(left.decode("latin-1") if isinstance(left, bytes | bytearray) else left, right)


def check_percent(template: str, values: Any) -> None:
    """Refuse `template % values` when a width or precision is over MAX_WIDTH (or taken from the values,
    `'%*d'`), or when the text it builds would be longer than MAX_VALUE_CHARS."""
    size, position = len(template), 0
    for match in _PERCENT_SPEC.finditer(template):
        key, width, precision, conversion = match.groups()
        if conversion == "%":
            continue
        for number in (width, precision):
            if number == "*" or (number is not None and _number(number) > MAX_WIDTH):
                raise TemplateBudgetError(f"a format width above {MAX_WIDTH}")
            size += _number(number) if number is not None else 0
        if key is not None and isinstance(values, Mapping):
            value = values.get(key)
        elif isinstance(values, tuple):
            value = values[position] if position < len(values) else None
            position += 1
        else:
            value = values
        size += _sizes([value])
    _refuse_above(size, "a formatted text")


# --- calls ----------------------------------------------------------------------------------------


def _replaced_size(text: str | bytes | bytearray, old: Any, new: Any, count: Any = -1) -> int:
    """The length of `text.replace(old, new, count)`, counted without building it."""
    if not isinstance(old, _TEXT) or not isinstance(new, _TEXT):
        return len(text)  # replace() raises TypeError
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]  # old matches text's type or replace() raises
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _pieces(text: str | bytes | bytearray, separator: Any, limit: Any, breaks: str = _WHITESPACE) -> int:
    """At most how many pieces `text.split(separator, limit)` has, counted without splitting."""
    if isinstance(separator, _TEXT) and separator:
        found = text.count(separator)  # type: ignore[arg-type]  # split() raises on a mismatched type
    elif isinstance(text, str):
        found = sum(map(text.count, breaks))
    else:
        found = sum(map(text.count, (c.encode() for c in " \t\n\r\x0b\x0c")))
    if isinstance(limit, int) and limit >= 0:
        found = min(found, limit)
    return found + 1


def _first(args: Sequence[Any], kwargs: Mapping[str, Any], position: int, name: str, default: Any) -> Any:
    """Argument `name` of a call, given by position or by keyword."""
    return args[position] if len(args) > position else kwargs.get(name, default)


def check_text_method(
    text: str | bytes | bytearray, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Refuse a call of `text.name(*args, **kwargs)` whose result would be over a bound; the arguments to
    call it with (a joined iterable read once into a list, so it is measured and joined the same)."""
    if name in _WIDE_METHODS:
        _check_width(*args, *kwargs.values())
    if name == "expandtabs":
        tabsize = _first(args, kwargs, 0, "tabsize", 8)
        tabs = text.count("\t" if isinstance(text, str) else b"\t")  # type: ignore[arg-type]
        if isinstance(tabsize, int):
            _refuse_above(len(text) + tabs * tabsize, "an expanded text")
    elif name == "replace" and args:
        old, new = _first(args, kwargs, 0, "old", ""), _first(args, kwargs, 1, "new", "")
        _refuse_above(_replaced_size(text, old, new, _first(args, kwargs, 2, "count", -1)), "a replaced text")
    elif name == "join" and len(args) == 1 and not kwargs and isinstance(args[0], Iterable):
        args = (_collect(args[0], len(text)),)
    elif name == "translate" and args and isinstance(args[0], Mapping | Sequence):
        table = args[0].values() if isinstance(args[0], Mapping) else args[0]
        widest = max((len(v) if isinstance(v, _TEXT) else 1 for v in table), default=1)
        _refuse_above(len(text) * widest, "a translated text")
    elif name in ("split", "rsplit"):
        separator, limit = _first(args, kwargs, 0, "sep", None), _first(args, kwargs, 1, "maxsplit", -1)
        if _pieces(text, separator, limit) > MAX_ITEMS:
            raise TemplateBudgetError(f"a split into more than {MAX_ITEMS} pieces")
    elif name == "splitlines" and _pieces(text, None, -1, _LINE_BREAKS) > MAX_ITEMS:
        raise TemplateBudgetError(f"a split into more than {MAX_ITEMS} pieces")
    return args


class BoundedFormatter(SandboxedFormatter):
    """str.format in the sandbox, refusing a field wider than MAX_WIDTH (even one whose width is itself
    a field, `'{:{}}'`) and stopping once the text it builds passes MAX_VALUE_CHARS."""

    _size = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def _add(self, text: str) -> str:
        self._size += len(text)
        _refuse_above(self._size, "a formatted text")
        return text

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is None:
            return value
        _refuse_above(self._size + _sizes([value]), "a formatted text")
        return super().convert_field(value, conversion)  # its text is counted by format_field, next

    def format_field(self, value: Any, format_spec: str) -> Any:
        if any(_number(n) > MAX_WIDTH for n in _DIGITS.findall(format_spec)):
            raise TemplateBudgetError(f"a format width above {MAX_WIDTH}")
        _refuse_above(self._size + _sizes([value]), "a formatted text")
        return self._add(super().format_field(value, format_spec))


# --- filters --------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _widths_check(value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_width(*args, *kwargs.values())
    return value


def _indent_check(value: Any, width: Any = 4, first: bool = False, blank: bool = False) -> Any:
    _check_width(width)
    text = _text(value)
    indent = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _refuse_above(len(text) + (text.count("\n") + 1) * max(indent, 0), "an indented text")
    return text


def _wordwrap_check(value: Any, width: Any = 79, break_long_words: bool = True, wrapstring: Any = None,
                    break_on_hyphens: bool = True) -> Any:  # fmt: skip
    _check_width(width)
    text = _text(value)
    wrap = len(wrapstring) if isinstance(wrapstring, str) else 1
    _refuse_above(len(text) + (len(text) + 1) * wrap, "a wrapped text")  # at worst a break after each character
    # textwrap cuts a word longer than the width in time quadratic in the word's length.
    longest = 500 * width if isinstance(width, int) else MAX_VALUE_CHARS
    if len(text) > longest and any(len(word.group()) > longest for word in _WORD.finditer(text)):
        raise TemplateBudgetError(f"a word over {longest} characters to wrap at width {width}")
    return text


def _urlize_check(value: Any, *args: Any, **kwargs: Any) -> Any:
    text = _text(value)
    if len(text) > MAX_VALUE_CHARS // 20:  # urlize looks at each word in Python, ~10 us a word
        raise TemplateBudgetError(f"urlize of a text longer than {MAX_VALUE_CHARS // 20} characters")
    return text


def _replace_check(value: Any, old: Any, new: Any, count: Any = None) -> Any:
    text = _text(value)
    _refuse_above(_replaced_size(text, old, new, -1 if count is None else count), "a replaced text")
    return text


def _format_check(value: Any, *args: Any, **kwargs: Any) -> Any:
    text = _text(value)
    check_percent(text, kwargs or args)
    return text


def _join_check(value: Any, d: Any = "", attribute: Any = None) -> Any:
    # An attribute of an item is part of the item: the item's size bounds it.
    return _collect(value, len(_text(d)))


def _tojson_check(value: Any, indent: Any = None) -> Any:
    if isinstance(indent, int | str):
        width = indent if isinstance(indent, int) else len(indent)
        _check_width(width)
        _refuse_above(_indented_size(value, max(width, 0), 0), "an indented JSON text")
    return value


def _indented_size(value: Any, width: int, depth: int) -> int:
    """About how long json.dumps(value, indent=width) is: each item on a line of its own, indented."""
    if depth > MAX_DEPTH:
        raise TemplateBudgetError(f"a value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        items = list(itertools.chain.from_iterable(value.items()))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return text_size(value)
    total = 2 + width * depth
    for item in items:
        total += width * (depth + 1) + 2 + _indented_size(item, width, depth + 1)
        if total > MAX_VALUE_CHARS:
            break
    return total


def _count_check(value: Any, *args: Any, **kwargs: Any) -> Any:
    count = _first(args, kwargs, 0, "linecount", kwargs.get("slices"))
    if isinstance(count, int) and count > MAX_ITEMS:
        raise TemplateBudgetError(f"more than {MAX_ITEMS} items in a batch or slice")
    return value


def _items_check(value: Any, *args: Any, **kwargs: Any) -> Any:
    if hasattr(value, "__len__") and not isinstance(value, Undefined) and len(value) > MAX_ITEMS:
        raise TemplateBudgetError(f"a list of more than {MAX_ITEMS} items")
    return value


_FILTER_CHECKS: dict[str, Callable[..., Any]] = {
    "center": _widths_check,
    "truncate": _widths_check,
    "indent": _indent_check,
    "wordwrap": _wordwrap_check,
    "replace": _replace_check,
    "format": _format_check,
    "join": _join_check,
    "urlize": _urlize_check,
    "tojson": _tojson_check,
    "batch": _count_check,
    "slice": _count_check,
    "list": _items_check,
    "sort": _items_check,
    "dictsort": _items_check,
    "groupby": _items_check,
    "sum": _items_check,
}


# Filters and tests that take the same time for any text: they are not charged for reading it.
_CONSTANT_TIME = frozenset(
    {"length", "count", "default", "d", "first", "last", "safe", "random", "attr", "defined", "undefined", "none"}
    | {"string", "number", "sameas", "boolean", "mapping", "sequence"}
)


def _check_input(value: Any) -> None:
    """Refuse a filter's or test's input whose text is over the bound: most of them convert it to text,
    and a namespace can have grown since it was measured (`{% set ns.x = ... %}` changes it in place)."""
    if not isinstance(value, str | int | float) and text_size(value) > MAX_VALUE_CHARS:
        raise TemplateBudgetError(f"a value whose text is longer than {MAX_VALUE_CHARS} characters")


def _bounded_filter(
    name: str, function: Callable[..., Any], checks: Mapping[str, Callable[..., Any]]
) -> Callable[..., Any]:
    """`function` (a filter or a test) with its input checked, by its own check in `checks` if it has
    one, and its result bounded."""
    check = checks.get(name)
    skip = 0 if getattr(function, "jinja_pass_arg", None) is None else 1  # a context or environment first
    scans = name not in _CONSTANT_TIME  # most filters and tests read all of a text they are given

    @functools.wraps(function)  # keeps jinja_pass_arg, so jinja2 passes what the filter asks for
    def run(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip:
            _check_input(args[skip])
            if scans and isinstance(args[skip], _TEXT):
                _spend_built(len(args[skip]))
            if check is not None:
                value = check(*args[skip:], **kwargs)
                args = (*args[:skip], value, *args[skip + 1 :])
        return bounded(function(*args, **kwargs))

    return run


@jinja2.pass_environment
def _sum(environment: jinja2.Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    """jinja2's `sum` filter, adding lists or tuples in one pass (adding them one by one takes time
    quadratic in their number)."""
    items = list(iterable)
    if attribute is not None:
        getter = jinja2.filters.make_attrgetter(environment, attribute)
        items = [getter(item) for item in items]
    if not isinstance(start, list | tuple):
        return sum(items, start)  # numbers (bounded in size), or a TypeError at the first other value
    first: Any = start
    kind = type(first)
    same = list(itertools.takewhile(lambda item: type(item) is kind, items))
    if sum(map(len, same)) + len(start) > MAX_ITEMS:
        raise TemplateBudgetError(f"a sum of more than {MAX_ITEMS} items")
    _refuse_above(text_size(same) + text_size(start), "a sum")
    total = first + kind(itertools.chain.from_iterable(same))
    for item in items[len(same) :]:
        total = total + item  # another kind of value: raises TypeError as sum() does
    return total


def _wordcount(text: Any) -> int:
    """jinja2's `wordcount`, counting matches without building a list of every word."""
    return sum(1 for _ in jinja2.filters._word_re.finditer(_text(text)))


# --- the environment ------------------------------------------------------------------------------


def budgeted(items: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, each one spent from the rendering's budget of iterations and time."""
    budget = _budget()
    for item in items:
        budget.iterations -= 1
        if budget.iterations < 0:
            raise TemplateBudgetError(f"more than {MAX_LOOP_ITERATIONS} loop iterations in one rendering")
        _check_deadline(budget)
        yield item


@jinja2.pass_context  # never folded into a constant at compile time: every rendering counts its text
def _emit(context: Context, value: Any) -> Any:
    """A value about to be written (output, a macro's text, a captured block), spent from the budget."""
    budget = _budget()
    if not isinstance(value, str):
        _check_input(value)  # a namespace may have grown since it was built
    budget.written -= len(value) if isinstance(value, str) else text_size(value)
    if budget.written < 0:
        raise TemplateBudgetError(f"more than {MAX_WRITTEN_CHARS} characters written in one rendering")
    return value


def _scanned(value: Any) -> Any:
    """An operand of a comparison (`==`, `<`, `in`), whose length it costs from the budget of text built
    and scanned (comparing long texts in a loop stops there)."""
    if isinstance(value, (*_TEXT, list, tuple, dict)):
        _spend_built(len(value))
    return value


def _concat(items: Sequence[Any]) -> str:
    """The `~` operator: the texts of `items` joined, refused before joining when too long."""
    _refuse_above(sum(len(item) if isinstance(item, str) else text_size(item) for item in items), "a joined text")
    return "".join(map(str, items))


class _Bounds(NodeTransformer):
    """Rewrites a parsed template so each loop, text written, `~`, comparison, slice and literal goes
    through a check."""

    @staticmethod
    def _filter(node: nodes.Node, name: str) -> nodes.Filter:
        return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)

    @staticmethod
    def _as_expression(node: nodes.Node) -> nodes.Expr:
        # Literal template text is written like any value (and so counted), not folded in at compile time.
        if isinstance(node, nodes.TemplateData):
            return nodes.Const(node.data, lineno=node.lineno)
        assert isinstance(node, nodes.Expr)  # an Output holds template text and expressions only
        return node

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = self._filter(node.iter, "_budgeted")
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        self.generic_visit(node)
        node.nodes = [self._filter(self._as_expression(child), "_emit") for child in node.nodes]
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Compare:
        self.generic_visit(node)
        node.expr = self._filter(node.expr, "_scanned")
        for operand in node.ops:
            operand.expr = self._filter(operand.expr, "_scanned")
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Expr:
        self.generic_visit(node)
        # A slice (jinja2 compiles it to plain Python, past the sandbox) is a new value, spent from the
        # budget of text built as any other.
        return self._filter(node, "_bounded") if isinstance(node.arg, nodes.Slice) and node.ctx == "load" else node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        return self._filter(nodes.List(node.nodes, lineno=node.lineno), "_concat")

    def _literal(self, node: nodes.Tuple | nodes.List | nodes.Dict) -> nodes.Expr:
        self.generic_visit(node)
        return node if getattr(node, "ctx", "load") != "load" else self._filter(node, "_bounded")

    visit_Tuple = visit_List = visit_Dict = _literal


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with every operation, loop, call and text written bounded."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters.update(sum=_sum, wordcount=_wordcount)
        for name, function in list(self.filters.items()):
            self.filters[name] = _bounded_filter(name, function, _FILTER_CHECKS)
        for name, test in list(self.tests.items()):
            self.tests[name] = _bounded_filter(name, cast(Callable[..., Any], test), {})
        self.filters.update(_budgeted=budgeted, _emit=_emit, _concat=_concat, _bounded=bounded, _scanned=_scanned)
        del self.globals["lipsum"]  # generates text of any length

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        result: nodes.Template = _Bounds().visit(tree)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return bounded(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _spend_call()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, _TEXT) and callable(__obj):
            _spend_built(len(owner))  # a method scans its text (count, find, strip): each call costs that
            args = check_text_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return bounded(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format and str.format_map through `BoundedFormatter` (jinja2's own, with the bounds)."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None or not isinstance(value.__self__, str):
            return wrapped
        text, is_map = value.__self__, value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if not is_map:
                return type(text)(BoundedFormatter(self).vformat(text, args, kwargs))
            if kwargs or len(args) != 1:
                return wrapped(*args, **kwargs)  # jinja2's own TypeError
            return type(text)(BoundedFormatter(self).vformat(text, (), args[0]))

        return functools.update_wrapper(bounded_format, value)

    def get_template(self, *args: Any, **kwargs: Any) -> jinja2.Template:
        """A template by name; an {% include %}, {% import %} or {% extends %} counts as a call."""
        if _BUDGET.get(None) is not None:
            _spend_call()
        return super().get_template(*args, **kwargs)

    def select_template(self, *args: Any, **kwargs: Any) -> jinja2.Template:
        if _BUDGET.get(None) is not None:
            _spend_call()
        return super().select_template(*args, **kwargs)


__all__ = [
    "MAX_BUILT_CHARS",
    "MAX_CALLS",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "MAX_LOOP_ITERATIONS",
    "MAX_OUTPUT_CHARS",
    "MAX_RENDER_SECONDS",
    "MAX_VALUE_CHARS",
    "MAX_WIDTH",
    "MAX_WRITTEN_CHARS",
    "BoundedSandbox",
    "TemplateBudgetError",
    "bounded",
    "start",
    "stop",
    "text_size",
]
