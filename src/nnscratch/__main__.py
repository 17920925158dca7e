"""``python -m nnscratch``: the command line (:func:`nnscratch.cli.main`).

Ctrl-C or SIGTERM while the command line is still being imported is one line and exit 130 or
143, as later (:func:`nnscratch.cli.main.main` installs its own handling as it starts)."""

import signal
import sys

from nnscratch.errors import STOPPED, Terminated


def _on_sigterm(signum, frame):
    raise Terminated()


signal.signal(signal.SIGTERM, _on_sigterm)
try:
    from nnscratch.cli.main import main
except (KeyboardInterrupt, Terminated) as exc:
    word, code = STOPPED[KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else Terminated]
    print(f"nnscratch: {word}", file=sys.stderr)
    raise SystemExit(code) from None

raise SystemExit(main())
