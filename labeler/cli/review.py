"""`labeler review`: browse a run in a local web page and add human labels."""

from __future__ import annotations

from labeler.cli.options import ConfigCommand, Opt
from labeler.review.config import ReviewConfig


def run_review(config: ReviewConfig) -> None:
    """Serve a local web page (127.0.0.1, a random token in the printed address) to browse a run's pairs and
    SFT rows, filter and sort them, and label pairs with the keyboard (a, b, t, s); labels go to
    RUN/human/ANNOTATOR.jsonl. Ctrl-C stops it."""
    from labeler.review.serve import serve

    serve(config, announce=lambda text: print(text, flush=True))


COMMANDS = (
    ConfigCommand(
        "review",
        ReviewConfig,
        (
            Opt("run", argument=True, metavar="RUN"),
            Opt("port"),
            Opt("host"),
            Opt("annotator", metavar="NAME"),
            Opt("reward_model", metavar="DIR"),
            Opt("page_size", metavar="N"),
        ),
        run_review,
    ),
)
