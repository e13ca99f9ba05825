"""``python -m ploneintranet.asynctasks.benchmarks``: see :mod:`.runner`."""

from ploneintranet.asynctasks.benchmarks.runner import main
import sys


sys.exit(main())
