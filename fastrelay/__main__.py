"""`python -m fastrelay`: the same as the fastrelay command."""

import sys

from .cli import main

sys.exit(main())
