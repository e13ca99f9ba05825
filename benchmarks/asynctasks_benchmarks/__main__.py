"""``python -m asynctasks_benchmarks``: see :mod:`.runner`."""

from asynctasks_benchmarks.runner import main
import sys


sys.exit(main())
