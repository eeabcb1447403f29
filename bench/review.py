"""How fast `labeler review` answers on a big run: a run of 100,000 judged pairs, the real server.

The run is written with the store's writer (shards of 5,000 pairs, conversations of a few hundred
characters, two principles with SALMON scores, flags as a judge sets them). `labeler review RUN
--port 0` is started as a user starts it; the time until it prints its address includes reading every
shard once (verified) into the list's index. Then each page is asked `--rounds` times over HTTP on
127.0.0.1 with the token's cookie, and the median time to the whole answer counts:

- the list's first page, a filter by flag, a p_a range sorted by uncertainty, a far page (target for
  the list: under 1 s);
- a text search (its first answer reads the shards' text, later pages of the same search do not);
- a pair page.

    .venv/bin/python bench/review.py                     # 100,000 pairs
    .venv/bin/python bench/review.py --smoke             # 2,000 pairs, 2 rounds
    .venv/bin/python bench/review.py --pairs 2000 --screenshot docs/review-pair.png

`--screenshot` also saves the pair page of a multi-turn pair, as headless Chromium shows it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from labeler.core.chat import Message  # noqa: E402
from labeler.core.records import PreferenceRecord, PrincipleScore, conversation_columns, record_id  # noqa: E402
from labeler.store import RunStore, make_fingerprint  # noqa: E402

SHARD_ROWS = 5000
ADDRESS = re.compile(r"(http://127\.0\.0\.1:\d+/)\?token=(\S+)")
TOPICS = ("a leaking tap", "a noisy neighbour", "learning Rust", "a job interview", "sourdough bread",
          "a flat bicycle tyre", "tax forms", "a birthday speech")  # fmt: skip


def pair(i: int) -> PreferenceRecord:
    """Pair `i` of the bench run: numbers spread over [0, 1], a flag on some, multi-turn for a third."""
    topic = TOPICS[i % len(TOPICS)]
    p_ab = ((i * 7919) % 1000) / 1000
    p_ba = min(1.0, max(0.0, p_ab + (((i * 104729) % 300) - 150) / 1000))
    p_a = (p_ab + p_ba) / 2
    mass_ab, mass_ba = (0.3, 0.9) if i % 17 == 0 else (0.95, 0.93)
    consistent = (p_ab > 0.5) == (p_ba > 0.5) and 0.5 not in (p_ab, p_ba)
    flags = [f for f, on in (("low_mass", min(mass_ab, mass_ba) < 0.5), ("order_flip", not consistent),
                             ("tie", p_a == 0.5)) if on]  # fmt: skip
    question = f"Request {i}: what should I do about {topic}? Please be specific and practical."
    turns = [Message(role="user", content=question)]
    if i % 3 == 0:
        turns = [Message(role="system", content="You are a helpful, honest assistant."),
                 Message(role="user", content=f"I keep thinking about {topic}."),
                 Message(role="assistant", content="Tell me more: what worries you most?"), *turns]  # fmt: skip
    a = (f"Here is a plan for {topic}. First, look at what is actually going wrong and write it down. Second, "
         f"try the simplest fix and check whether it worked. Third, ask someone who has done it before. ({i})")
    b = f"Honestly, {topic} is not worth worrying about. It usually sorts itself out. ({i})"
    chosen, rejected = (a, b) if p_a >= 0.5 else (b, a)
    log = lambda p: math.log(max(p, 1e-9))  # noqa: E731
    return PreferenceRecord(
        id=record_id(str(i), a, b), **conversation_columns(turns, chosen, rejected), response_a=a, response_b=b,
        p_a=p_a, p_a_ab=p_ab, p_a_ba=p_ba, mass_ab=mass_ab, mass_ba=mass_ba,
        logprobs_ab=(log(mass_ab * p_ab), log(mass_ab * (1 - p_ab))),
        logprobs_ba=(log(mass_ba * p_ba), log(mass_ba * (1 - p_ba))), consistent=consistent,
        principle_ids=("helpful", "honest"),
        principle_scores=(PrincipleScore(principle_id="helpful", score=(p_ab - 0.5) * 4),
                          PrincipleScore(principle_id="honest", score=(p_ba - 0.45) * 3)),
        margin=abs(p_a - 0.5) * 2, judge_model="judge", source="pairs_file:pairs.jsonl", flags=tuple(flags),
    )  # fmt: skip


def make_run(folder: Path, pairs: int) -> Path:
    run = folder / "bench-run"
    fingerprint = make_fingerprint(config={"stage": "label"}, models={"judge": "judge"}, constitution_sha256="c" * 64,
                                   template_sha256s={}, seed=0)  # fmt: skip
    store = RunStore.open(run, "preferences", fingerprint)
    for start in range(0, pairs, SHARD_ROWS):
        store.write_shard([pair(i) for i in range(start, min(pairs, start + SHARD_ROWS))])
    store.mark_complete({"rows": pairs})
    return run


def start_server(run: Path) -> tuple[subprocess.Popen[str], str, str, float]:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "labeler", "review", str(run), "--port", "0"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        match = ADDRESS.search(line)
        if match:
            return process, match.group(1), match.group(2), time.perf_counter() - started
    process.wait()
    raise SystemExit("labeler review printed no address")


def timed(client: httpx.Client, path: str, rounds: int) -> float:
    """Median seconds to the whole answer of `path` (each answer checked: 200)."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - started)
        answer.raise_for_status()
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def screenshot(base: str, token: str, pair_id: str, path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1180"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{base}?token={token}")
        driver.get(f"{base}pair/{pair_id}")
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="2,000 pairs, 2 rounds")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    parser.add_argument("--screenshot", type=Path, help="save the pair page of pair 3 as a PNG here")
    args = parser.parse_args()
    pairs, rounds = (2000, 2) if args.smoke else (args.pairs, args.rounds)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run = make_run(Path(folder), pairs)
        write_s = time.perf_counter() - started
        process, base, token, start_s = start_server(run)
        try:
            with httpx.Client(base_url=base, cookies={"labeler_review_token": token}, timeout=120) as client:
                far = max(1, pairs // 50 - 1)
                figures = {
                    "pairs": pairs, "cpu": cpu_name(), "write_run_s": round(write_s, 2),
                    "start_s": round(start_s, 2),
                    "list_s": timed(client, "/", rounds),
                    "list_flag_s": timed(client, "/?flag=order_flip", rounds),
                    "list_p_range_uncertain_s": timed(client, "/?p_min=0.4&p_max=0.6&sort=uncertain", rounds),
                    "list_far_page_s": timed(client, f"/?page={far}&sort=-p_a", rounds),
                    "search_first_s": timed(client, "/?q=sourdough", 1),
                    "search_next_page_s": timed(client, "/?q=sourdough&page=2", rounds),
                    "pair_s": timed(client, f"/pair/{pair(pairs // 2).id}", rounds),
                }  # fmt: skip
            if args.screenshot is not None:
                screenshot(base, token, pair(3).id, args.screenshot)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"labeler review on a run of {pairs:,} pairs ({figures['cpu']}; median of {rounds} answers):")
    print(f"  server start (reads and verifies every shard)   {figures['start_s']:.2f} s")
    for key, label in (("list_s", "list, first page"), ("list_flag_s", "list filtered by a flag"),
                       ("list_p_range_uncertain_s", "list, p_a in [0.4, 0.6], most uncertain first"),
                       ("list_far_page_s", "list, a far page sorted by p_a"),
                       ("search_first_s", "text search, first answer"),
                       ("search_next_page_s", "text search, next page"), ("pair_s", "pair page")):  # fmt: skip
        print(f"  {label:<48} {figures[key] * 1000:8.1f} ms")
    slowest = max(figures[key] for key in ("list_s", "list_flag_s", "list_p_range_uncertain_s", "list_far_page_s"))
    print(f"  slowest list answer {slowest * 1000:.1f} ms: {'within' if slowest < 1 else 'OVER'} the 1 s target")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
