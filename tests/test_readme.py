"""The README's first example runs as printed and shows a model that learned."""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_first_example_learns():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    with tempfile.TemporaryDirectory() as empty:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=empty, timeout=120)
    assert p.returncode == 0, p.stderr
    first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", p.stdout).groups())
    assert last < 0.05 * first, p.stdout
