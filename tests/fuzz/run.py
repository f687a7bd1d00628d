"""Run the fuzzers for a bounded time (`make fuzz`; tests/test_fuzz.py for a short run).

    python -m tests.fuzz.run [--seconds N] [NAME ...]

Each fuzzer first replays its regression inputs (inputs that once failed, checked in
beside the target), then fuzzes for N seconds from its seeds and the corpus it grew on
earlier runs (build/fuzz/corpus/NAME).  A failing input is left in
build/fuzz/crashes/NAME/ and named; the exit status is then 1.  The full output of each
run is in build/fuzz/logs/NAME.log.  rfs_receiver needs root and `make fuzz-build`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "build" / "fuzz"
# One input slower than this is a hang.
TIMEOUT_S = 10


@dataclass(frozen=True)
class Fuzzer:
    name: str
    command: tuple[str, ...]
    regress: Path             # inputs that once failed, replayed first
    options: tuple[str, ...] = ()

    @property
    def seeds(self) -> Path:
        return FUZZ / "seeds" / self.name

    @property
    def corpus(self) -> Path:
        return FUZZ / "corpus" / self.name

    @property
    def crashes(self) -> Path:
        return FUZZ / "crashes" / self.name

    @property
    def log(self) -> Path:
        return FUZZ / "logs" / f"{self.name}.log"


FUZZERS = {
    f.name: f
    for f in (
        # -close_fd_mask=2: the receiver logs every refused frame; libFuzzer keeps its
        # own stderr, and the sanitizers' reports, on a copy.  -detect_leaks=0: a
        # connection's buffers are freed when the receiver reaps it, after the input,
        # so libFuzzer would take every input for a leak and run it twice to check; a
        # leak still fails the run at its end, when the receiver stops.
        Fuzzer("rfs_receiver", (str(FUZZ / "fuzz_receiver"),), REPO / "native/rfs/fuzz/regress",
               ("-max_len=65536", "-close_fd_mask=2", "-detect_leaks=0")),
        Fuzzer("config", (sys.executable, "-m", "tests.fuzz.fuzz_config"), REPO / "tests/fuzz/regress/config",
               (f"-dict={FUZZ / 'seeds' / 'config.dict'}",)),
        Fuzzer("wire", (sys.executable, "-m", "tests.fuzz.fuzz_wire"), REPO / "tests/fuzz/regress/wire"),
    )
}


@dataclass
class Outcome:
    fuzzer: Fuzzer
    ok: bool
    runs: int
    seconds: int
    reproducer: Path | None

    def __str__(self) -> str:
        if self.ok:
            return f"{self.fuzzer.name}: {self.runs} runs in {self.seconds} s, no failure"
        found = self.reproducer or "none written (see the log)"
        return f"{self.fuzzer.name}: FAILED; reproducer: {found}; log: {self.fuzzer.log}"


def _seeds(f: Fuzzer) -> None:
    """The Python targets write their own seeds (again each time: the files they come
    from change); rfs_receiver's come from make."""
    if f.command[0] == sys.executable:
        subprocess.run([*f.command, "--seeds", str(f.seeds)], cwd=REPO, check=True)


def _run(f: Fuzzer, args: list[str], limit_s: float, mode: str) -> Outcome:
    f.crashes.mkdir(parents=True, exist_ok=True)
    f.log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*f.command, *f.options, f"-timeout={TIMEOUT_S}", f"-artifact_prefix={f.crashes}/", *args]
    with f.log.open(mode) as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        try:
            done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=limit_s)
            code = done.returncode
        except subprocess.TimeoutExpired:
            log.write(f"\nstopped after {limit_s:.0f} s\n")
            code = -1
    text = f.log.read_text(errors="replace")
    written = re.findall(r"Test unit written to (\S+)", text)
    runs = re.findall(r"Done (\d+) runs in (\d+) second", text)
    last = runs[-1] if runs else ("0", "0")
    return Outcome(f, code == 0 and not written, int(last[0]), int(last[1]),
                   Path(written[-1]) if written else None)


def run(f: Fuzzer, seconds: int) -> Outcome:
    """Replay f's regressions, then fuzz it for seconds."""
    _seeds(f)
    f.corpus.mkdir(parents=True, exist_ok=True)
    regress = sorted(p for p in f.regress.glob("*") if p.is_file()) if f.regress.is_dir() else []
    if regress:
        replayed = _run(f, [str(p) for p in regress], 60 + 5 * len(regress), "w")
        if not replayed.ok:
            return replayed
    # Loading a large corpus counts in max_total_time; the margin is for the rest.
    return _run(f, [f"-max_total_time={seconds}", str(f.corpus), str(f.seeds)], seconds + 120,
                "a" if regress else "w")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=600, help="fuzzing time per fuzzer")
    parser.add_argument("names", nargs="*", help=f"fuzzers (default all): {', '.join(FUZZERS)}")
    opts = parser.parse_args()
    unknown = sorted(set(opts.names) - FUZZERS.keys())
    if unknown:
        parser.error(f"no fuzzer {', '.join(unknown)}")
    failed = 0
    for name in opts.names or FUZZERS:
        outcome = run(FUZZERS[name], opts.seconds)
        print(outcome, flush=True)
        failed += not outcome.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
