"""python -m peftpipe.cli: what accelerate launch and the tests run."""

import sys

from peftpipe.cli import main

sys.exit(main())
