"""`python -m vee_jax.data check PATH --format json|conll|msra`: see vee_jax/data/check.py."""

import sys

from .check import main

sys.exit(main())
