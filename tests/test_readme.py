"""The README's Python examples run as written (one shared namespace, in order)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own documentation
    result = namespace["result"]
    assert result.eigenvalues.shape == (5,) and bool((result.eigenvalues[:-1] >= result.eigenvalues[1:]).all())
