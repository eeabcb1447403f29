"""How much the engines' own libraries (vLLM, torch, transformers) say: by default only their errors, and
always on stderr, so that nothing they print lands between labeler's results on stdout.

They read these settings from the environment when they are first imported (vLLM also in its engine
processes, which inherit the environment), so `engine_logs` runs before any of them is: the CLI calls
it for every command (`--verbose` to hear them), and the engines call it with the default before they
import theirs. A setting the user put in the environment is left as it is.
"""

from __future__ import annotations

import logging
import os
import warnings

# name -> (quiet value, verbose value)
SETTINGS: dict[str, tuple[str, str]] = {
    "VLLM_LOGGING_LEVEL": ("ERROR", "INFO"),
    "VLLM_LOGGING_STREAM": ("ext://sys.stderr", "ext://sys.stderr"),  # vLLM logs to stdout otherwise
    "TRANSFORMERS_VERBOSITY": ("error", "info"),
    "TORCH_CPP_LOG_LEVEL": ("ERROR", "WARNING"),  # torch's C++ warnings, e.g. NUMA binding on CPU
    "PYTHONWARNINGS": ("ignore::FutureWarning,ignore::DeprecationWarning", "default"),  # in engine processes
}
_USER_SET = frozenset(name for name in SETTINGS if name in os.environ)  # as labeler found the environment
_LIBRARIES = r"(vllm|torch|transformers|accelerate|peft|triton)(\.|$)"


def engine_logs(verbose: bool | None = None) -> None:
    """Set how loud the engines' libraries are: `verbose` True (their info and warnings, on stderr), False
    (errors only), None (errors only unless a command already chose). Variables the user set are kept."""
    for name, (quiet, loud) in SETTINGS.items():
        if name in _USER_SET:
            continue
        if verbose is None:
            os.environ.setdefault(name, quiet)
        else:
            os.environ[name] = loud if verbose else quiet
    if not verbose:
        # The same, in this process: their deprecation notices are not the user's to act on, nor what
        # vLLM logs while it is imported (before it reads its own settings), nor the note multiprocessing
        # prints when the engine's processes it tracked were ended by `close`.
        warnings.filterwarnings("ignore", category=FutureWarning, module=_LIBRARIES)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=_LIBRARIES)
        warnings.filterwarnings("ignore", message="resource_tracker: process died unexpectedly")
        if "VLLM_LOGGING_LEVEL" not in _USER_SET:
            logging.getLogger("vllm").setLevel(logging.ERROR)
    elif "VLLM_LOGGING_LEVEL" not in _USER_SET:
        logging.getLogger("vllm").setLevel(logging.NOTSET)
