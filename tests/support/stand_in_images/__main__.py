"""`python -m tests.support.stand_in_images [--list] [NAME ...]`: make the base images the
project names present in podman's store (there, pulled, or built as stand-ins)."""

from __future__ import annotations

import sys
import time

from tests.support.stand_in_images import STAND_INS, ensure, project_base_images


def main(argv: list[str]) -> int:
    if argv[:1] == ["--list"]:
        for name in project_base_images():
            print(f"{name}: {STAND_INS[name].differs}")
        return 0
    began = time.monotonic()
    for name, outcome in ensure(argv or None).items():
        print(f"{name}: {outcome}")
    print(f"{time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
