"""Fill a config template's placeholders (a variable name between at signs) from the
environment, then exec a program.

    python3 render_and_exec.py TEMPLATE OUTPUT PROGRAM [ARG...]

For deploy/compose/host-network.yml: nginx and Prometheus configurations take no environment
variables, and on host networking their targets are ports on 127.0.0.1 that the compose file
sets. Standard library only (it runs in the Debian-package images, whose base has Python).
"""

import os
import re
import sys


def main(argv: list[str]) -> None:
    template, output, *program = argv
    with open(template) as source:
        text = source.read()
    filled = re.sub(r"@([A-Z0-9_]+)@", lambda match: os.environ[match.group(1)], text)
    with open(output, "w") as out:
        out.write(filled)
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
