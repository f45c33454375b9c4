"""The README's "Python API" section runs as written: its code blocks, one after another in one fresh Python
process, in an empty folder (they write a PNG and a model store there)."""

import re
import subprocess
import sys

from conftest import REPO


def python_api_blocks():
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_python_api_section_runs(tmp_path):
    blocks = python_api_blocks()
    assert len(blocks) >= 3
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "china-k16.png").is_file()
    assert (tmp_path / "models" / "notebook" / "latest").is_file()
