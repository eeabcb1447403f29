"""Constitutions: principles for the revise, judge and salmon stages, read from labeler's own YAML/JSON
format or, unchanged, from the common published formats.

Typical use: `load_constitution("constitutions/harmless.yaml").for_stage("judge")` gives the principles
the judge stage asks about; `read_constitution` also says which format the file was in.
"""

from labeler.inputs.constitution.formats import FORMATS, FormatName, detect_format
from labeler.inputs.constitution.load import (
    MAX_BYTES,
    LoadedConstitution,
    dump_constitution,
    load_constitution,
    read_constitution,
)
from labeler.inputs.constitution.schema import STAGE_FIELDS, STAGES, Constitution, Principle, Stage

__all__ = [
    "FORMATS",
    "MAX_BYTES",
    "STAGES",
    "STAGE_FIELDS",
    "Constitution",
    "FormatName",
    "LoadedConstitution",
    "Principle",
    "Stage",
    "detect_format",
    "dump_constitution",
    "load_constitution",
    "read_constitution",
]
