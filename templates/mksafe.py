"""Build step: pack one template directory into a .safe archive (same code as `hakit module package`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from hakit.config.safe_archive import pack

pack(Path(sys.argv[2]), Path(sys.argv[1]))
