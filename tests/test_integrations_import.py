"""samscale.integrations works on the core install: importing it does not import transformers, and asking for
SAMTrainer without transformers names the extra to install."""
from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_importing_the_package_does_not_import_transformers():
    assert run("import sys, samscale.integrations; print('transformers' in sys.modules)") == "False"


def test_without_transformers_samscale_trainer_names_the_extra():
    code = (
        "import sys; sys.modules['transformers'] = None\n"  # as if it were not installed
        "import samscale.integrations as i\n"
        "try:\n    i.SAMTrainer\nexcept ImportError as e:\n    print(e)\n"
    )
    assert "pip install 'samscale[transformers]'" in run(code)
