"""`python -m loadtests run|report ...` — see loadtests/runner/ and loadtests/README.md."""

import sys

from loadtests.runner import main

if __name__ == "__main__":
    sys.exit(main())
