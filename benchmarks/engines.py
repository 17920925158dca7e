"""Speed of every engine against this machine's BLAS limit: the same as ``nnscratch bench``.

    python benchmarks/engines.py --json docs/benchmark.json --plot docs/benchmark.png --jit

See ``src/nnscratch/run/benchmark.py`` for what is measured and how, and the README's Performance section
for the figures of a run.
"""

import sys

from nnscratch.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
