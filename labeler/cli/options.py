"""Command-line options derived from the config models: each option's help, type and default are its field's.

A command lists which config fields it exposes (`Opt("judge.model", "--judge-model")`); the typer
signature is built from the fields, and the values given on the command line (only those: pydantic
fills in every default) become the nested config data, validated once. A bad value is one
`InputError` per problem, naming the option and the value (exit code 2), as vLLM's `SamplingParams`
names the parameter.

    COMMAND = ConfigCommand("label", LabelConfig, (Opt("constitution"), *engine_options("judge")), run_label)
    COMMAND.register(app)
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from typer.core import TyperArgument, TyperCommand

from labeler.core.errors import InputError, InputErrors, show_fields

ENGINE_PANEL = "Engine"
MAX_INTEGER = 2**63 - 1  # the largest C int64: what islice, numpy and torch take as a count or a seed
WORK_PANEL = "Work selection"


class _NamedArgument(TyperArgument):
    """An argument shown in help by its metavar alone (`FILE`), without typer's type (`<list[Path]>`)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.metavar is not None else super().display_type_rich(ctx)


class Command(TyperCommand):
    """A labeler command: its arguments with a metavar show as that metavar in help (`PATH`, `RUN`), where
    typer would append the annotation's type (`FILE <list[Path]>`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _NamedArgument  # typer takes no argument class; this one adds no state

    def invoke(self, ctx: Any) -> Any:
        """Run the command; Ctrl-C ends it with exit code 130 and says how to go on (every write is
        atomic, so what was committed stays, and a rerun resumes after it)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            print("\ninterrupted: rerun the same command to resume", file=sys.stderr, flush=True)
            raise typer.Exit(130) from None


@dataclass(frozen=True)
class Opt:
    """One command-line option (or argument) bound to a field of the command's config, by dotted path."""

    path: str
    flag: str | None = None  # default: "--" + the path's last part, dashed
    parse: Callable[[Any], Any] | None = None  # what typer gives -> the field's value (ValueError: bad input)
    cli_type: Any = None  # the type typer parses, when not the field's own
    argument: bool = False  # a positional argument instead of an option
    metavar: str | None = None
    panel: str | None = None  # the --help section it is listed in
    extra_help: str = ""
    renamed_from: tuple[str, ...] = ()  # old flags: refused with a message naming this one
    merge_file: bool = False  # the value is a YAML file of the fields under `path` (given options win)

    @property
    def name(self) -> str:
        return self.path.replace(".", "__") + ("__file" if self.merge_file else "")

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.path.rsplit(".", 1)[-1].replace("_", "-")


def field_at(model: type[BaseModel], path: str) -> FieldInfo:
    """The pydantic field at a dotted path through nested models.

    >>> from labeler.stages.label import LabelConfig
    >>> field_at(LabelConfig, "judge.dtype").default
    'auto'
    """
    parts = path.split(".")
    current: type[BaseModel] = model
    for part in parts[:-1]:
        current = _model_in(current.model_fields[part].annotation, f"{model.__name__}.{path}")
    return current.model_fields[parts[-1]]


def default_at(model: type[BaseModel], path: str) -> Any:
    """The value a config has at `path` when nothing is given (PydanticUndefined if required).

    Nested defaults come from the parent's own default where it has one, so a factory's values count.

    >>> from labeler.stages.label import LabelConfig
    >>> default_at(LabelConfig, "pair_sampling.max_tokens"), default_at(LabelConfig, "policy.dtype")
    (160, 'auto')
    """
    current: type[BaseModel] = model
    instance: BaseModel | None = None
    value: Any = PydanticUndefined
    parts = path.split(".")
    for index, part in enumerate(parts):
        if instance is not None:
            value = getattr(instance, part)
            annotation = type(instance).model_fields[part].annotation
        else:
            info = current.model_fields[part]
            value, annotation = _field_default(info), info.annotation
        instance = value if isinstance(value, BaseModel) else None
        if instance is None and index < len(parts) - 1:
            current = _model_in(annotation, f"{model.__name__}.{path}")
    return value


def _field_default(info: FieldInfo) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return PydanticUndefined


def _model_in(annotation: Any, where: str) -> type[BaseModel]:
    """The model class inside an annotation such as `EngineConfig | None`."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise TypeError(f"{where}: no nested config model in {annotation!r}")


def cli_type(annotation: Any) -> Any:
    """The type typer parses for a field annotation: optional parts dropped, tuples as repeated options.

    >>> cli_type(int | None), cli_type(tuple[str, ...])
    (<class 'int'>, list[str])
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return cli_type(members[0])
    if origin is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(set(args)) == 1:
            return list[args[0]]  # type: ignore[valid-type]
    return annotation


def _nested_set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


@dataclass(frozen=True)
class ConfigCommand:
    """A command whose options are fields of one config model, and the function that runs it."""

    name: str
    model: type[BaseModel]
    opts: Sequence[Opt]
    run: Callable[[Any], None]
    help: str | None = None  # default: the run function's docstring
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # adjusts the data before validation
    fixed: Mapping[str, Any] = field(default_factory=dict)  # values the command sets itself

    def build(self, given: Mapping[str, Any]) -> BaseModel:
        """The config from the values given on the command line (option name -> value)."""
        by_name = {opt.name: opt for opt in self.opts}
        data: dict[str, Any] = {}
        for path, value in self.fixed.items():
            _nested_set(data, path, value)
        for name, value in given.items():
            opt = by_name[name]
            if opt.renamed_from and name.endswith("__renamed"):
                continue
            if opt.merge_file:
                continue
            check_given(opt, value, path_option=self._takes_paths(opt), bounded=self._bounded(opt))
            if opt.parse is not None:
                try:
                    value = opt.parse(value)
                except ValueError as exc:
                    raise InputError(with_value(str(exc), value), where=opt.cli_flag) from None
            elif isinstance(value, list):
                value = tuple(value)
            _nested_set(data, opt.path, value)
        files: list[FileSection] = []
        for opt in self.opts:
            if opt.merge_file and opt.name in given:
                from labeler.core.config_files import read_yaml_document

                file = Path(given[opt.name])
                document = read_yaml_document(file, what=f"a {opt.cli_flag} file", where=opt.cli_flag)
                assert isinstance(document.data, dict)
                section = data.setdefault(opt.path, {})
                data[opt.path] = {**document.data, **section}  # options given on the command line win
                keys = frozenset(str(key) for key in document.data) - frozenset(section)
                files.append(FileSection(opt, file, keys, document.lines))
        if self.prepare is not None:
            data = self.prepare(data)
        config = validate(self.model, over_defaults(self.model, data), self.opts, files)
        check_key_variables(config, files)
        return config

    def register(self, app: typer.Typer) -> None:
        """Add the command to `app`, its signature built from the config fields."""
        command = self

        def invoke(ctx: typer.Context, **values: Any) -> None:
            def given_here(name: str) -> bool:
                # By name: typer may carry its own copy of click, with its own ParameterSource enum.
                source = ctx.get_parameter_source(name)
                return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")

            for name in values:
                if name.endswith("__renamed") and given_here(name):
                    opt = next(o for o in command.opts if o.name == name.removesuffix("__renamed"))
                    old = next(f for f in opt.renamed_from)
                    raise InputError(f"{old} was renamed {opt.cli_flag}", where=old)
            given = {
                name: value for name, value in values.items() if not name.endswith("__renamed") and given_here(name)
            }
            try:
                command.run(command.build(given))
            except InputError as exc:
                raise command.named(exc) from None

        parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        for opt in self.opts:
            parameters += self._parameters(opt)
        invoke.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        invoke.__annotations__ = {p.name: p.annotation for p in parameters}
        invoke.__doc__ = self.help or self.run.__doc__
        app.command(self.name, cls=Command)(invoke)

    def flag_of(self, field_path: str) -> str | None:
        return flag_of(self.opts, field_path)

    def named(self, error: InputError) -> InputError:
        """`error` with the config field it names shown as its option."""
        return named(error, self.flag_of)

    def _bounded(self, opt: Opt) -> bool:
        """Whether the option's field has an upper bound of its own (its message names that bound)."""
        if opt.merge_file:
            return False
        return any(hasattr(m, "le") or hasattr(m, "lt") for m in field_at(self.model, opt.path).metadata)

    def _takes_paths(self, opt: Opt) -> bool:
        """Whether the option's field holds a path or paths (typer hands them over as text: see `check_given`)."""
        if opt.merge_file:
            return False
        return cli_type(field_at(self.model, opt.path).annotation) in (Path, list[Path])

    def _in_section_left_out(self, opt: Opt) -> bool:
        """Whether the option's field is inside a section whose default is None (`policy` of label)."""
        parts = opt.path.split(".")
        return any(default_at(self.model, ".".join(parts[:n])) is None for n in range(1, len(parts)))

    def _parameters(self, opt: Opt) -> list[inspect.Parameter]:
        info = None if opt.merge_file else field_at(self.model, opt.path)
        if opt.merge_file:
            sub = _model_in(self.model.model_fields[opt.path].annotation, opt.path)
            help_text = f"YAML file of {sub.__name__} settings ({', '.join(sub.model_fields)}); options given win."
            kind: Any = Path
            default: Any = None
        else:
            assert info is not None
            help_text = (info.description or "") + (f" {opt.extra_help}" if opt.extra_help else "")
            help_text = show_fields(help_text, self.flag_of)
            kind = opt.cli_type or cli_type(info.annotation)
            if self._takes_paths(opt) and opt.cli_type is None:
                # As text: typer's Path turns '' into '.' (the current folder) before any check could see it.
                kind = str if kind is Path else list[str]
            default = default_at(self.model, opt.path)
            if self._in_section_left_out(opt):
                default = None  # e.g. --policy-model: without it there is no policy section (its help says why)
            elif default is PydanticUndefined:
                default = ... if opt.path not in self.fixed else None
            elif isinstance(default, tuple):
                default = list(default) or None
            elif isinstance(default, BaseModel):
                default = None
            if opt.parse is not None and default not in (None, ...):
                default = None  # shown through the help text; the field's own default applies
        flag = opt.cli_flag
        metavar = opt.metavar or ("PATH" if self._takes_paths(opt) and not opt.argument else None)
        if opt.merge_file and metavar is None:
            metavar = "FILE"
        if kind is bool and not opt.argument:
            flag = f"{flag}/--no-{flag.removeprefix('--')}"
        annotation = kind | None if default is None else kind
        if opt.argument:
            info_object: Any = typer.Argument(help=help_text, metavar=metavar, show_default=default is not None)
        else:
            info_object = typer.Option(
                flag, help=help_text, metavar=metavar, rich_help_panel=opt.panel, show_default=default is not None
            )
        parameters = [
            inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                              annotation=Annotated[annotation, info_object])
        ]
        for old in opt.renamed_from:
            parameters.append(
                inspect.Parameter(
                    opt.name + "__renamed", inspect.Parameter.KEYWORD_ONLY, default=None,
                    annotation=Annotated[str | None, typer.Option(old, hidden=True)],
                )
            )
        return parameters


def over_defaults(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` laid over the defaults of nested sections: a section given in part keeps the other values of
    its field's own default (a factory's `top_p=0.95` stays when only `max_tokens` is given).

    >>> from labeler.stages.revise import ReviseConfig
    >>> over_defaults(ReviseConfig, {"sampling": {"max_tokens": 16}})["sampling"]["top_p"]
    0.95
    """
    merged = dict(data)
    for name, value in data.items():
        info = model.model_fields.get(name)
        if info is None or not isinstance(value, Mapping):
            continue
        default = _field_default(info)
        sub = _model_in(info.annotation, f"{model.__name__}.{name}") if _has_model(info.annotation) else None
        if sub is None:
            continue
        base = default.model_dump() if isinstance(default, BaseModel) else {}
        merged[name] = {**base, **over_defaults(sub, value)}
    return merged


def _has_model(annotation: Any) -> bool:
    return any(
        isinstance(a, type) and issubclass(a, BaseModel) for a in (annotation, *typing.get_args(annotation))
    )


@dataclass(frozen=True)
class FileSection:
    """The values a `merge_file` option's file gave (those no option on the command line overrode)."""

    opt: Opt
    file: Path
    keys: frozenset[str]
    lines: Mapping[tuple[str | int, ...], int]


def validate(
    model: type[BaseModel], data: Mapping[str, Any], opts: Sequence[Opt] = (), files: Sequence[FileSection] = ()
) -> BaseModel:
    """`model` validated from `data`; every problem an `InputError` naming the option (or the file and key)
    and the value."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputErrors([_problem(error, opts, files) for error in exc.errors()]) from None
    except InputErrors:
        raise
    except InputError as exc:  # a validator that names the option itself (engine server settings)
        raise _from_file(exc, opts, files) from None


def _from_file(error: InputError, opts: Sequence[Opt], files: Sequence[FileSection]) -> InputError:
    """A validator's `InputError` naming an option, moved onto the file and key when the file gave that value."""
    for section in files:
        prefix = section.opt.path + "."
        for opt in opts:
            key = opt.path.removeprefix(prefix)
            if key == error.field and opt.path.startswith(prefix) and key in section.keys:
                return InputError(error.message, file=section.file, line=section.lines.get((key,)),
                                  where=f"{section.opt.cli_flag}, key {key}")
    return error


def check_key_variables(config: BaseModel, files: Sequence[FileSection]) -> None:
    """The API key's variable of each openai engine whose `api_key_env` a file gave, checked now: when it is
    unset, the `InputError` names that file and key. The engine checks it again as it opens, but there it
    knows only the option, `--api-key-env`, which the user never typed."""
    from labeler.engine import EngineConfig, api_key_from_env

    for section in files:
        if "api_key_env" not in section.keys:
            continue
        engine = functools.reduce(getattr, section.opt.path.split("."), config)
        if not isinstance(engine, EngineConfig) or engine.name != "openai":
            continue
        try:
            api_key_from_env(engine)
        except InputError as exc:
            raise InputError(exc.message, file=section.file, line=section.lines.get(("api_key_env",)),
                             where=f"{section.opt.cli_flag}, key api_key_env") from None


def _problem(error: Mapping[str, Any], opts: Sequence[Opt], files: Sequence[FileSection] = ()) -> InputError:
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(part) for part in error["loc"])
    if not loc:
        return InputError(message)
    for section in files:  # a value the file gave is the file's, not that of an option never typed
        parts = tuple(str(part) for part in error["loc"])
        head = tuple(section.opt.path.split("."))
        if parts[: len(head)] == head and len(parts) > len(head) and parts[len(head)] in section.keys:
            inner = parts[len(head) :]
            return InputError(with_value(message, error.get("input")), file=section.file,
                              line=section.lines.get(inner[:1]), where=f"{section.opt.cli_flag}, key {'.'.join(inner)}")
    matching = [opt for opt in opts if loc == opt.path or loc.startswith(opt.path + ".")]
    where: str | None
    if not matching:
        # a section the command line gives only as options (`work`) is no name to the user: its check's
        # message names the options
        where = None if any(opt.path.startswith(loc + ".") for opt in opts) else loc
    else:
        opt = max(matching, key=lambda o: len(o.path))
        rest = loc[len(opt.path) + 1 :]
        where = f"{opt.cli_flag}, key {rest}" if opt.merge_file and rest else opt.cli_flag
    value = error.get("input")
    # A check of a whole section (its input the section's dict) names its values in the message itself.
    return InputError(message if isinstance(value, Mapping) else with_value(message, value), where=where)


def flag_of(opts: Sequence[Opt], field_path: str) -> str | None:
    """The option of a config field: the option bound to that path, else (a field of a nested config a
    library function was given on its own, such as an engine's) the first option whose path ends in it.

    >>> flag_of([Opt("work.shard_index")], "shard_index")
    '--shard-index'
    """
    opts = [opt for opt in opts if not opt.merge_file]
    exact = next((opt for opt in opts if opt.path == field_path), None)
    inner = next((opt for opt in opts if opt.path.endswith("." + field_path)), None)
    found = exact or inner
    return found.cli_flag if found is not None else None


def named(error: InputError, flag_of: Callable[[str], str | None]) -> InputError:
    """`error` (each of `InputErrors`) with its config field, and each field its message names, shown as
    the option `flag_of` gives for it.

    >>> named(InputError("no prompts", field="prompts"), {"prompts": "--prompts"}.get).render()
    '--prompts: no prompts'
    """
    return error.shown(flag_of)


def check_given(opt: Opt, value: Any, *, path_option: bool, bounded: bool = False) -> None:
    """`InputError` naming the option for a value no field can take:

    - an integer past 2**63 - 1 (counts, limits and seeds go to C integers: islice, numpy, torch), unless
      the field is `bounded` by its own limit, which its message names;
    - an empty path, which would mean the current folder (as text: typer's Path would make it '.').

    >>> check_given(Opt("limit"), 2**70, path_option=False)
    Traceback (most recent call last):
    ...
    labeler.core.errors.InputError: --limit: is larger than any number labeler takes: at most 2**63 - 1 (got 1180...)
    >>> check_given(Opt("out"), "", path_option=True)
    Traceback (most recent call last):
    ...
    labeler.core.errors.InputError: --out: is an empty path; give a file or folder name
    """
    values = value if isinstance(value, list | tuple) else [value]
    for item in values:
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_INTEGER and not bounded:
            raise InputError(f"is larger than any number labeler takes: at most 2**63 - 1 (got {item})",
                             where=opt.cli_flag)  # fmt: skip
        if path_option and isinstance(item, str) and not item.strip():
            raise InputError("is an empty path; give a file or folder name", where=opt.cli_flag)


def output_file(text: str) -> Path:
    """The path of a file an option writes: a name ending in '/' means a folder, where a file is written.

    >>> output_file("answers.jsonl")
    PosixPath('answers.jsonl')
    >>> output_file("answers.jsonl/")
    Traceback (most recent call last):
    ...
    ValueError: 'answers.jsonl/' names a folder; give the name of the file to write
    """
    if text.endswith(("/", "/.", "/..")) or text in (".", ".."):
        raise ValueError(f"{text!r} names a folder; give the name of the file to write")
    return Path(text)


def with_value(message: str, value: Any) -> str:
    """`message` followed by the value given, unless the message already quotes it.

    >>> with_value("must be at most 1", 1.5)
    'must be at most 1 (got 1.5)'
    >>> with_value("'lots' is not a size", "lots")
    "'lots' is not a size"
    """
    shown = repr(value)
    return message if shown in message else f"{message} (got {shown[:80]})"


# -- option groups several commands share ------------------------------------------------------------


def engine_options(prefix: str, *, model_flag: str = "--model") -> tuple[Opt, ...]:
    """The engine options of the engine config at `prefix` (e.g. "judge"), in the Engine help panel."""
    names = (
        "name", "model", "dtype", "max_model_len", "tensor_parallel_size", "data_parallel_size",
        "gpu_memory_utilization", "enforce_eager", "kv_block_size", "batch_size", "trust_remote_code",
        "base_urls", "api_key_env", *(("choice_method",) if prefix == "judge" else ()),
        "choice_logits", "deterministic",
    )
    # The engine's batch is not the work batch of --batch-size (records per engine call): a name of its own.
    flags = {"name": "--engine", "model": model_flag, "base_urls": "--base-url", "batch_size": "--engine-batch-size"}
    extra = {"base_urls": "Repeat it, or give a comma list.",
             "batch_size": "Not --batch-size, which is how many records go to the engine in one call."}
    metavars = {"base_urls": "URL", "api_key_env": "NAME"}
    opts = [
        Opt(f"{prefix}.{name}", flags.get(name), panel=ENGINE_PANEL, extra_help=extra.get(name, ""),
            metavar=metavars.get(name))
        for name in names
    ]
    return (*opts, Opt(prefix, "--engine-config", merge_file=True, panel=ENGINE_PANEL))


def work_options(prefix: str = "work") -> tuple[Opt, ...]:
    """Which rows a process takes and how it reports (`WorkSelection`)."""
    names = ("limit", "batch_size", "shard_index", "num_shards", "overwrite", "quiet", "ray")
    return tuple(
        Opt(f"{prefix}.{name}", panel=WORK_PANEL, metavar="ADDRESS" if name == "ray" else None) for name in names
    )


def parse_pair(text: str) -> tuple[float, float]:
    """"LOW,HIGH" as two numbers.

    >>> parse_pair("0.4,0.6")
    (0.4, 0.6)
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ValueError("expected LOW,HIGH such as 0.4,0.6") from None
    return low, high


def parse_list(text: str) -> str | tuple[str, ...]:
    """One name, or a comma-separated list of names.

    >>> parse_list("all-linear"), parse_list("q_proj,v_proj")
    ('all-linear', ('q_proj', 'v_proj'))
    """
    parts = tuple(p.strip() for p in str(text).split(",") if p.strip())
    return parts[0] if len(parts) == 1 else parts


def parse_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names (spaces around them ignored).

    >>> parse_names("low_mass, order_flip")
    ('low_mass', 'order_flip')
    """
    return tuple(p.strip() for p in str(text).split(",") if p.strip())
