"""Starting the review server: check the run, bind the port, print the address with its token, serve."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable

from labeler.core.errors import InputError
from labeler.engine.model_ref import resolve_model
from labeler.review.app import build_app, new_token
from labeler.review.config import ReviewConfig
from labeler.review.rewards import PairRewards, reward_model_scorer
from labeler.store.human import labels_file
from labeler.store.manifest import load_manifest


def check_review(config: ReviewConfig) -> None:
    """Refuse a folder that is not a run, or a run with nothing to review, before anything is started."""
    manifest = load_manifest(config.run, where="RUN")
    if not manifest.splits:
        raise InputError("the run has no split yet: nothing to review", file=config.run, where="RUN")
    labels_file(config.run, config.annotator)  # names the annotator field when the name is not allowed


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; `InputError` naming the port field when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {port} on {host} is in use by another program; choose another", field="port"
            ) from None
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}", field="host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(config: ReviewConfig, *, announce: Callable[[str], None] = print) -> None:
    """Serve the review app until interrupted; `announce` gets the address to open (with its token)."""
    import uvicorn

    check_review(config)
    folder = None
    if config.reward_model is not None:
        folder = resolve_model(config.reward_model, field="reward_model", kind="reward").folder()
    sock = bind(config.host, config.port)  # a taken port is refused before any model loads
    rewards = scorer = None
    if folder is not None and config.reward_model is not None:
        scorer = reward_model_scorer(folder)
        rewards = PairRewards(name=config.reward_model.name)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    names = {f"{shown}:{port}"} | ({f"localhost:{port}"} if host in ("127.0.0.1", "::1") else set())
    if host in ("0.0.0.0", "::"):  # every address of the machine: any Host header (the token still guards it)
        names = set()
    token = new_token()
    app = build_app(config.run, annotator=config.annotator, token=token, page_size=config.page_size,
                    allowed_hosts=names, rewards=rewards)  # fmt: skip
    if rewards is not None and scorer is not None:
        threading.Thread(target=rewards.score_run, args=(config.run, scorer), daemon=True).start()
    announce(f"labeler review: {config.run} as {config.annotator}; open\n    http://{shown}:{port}/?token={token}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[sock])
