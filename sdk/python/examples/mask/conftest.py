# The SDK from this repository (a project made by `host plugins new` has
# its own copy beside plugin.py instead).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
