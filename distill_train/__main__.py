"""`python -m distill_train` is `distill-train`."""
import sys

from distill_train.cli import main

sys.exit(main())
