"""atheris target: the configuration reader (xmltree, reader, loader and the models'
checks) on arbitrary bytes as a userconfig.xml or cluster.xml.

Whatever the file holds, read_file() returns problems and never raises, and the
load_* entry points raise ConfigInvalid and nothing else: any other exception, a hang
(-timeout) or a crash is a finding.

    python -m tests.fuzz.fuzz_config --seeds DIR    # write the seed corpus
    python -m tests.fuzz.fuzz_config [libFuzzer options] CORPUS...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The configurations shipped and tested: every element and attribute appears in one.
SEED_FILES = sorted(REPO.glob("tests/data/config/**/*.xml")) + sorted(REPO.glob("templates/*/conf/*.xml"))
CLUSTER = REPO / "tests/data/config/seeds/15.2.1-cluster-three-nodes.xml"


def write_seeds(out: Path) -> None:
    """The seeds into out, and beside it out.dict: every tag and attribute name of the
    schema, which byte mutations alone would take long to spell."""
    from hakit.config.loader import ROOTS
    from hakit.config.schema import attrs_of, children_of

    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(SEED_FILES):
        (out / f"{i:03d}-{path.parent.parent.name}-{path.name}").write_bytes(path.read_bytes())
    words, todo, seen = set(), list(ROOTS.values()), set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        words.update({f"<{cls.TAG}", f"</{cls.TAG}>"} | {f' {a}="' for a in attrs_of(cls)})
        todo.extend(spec.cls for _f, spec in children_of(cls).values())
    quoted = ('"' + w.replace('"', '\\"') + '"\n' for w in sorted(words))
    out.with_suffix(".dict").write_text("".join(quoted))


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["hakit"]):
        from hakit.config.cluster_model import Cluster
        from hakit.config.loader import ConfigInvalid, load_cluster, load_module, read_file
        from hakit.config.reader import Problem

    cluster = load_cluster(CLUSTER)
    # The reader takes a path (it refuses what is not a regular file): one per process.
    work = REPO / "build" / "fuzz" / "work"
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"config-{os.getpid()}.xml"

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        loaded = read_file(path)
        for p in loaded.problems:
            assert isinstance(p, Problem) and str(p), p
        try:
            if isinstance(loaded.model, Cluster):
                load_cluster(path)
            else:
                load_module(path, cluster)
        except ConfigInvalid as exc:
            assert exc.problems, "ConfigInvalid without a problem"

    atheris.Setup(sys.argv, one_input)
    try:
        atheris.Fuzz()
    finally:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seeds"]:
        write_seeds(Path(sys.argv[2]))
    else:
        main()
